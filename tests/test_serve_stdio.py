"""`mcp-gateway serve` started by an MCP client over stdio, as a client configuration does:
`{"mcpServers": {"gwfast": {"command": "mcp-gateway", "args": ["serve"]}}}`.

The official SDK's stdio client drives the admin tools; the backend it registers is a real
local MCP server (2 replicas) reached through the data plane that `serve` started.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from control_stack import backend_command
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from serving import MCP_GATEWAY, http_status

from gwfast._testbase.procs import free_ports


def _data(result) -> object:
    assert not result.is_error, result
    if result.structured_content is not None:
        sc = result.structured_content
        return sc.get("result", sc) if isinstance(sc, dict) else sc
    return json.loads(result.content[0].text)


async def test_serve_over_stdio(tmp_path: Path) -> None:
    port, control_port, admin_port = free_ports(3)
    params = StdioServerParameters(
        command=MCP_GATEWAY,
        args=[
            "serve",
            "--data-dir",
            str(tmp_path / "data"),
            "--listen",
            f"127.0.0.1:{port}",
            "--control-listen",
            f"127.0.0.1:{control_port}",
            "--admin-listen",
            f"127.0.0.1:{admin_port}",
        ],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    gateway = f"http://127.0.0.1:{port}/tools/mcp"
    with (tmp_path / "serve.stderr").open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog), mode="legacy") as admin:
            names = {t.name for t in (await admin.list_tools()).tools}
            assert {
                "list_backends",
                "register_backend",
                "backend_status",
                "backend_logs",
                "unregister_backend",
                "tenant_quota",
            } <= names

            reg = await admin.call_tool(
                "register_backend",
                {"name": "tools", "command": backend_command(), "replicas": 2},
            )
            assert _data(reg)["name"] == "tools"
            listed = _data(await admin.call_tool("list_backends", {}))
            assert [b["name"] for b in listed] == ["tools"]

            deadline = time.monotonic() + 30
            while True:
                st = _data(await admin.call_tool("backend_status", {"name": "tools"}))
                if st["ready_replicas"] == 2 and all(r["healthy"] for r in st["replica_status"]):
                    break
                assert time.monotonic() < deadline, st
                await asyncio.sleep(0.2)

            # a session through the data plane reaches a replica, and stays on it
            deadline = time.monotonic() + 10
            while (await asyncio.to_thread(http_status, gateway))[0] == 404:
                assert time.monotonic() < deadline  # the snapshot has not reached the worker
                await asyncio.sleep(0.05)
            async with Client(gateway, mode="legacy") as c:
                first = (await c.call_tool("whoami", {})).content[0].text
                for _ in range(5):
                    assert (await c.call_tool("whoami", {})).content[0].text == first

            q = _data(
                await admin.call_tool(
                    "tenant_quota", {"tenant_id": "engineering", "requests": 1000, "period": "1h"}
                )
            )
            assert q["quota"]["requests"] == 1000 and q["quota"]["period"] == 3600
            q = _data(await admin.call_tool("tenant_quota", {"tenant_id": "engineering"}))
            assert q["quota"]["requests"] == 1000 and q["quota"]["period"] == 3600

            bad = await admin.call_tool("register_backend", {"name": "Bad_Name", "url": "http://x"})
            assert bad.is_error

            gone = _data(await admin.call_tool("unregister_backend", {"name": "tools"}))
            assert gone["unregistered"] is True
            deadline = time.monotonic() + 5
            while (status := (await asyncio.to_thread(http_status, gateway))[0]) != 404:
                assert time.monotonic() < deadline, status
                await asyncio.sleep(0.05)
            assert _data(await admin.call_tool("list_backends", {})) == []
    log = (tmp_path / "serve.stderr").read_text()
    assert "Traceback" not in log, log[-4000:]


def test_serve_without_a_client_ignores_stdin(tmp_path: Path) -> None:
    """Started by systemd or CI (stdin /dev/null), serve does not speak MCP on stdio and does
    not stop at once because stdin is at its end."""
    import subprocess

    control_port, port = free_ports(2)
    proc = subprocess.Popen(
        [
            MCP_GATEWAY,
            "serve",
            "--data-dir",
            str(tmp_path / "d"),
            "--listen",
            f"127.0.0.1:{port}",
            "--control-listen",
            f"127.0.0.1:{control_port}",
            "--admin-listen",
            "none",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while http_status(f"http://127.0.0.1:{control_port}/healthz", "GET")[0] != 200:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(1.0)
        assert proc.poll() is None  # still serving
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-3000:]
    assert out == b"", out  # nothing but MCP may ever go to stdout: here, nothing at all
