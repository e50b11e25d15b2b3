"""The MCP admin tools (control/tools.py) as a model uses them: the official MCP client over
Streamable HTTP (granian, as the control process serves `/mcp`) and over stdio, against the
real registry, reconciler and local orchestrator running real MCP backends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from control_stack import Stack, backend_command, serve_app, stack, wait_gone
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from starlette.applications import Starlette

from control.tools import INSTRUCTIONS, admin_server, streamable_http_routes
from gwfast._testbase.backend import BackendFactory
from gwfast._testbase.procs import REPO

TESTS = Path(__file__).parent

ARGUMENTS = {
    "list_backends": set(),
    "register_backend": {
        "name",
        "command",
        "url",
        "image",
        "env",
        "replicas",
        "port",
        "path",
        "health_check",
        "affinity",
        "placement",
        "tenants",
        "roles",
        "description",
    },
    "backend_status": {"name"},
    "backend_logs": {"name", "replica", "lines"},
    "unregister_backend": {"name"},
    "scale_backend": {"name", "replicas"},
    "tenant_quota": {"tenant_id", "requests", "period"},
}


@dataclass
class Admin:
    stack: Stack
    base: str
    client: Client | None = None

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator[Admin]:
        """The MCP client, entered in the test's own task (anyio's scopes require it)."""
        async with Client(f"{self.base}/mcp", mode="legacy") as c:
            self.client = c
            yield self

    async def call(self, tool: str, args: dict[str, Any] | None = None) -> Any:
        r = await self.client.call_tool(tool, args or {})
        assert not r.is_error, (tool, args, r.content)
        sc = r.structured_content
        assert sc is not None, r
        return sc["result"] if list(sc) == ["result"] else sc

    async def refused(self, tool: str, args: dict[str, Any]) -> str:
        r = await self.client.call_tool(tool, args)
        assert r.is_error, (tool, args, r)
        return r.content[0].text

    async def wait_ready(self, name: str, replicas: int, timeout: float = 40.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            st = await self.call("backend_status", {"name": name})
            if st["ready_replicas"] == replicas and len(st["replica_status"]) == replicas:
                return st
            assert time.monotonic() < deadline, st
            await asyncio.sleep(0.1)


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    async with stack(tmp_path / "data") as s:
        routes, lifespan = streamable_http_routes(admin_server(s.control), host="127.0.0.1")
        async with serve_app(Starlette(routes=routes, lifespan=lifespan)) as base:
            yield Admin(s, base)


@pytest.fixture(scope="module")
def url_backend(backend_factory: BackendFactory) -> str:
    (b,) = backend_factory.start(1, prefix="url")
    return f"{b.base}/mcp"


async def test_tools_and_their_arguments(admin: Admin) -> None:
    async with admin.connected():
        tools = {t.name: t for t in (await admin.client.list_tools()).tools}
        assert set(tools) == set(ARGUMENTS)
        for name, tool in tools.items():
            assert set(tool.input_schema.get("properties", {})) == ARGUMENTS[name], name
            assert tool.description and len(tool.description) > 80, name
            assert "Example" in tool.description or name == "list_backends", name
        assert tools["register_backend"].input_schema["required"] == ["name"]
        assert tools["scale_backend"].input_schema["required"] == ["name", "replicas"]
        assert tools["tenant_quota"].input_schema["required"] == ["tenant_id"]
        assert tools["backend_status"].annotations.read_only_hint is True
        assert tools["unregister_backend"].annotations.destructive_hint is True
        hc = tools["register_backend"].input_schema["$defs"]["HealthCheck"]
        assert hc["additionalProperties"] is False and "interval" in hc["properties"]
        assert admin.client.server_info.name == "gwfast"
        assert admin.client.instructions == INSTRUCTIONS


async def test_command_backend_lifecycle(admin: Admin) -> None:
    async with admin.connected():
        reg = await admin.call(
            "register_backend",
            {"name": "tools", "command": backend_command("t"), "replicas": 2, "env": {"X": "1"}},
        )
        assert reg["name"] == "tools" and reg["kind"] == "command" and reg["replicas"] == 2
        assert reg["route"] == "/tools/mcp" and reg["env"] == {"X": "1"}
        assert reg["affinity"] == "session"  # defaults filled in by the service, not None

        st = await admin.wait_ready("tools", 2)
        assert st["state"] == "ready" and st["message"] == ""
        assert [r["replica"] for r in st["replica_status"]] == [0, 1]
        for r in st["replica_status"]:
            assert (
                r["state"] == "ready" and r["pid"] and r["endpoint"].startswith("http://127.0.0.1:")
            )
        (listed,) = await admin.call("list_backends")
        assert listed["name"] == "tools" and listed["ready_replicas"] == 2

        logs = await admin.call("backend_logs", {"name": "tools", "replica": 0, "lines": 5})
        assert logs["name"] == "tools" and logs["replica"] == 0 and 1 <= len(logs["lines"]) <= 5
        logs = await admin.call("backend_logs", {"name": "tools"})
        assert any(line.startswith("[1] ") for line in logs["lines"]), logs
        text = await admin.refused("backend_logs", {"name": "tools", "replica": 7})
        assert "no replica 7" in text

        scaled = await admin.call("scale_backend", {"name": "tools", "replicas": 1})
        assert scaled["replicas"] == 1
        await admin.wait_ready("tools", 1)

        pids = [
            r["pid"]
            for r in (await admin.call("backend_status", {"name": "tools"}))["replica_status"]
        ]
        gone = await admin.call("unregister_backend", {"name": "tools"})
        assert gone == {"name": "tools", "unregistered": True}
        assert await admin.call("list_backends") == []
        text = await admin.refused("backend_status", {"name": "tools"})
        assert text == "backend 'tools' is not registered (list_backends shows those that are)"
        assert admin.stack.store.backends() == {}
        await wait_gone(pids)  # its processes stop, and are reaped


async def test_url_backend(admin: Admin, url_backend: str) -> None:
    async with admin.connected():
        reg = await admin.call(
            "register_backend",
            {"name": "remote", "url": url_backend, "health_check": {"path": "/healthz"}},
        )
        assert reg["kind"] == "url" and reg["url"] == url_backend
        st = await admin.wait_ready("remote", 1)
        assert st["replica_status"][0]["endpoint"] == url_backend
        snap = admin.stack.publisher.current
        assert snap is not None and snap.backends["remote"].endpoints == [url_backend]
        await admin.call("unregister_backend", {"name": "remote"})


async def test_tenant_quota(admin: Admin) -> None:
    async with admin.connected():
        assert await admin.call("tenant_quota", {"tenant_id": "engineering"}) == {
            "tenant_id": "engineering",
            "quota": None,
        }
        q = await admin.call(
            "tenant_quota", {"tenant_id": "engineering", "requests": 1000, "period": "1h"}
        )
        want = {"requests": 1000, "period": 3600.0, "period_text": "1h"}
        assert q == {"tenant_id": "engineering", "quota": want}
        assert await admin.call("tenant_quota", {"tenant_id": "engineering"}) == q
        assert admin.stack.store.tenant("engineering").quota.requests == 1000

        text = await admin.refused("tenant_quota", {"tenant_id": "engineering", "requests": 5})
        assert "give both requests and period" in text
        text = await admin.refused(
            "tenant_quota", {"tenant_id": "engineering", "requests": 5, "period": "soon"}
        )
        assert "quota.period" in text and "invalid duration 'soon'" in text
        text = await admin.refused(
            "tenant_quota", {"tenant_id": "engineering", "requests": 5, "period": True}
        )
        assert "quota.period" in text
        text = await admin.refused("tenant_quota", {"tenant_id": "bad/tenant"})
        assert "invalid tenant id 'bad/tenant'" in text
        assert await admin.call("tenant_quota", {"tenant_id": "engineering"}) == q  # unchanged


BAD_REGISTRATIONS: list[tuple[dict[str, Any], str]] = [
    (
        {"name": "x", "url": "http://127.0.0.1:1/mcp", "health_check": {"pth": "/h"}},
        "health_check.pth: Extra inputs are not permitted",
    ),
    ({"name": "Bad_Name", "url": "http://127.0.0.1:1/mcp"}, "invalid backend name 'Bad_Name'"),
    ({"name": "../x", "url": "http://127.0.0.1:1/mcp"}, "invalid backend name '../x'"),
    ({"name": "x", "command": ["true"], "replicas": 99}, "replicas: must be between 0 and 32"),
    ({"name": "x", "image": "ghcr.io/acme/mcp:1"}, "image backends need the Kubernetes"),
    ({"name": "x"}, "give exactly one of command"),
    (
        {"name": "x", "command": ["true"], "url": "http://127.0.0.1:1/mcp"},
        "give exactly one of command",
    ),
    ({"name": "x", "command": ["true"], "env": {"PORT": "1"}}, "env.PORT: PORT is set by gwfast"),
    ({"name": "x", "url": "ftp://h/mcp"}, "must be an http://host[:port]/path URL"),
    ({"name": "x", "command": ["true"], "placement": "sticky"}, "invalid placement 'sticky'"),
    # wrong types: a clear tool error, not a traceback
    ({"name": "x", "command": "true"}, "command: Input should be a valid list (got 'true')"),
    ({"name": "x", "command": ["true"], "replicas": "2"}, "replicas: Input should be a valid int"),
    ({"name": "x", "command": ["true"], "replicas": True}, "replicas: Input should be a valid int"),
    ({"name": "x", "command": ["true"], "env": {"A": 1}}, "env.A: Input should be a valid string"),
    ({"name": 5, "command": ["true"]}, "name: Input should be a valid string"),
    ({"command": ["true"]}, "name: Field required"),
    ({"name": "x", "command": ["true"], "affinity": "sticky"}, "affinity: Input should be"),
    ({"name": "x", "command": ["true"], "health_check": "/h"}, "health_check: Input should be"),
    ({"name": "x", "command": ["true"], "health_check": {"interval": "soon"}}, "interval"),
    ({"name": "x", "command": ["true"], "replica": 2}, "unknown argument 'replica'"),
]


async def test_bad_input_is_a_tool_error_and_changes_nothing(
    admin: Admin, url_backend: str
) -> None:
    async with admin.connected():
        await admin.call("register_backend", {"name": "kept", "url": url_backend})
        before = await admin.call("list_backends")
        snapshot = admin.stack.store.backends()

        text = await admin.refused("register_backend", {"name": "kept", "url": url_backend})
        assert "backend 'kept' is already registered" in text
        for args, reason in BAD_REGISTRATIONS:
            text = await admin.refused("register_backend", args)
            assert reason in text, (args, text)
            assert "Traceback" not in text and "errors.pydantic.dev" not in text, text

        for tool, args, reason in [
            ("scale_backend", {"name": "kept", "replicas": 2}, "a url backend is one endpoint"),
            ("scale_backend", {"name": "kept", "replicas": "two"}, "replicas: Input should be"),
            ("scale_backend", {"name": "nope", "replicas": 1}, "backend 'nope' is not registered"),
            ("scale_backend", {"name": "kept"}, "replicas: Field required"),
            ("backend_status", {"name": "../x"}, "invalid backend name '../x'"),
            ("backend_logs", {"name": "kept", "lines": 0}, "lines must be between 1 and 10000"),
            ("backend_logs", {"name": "kept", "lines": "all"}, "lines: Input should be"),
            ("unregister_backend", {"name": "Bad_Name"}, "invalid backend name 'Bad_Name'"),
            ("list_backends", {"verbose": True}, "unknown argument 'verbose'"),
            ("no_such_tool", {}, "Unknown tool"),
        ]:
            text = await admin.refused(tool, args)
            assert reason in text, (tool, args, text)

        assert await admin.call("list_backends") == before
        assert admin.stack.store.backends() == snapshot
        assert admin.stack.store.tenants() == {}


async def test_streamable_http_refuses_foreign_hosts(admin: Admin) -> None:
    """DNS rebinding: the endpoint runs commands on this machine."""
    async with admin.connected():
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}).encode()

        def post(host: str) -> int:
            req = urllib.request.Request(
                f"{admin.base}/mcp",
                data=body,
                method="POST",
                headers={
                    "Host": host,
                    "Content-Type": "application/json",
                    "Accept": "application/json, text/event-stream",
                },
            )
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status
            except urllib.error.HTTPError as e:
                return e.code

        port = admin.base.rsplit(":", 1)[1]
        assert await asyncio.to_thread(post, f"evil.example:{port}") == 421
        assert await asyncio.to_thread(post, f"127.0.0.1:{port}") != 421


# ----------------------------------------------------------------------------- stdio


def _stdio_params(data_dir: Path, *extra: str) -> StdioServerParameters:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONUNBUFFERED"] = "1"
    return StdioServerParameters(
        command=sys.executable,
        args=[str(TESTS / "admin_stdio_server.py"), str(data_dir), *extra],
        env=env,
        cwd=str(REPO),
    )


async def test_stdio_with_the_sdk_client(tmp_path: Path) -> None:
    with (tmp_path / "stderr").open("w") as errlog:
        async with Client(stdio_client(_stdio_params(tmp_path / "d"), errlog=errlog)) as c:
            assert {t.name for t in (await c.list_tools()).tools} == set(ARGUMENTS)
            r = await c.call_tool("list_backends", {})
            assert not r.is_error and r.structured_content == {"result": []}
            r = await c.call_tool(
                "tenant_quota", {"tenant_id": "engineering", "requests": 1000, "period": "1h"}
            )
            assert r.structured_content["quota"]["period"] == 3600.0
            r = await c.call_tool("tenant_quota", {"tenant_id": "engineering"})
            assert r.structured_content["quota"]["requests"] == 1000
            r = await c.call_tool("register_backend", {"name": "Bad_Name", "url": "http://x"})
            assert r.is_error and "invalid backend name 'Bad_Name'" in r.content[0].text
    err = (tmp_path / "stderr").read_text()
    assert "Traceback" not in err, err


def _spawn(params) -> subprocess.Popen:
    """The stdio server process with raw pipes, for tests that speak the wire themselves."""
    return subprocess.Popen(
        [params.command, *params.args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=params.env,
        cwd=params.cwd,
    )


def test_stdio_writes_only_mcp_and_exits_when_stdin_closes(tmp_path: Path) -> None:
    """Raw JSON-RPC lines: every stdout line is a JSON-RPC message (the stray print went
    to stderr), and the process exits 0 soon after its stdin closes."""
    params = _stdio_params(tmp_path / "d")
    proc = _spawn(params)
    assert proc.stdin and proc.stdout

    def send(msg: dict) -> None:
        proc.stdin.write(json.dumps(msg).encode() + b"\n")
        proc.stdin.flush()

    def answer() -> dict:
        line = proc.stdout.readline()
        assert line, proc.stderr.read().decode() if proc.stderr else ""
        return json.loads(line)

    try:
        send(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "raw", "version": "0"},
                },
            }
        )
        init = answer()
        assert init["id"] == 1 and init["result"]["serverInfo"]["name"] == "gwfast"
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        time.sleep(0.6)  # the stray print happens meanwhile
        call = {"name": "tenant_quota", "arguments": {"tenant_id": "t1"}}
        send({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call})
        r = answer()
        assert r["id"] == 2 and r["result"]["structuredContent"] == {
            "tenant_id": "t1",
            "quota": None,
        }
        call = {"name": "scale_backend", "arguments": {"name": "nope", "replicas": 1}}
        send({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": call})
        r = answer()
        assert r["id"] == 3 and r["result"]["isError"] is True
        started = time.monotonic()
        proc.stdin.close()
        proc.stdin = None  # communicate() must not flush it
        rest, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err.decode()[-3000:]
        assert time.monotonic() - started < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for line in rest.splitlines():  # anything after the last answer must be MCP too
        assert json.loads(line)["jsonrpc"] == "2.0"
    err_text = err.decode()
    assert "stray print while serving" in err_text and "a log line while serving" in err_text
    assert "stdio stopped" in err_text
    assert "Traceback" not in err_text, err_text


def test_stdio_cancelled_while_stdin_is_open_stops_at_once(tmp_path: Path) -> None:
    """SIGTERM cancels the stdio task: it must not wait for the client to write or close."""
    params = _stdio_params(tmp_path / "d", "1.0")
    proc = _spawn(params)
    assert proc.stdin and proc.stdout and proc.stderr
    try:
        proc.wait(timeout=15)  # stdin stays open all along (the output is small)
        out, err = proc.stdout.read(), proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            pipe.close()
    assert proc.returncode == 0, err.decode()[-3000:]
    assert out == b"" and b"stdio stopped" in err


async def test_a_crashing_operation_is_a_tool_error_and_the_server_lives_on(
    admin: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> list:
        raise RuntimeError("disk on fire")

    async with admin.connected():
        monkeypatch.setattr(admin.stack.control, "list_backends", broken)
        r = await admin.client.call_tool("list_backends", {})
        assert r.is_error and r.content[0].text == "Error executing tool list_backends"
        monkeypatch.undo()
        assert await admin.call("list_backends") == []


async def test_the_stateless_protocol_era(admin: Admin) -> None:
    """A 2026-07-28 client (no session, Mcp-Method headers) gets the same tools."""
    async with Client(f"{admin.base}/mcp", mode="2026-07-28") as c:
        assert {t.name for t in (await c.list_tools()).tools} == set(ARGUMENTS)
        r = await c.call_tool("tenant_quota", {"tenant_id": "t", "requests": 10, "period": 60})
        assert not r.is_error and r.structured_content["quota"]["period_text"] == "1m"
        r = await c.call_tool("backend_status", {"name": "nope"})
        assert r.is_error and "backend 'nope' is not registered" in r.content[0].text
