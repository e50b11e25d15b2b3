"""`mcp-gateway backends ...` and `tenants ...` (control/cli.py) as real processes against the
real REST API (control/api.py) served by granian, over the real registry, reconciler and
local orchestrator: tables on stdout, `mcp-gateway: <message>` on stderr, exit statuses.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from control_stack import Stack, backend_command, serve_app, stack, wait_gone
from serving import MCP_GATEWAY
from starlette.applications import Starlette

from control.api import rest_routes
from gwfast._testbase.backend import BackendFactory
from gwfast._testbase.procs import REPO, free_port


@dataclass
class Result:
    rc: int
    out: str
    err: str

    def rows(self) -> list[list[str]]:
        """The table's rows (header first), split on runs of spaces."""
        return [line.split() for line in self.out.splitlines() if line.strip()]


@dataclass
class Cli:
    stack: Stack
    base: str

    async def __call__(self, *args: str, control: str | None = None, exe: str = "") -> Result:
        env = {k: v for k, v in os.environ.items() if k != "GWFAST_CONTROL"}
        env["GWFAST_CONTROL"] = self.base if control is None else control
        argv = [exe] if exe else [sys.executable, "-m", "control.cli"]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            *args,
            cwd=REPO,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return Result(proc.returncode, out.decode(), err.decode())

    async def ok(self, *args: str) -> Result:
        r = await self(*args)
        assert r.rc == 0 and r.err == "", r
        return r

    async def refused(self, *args: str, rc: int = 1) -> str:
        r = await self(*args)
        assert r.rc == rc and r.out == "", r
        return r.err

    async def wait_ready(self, name: str, replicas: int, timeout: float = 40.0) -> None:
        async with asyncio.timeout(timeout):
            while True:
                st = self.stack.control.status(name)
                if st["ready_replicas"] == replicas and len(st["replica_status"]) == replicas:
                    return
                await asyncio.sleep(0.1)


@pytest.fixture
async def cli(tmp_path: Path) -> AsyncIterator[Cli]:
    async with stack(tmp_path / "data") as s:
        app = Starlette(routes=rest_routes(s.control, s.publisher))
        async with serve_app(app) as base:
            yield Cli(s, base)


@pytest.fixture(scope="module")
def url_backend(backend_factory: BackendFactory) -> str:
    (b,) = backend_factory.start(1, prefix="cli")
    return f"{b.base}/mcp"


async def test_backend_lifecycle(cli: Cli) -> None:
    r = await cli.ok(
        "backends",
        "register",
        "tools",
        "--replicas",
        "2",
        "--env",
        "X=1",
        "--",
        *backend_command("c"),
    )
    assert r.out.startswith("registered tools (command): 0/2 replicas ready, routed at /tools/mcp")
    spec = cli.stack.store.backend("tools")
    assert spec.command == backend_command("c") and spec.replicas == 2 and spec.env == {"X": "1"}
    await cli.wait_ready("tools", 2)

    rows = (await cli.ok("backends", "list")).rows()
    assert rows == [
        ["NAME", "KIND", "REPLICAS", "STATE", "ROUTE"],
        ["tools", "command", "2/2", "ready", "/tools/mcp"],
    ]
    listed = json.loads((await cli.ok("backends", "list", "--json")).out)
    assert [b["name"] for b in listed] == ["tools"]

    r = await cli.ok("backends", "status", "tools")
    lines = r.out.splitlines()
    assert lines[0] == "tools (command, local): ready, 2/2 replicas ready, routed at /tools/mcp"
    assert lines[1].startswith("runs: ") and "gwfast._testbase.backend" in lines[1]
    header = next(i for i, line in enumerate(lines) if line.startswith("REPLICA"))
    assert lines[header].split("  ")[0] == "REPLICA" and "HEALTH / LAST EXIT" in lines[header]
    replicas = [line.split() for line in lines[header + 1 :]]
    assert [row[:2] for row in replicas] == [["0", "ready"], ["1", "ready"]]
    status = cli.stack.control.status("tools")
    for row, rep in zip(replicas, status["replica_status"], strict=True):
        assert row[2] == rep["endpoint"] and row[3] == str(rep["pid"]) and row[4] == "0"
    assert (
        json.loads((await cli.ok("backends", "status", "tools", "--json")).out)["name"] == "tools"
    )

    r = await cli.ok("backends", "logs", "tools", "--replica", "0", "--lines", "3")
    assert 1 <= len(r.out.splitlines()) <= 3
    r = await cli.ok("backends", "logs", "tools")
    assert any(line.startswith("[1] ") for line in r.out.splitlines()), r.out
    err = await cli.refused("backends", "logs", "tools", "--replica", "5")
    assert err == "mcp-gateway: backend 'tools' has no replica 5 (backend_status lists them)\n"

    r = await cli.ok("backends", "scale", "tools", "1")
    assert r.out.startswith("scaled tools to 1 replicas")
    await cli.wait_ready("tools", 1)

    pids = [r["pid"] for r in cli.stack.control.status("tools")["replica_status"]]
    r = await cli.ok("backends", "remove", "tools")
    assert r.out.startswith("unregistered tools")
    assert (await cli.ok("backends", "list")).rows() == [
        ["NAME", "KIND", "REPLICAS", "STATE", "ROUTE"]
    ]
    err = await cli.refused("backends", "status", "tools")
    assert err == (
        "mcp-gateway: backend 'tools' is not registered (list_backends shows those that are)\n"
    )
    await wait_gone(pids)


async def test_url_backend_and_its_options(cli: Cli, url_backend: str) -> None:
    await cli.ok(
        "backends",
        "register",
        "web",
        "--url",
        url_backend,
        "--no-health-path",
        "--affinity",
        "none",
        "--description",
        "a shared server",
    )
    spec = cli.stack.store.backend("web")
    assert spec.url == url_backend and spec.health_check.path is None
    assert spec.affinity == "none" and spec.description == "a shared server"
    await cli.wait_ready("web", 1)
    rows = (await cli.ok("backends", "list")).rows()
    assert rows[1] == ["web", "url", "1/1", "ready", "/web/mcp"]
    # a command whose own arguments look like ours, and --control after NAME
    r = await cli(
        "backends",
        "register",
        "dashes",
        "--control",
        cli.base,
        "--path",
        "/m",
        "--health-path",
        "/h",
        "--",
        "tool",
        "--replicas",
        "5",
        "--",
        "--url",
        control="http://127.0.0.1:1",  # the environment loses to --control
    )
    assert r.rc == 0, r
    spec = cli.stack.store.backend("dashes")
    assert spec.command == ["tool", "--replicas", "5", "--", "--url"] and spec.replicas == 1
    assert spec.path == "/m" and spec.health_check.path == "/h"


async def test_refusals_change_nothing(cli: Cli, url_backend: str) -> None:
    await cli.ok("backends", "register", "kept", "--url", url_backend)
    before = cli.stack.store.backends()
    for args, message in [
        (
            ("Bad_Name", "--url", url_backend),
            "mcp-gateway: name: invalid backend name 'Bad_Name': use a DNS-1123 label",
        ),
        (("../x", "--url", url_backend), "mcp-gateway: name: invalid backend name '../x'"),
        (("kept", "--url", url_backend), "mcp-gateway: backend 'kept' is already registered"),
        (("img", "--image", "ghcr.io/acme/mcp:1"), "mcp-gateway: image backends need"),
        (("many", "--replicas", "99", "--", "true"), "mcp-gateway: replicas: must be between"),
        (("u", "--url", "ftp://x/mcp"), "mcp-gateway: url: 'ftp://x/mcp' must be an http://"),
        (("e", "--env", "PORT=1", "--", "true"), "mcp-gateway: env.PORT: PORT is set by gwfast"),
    ]:
        err = await cli.refused("backends", "register", *args)
        assert err.startswith(message) and err.count("\n") == 1, (args, err)
    err = await cli.refused("backends", "status", "../x")
    assert err.startswith("mcp-gateway: name: invalid backend name '../x'")
    err = await cli.refused("backends", "scale", "kept", "3")
    assert err.startswith("mcp-gateway: replicas: a url backend is one endpoint")

    # usage errors: status 2, nothing sent
    err = await cli.refused("backends", "register", "none", rc=2)
    assert (
        err == "mcp-gateway: give exactly one of --command (or -- COMMAND...), --url or --image\n"
    )
    err = await cli.refused("backends", "register", "two", "--url", url_backend, "--", "x", rc=2)
    assert "got --command and --url" in err
    err = await cli.refused("backends", "register", "e", "--env", "NOEQUALS", "--", "x", rc=2)
    assert err == "mcp-gateway: --env 'NOEQUALS': write KEY=VALUE\n"
    err = await cli.refused("backends", "register", "r", "--replicas", "x", "--url", "u", rc=2)
    assert "argument --replicas: invalid int value: 'x'" in err
    err = await cli.refused("backends", "scale", "kept", "lots", rc=2)
    assert "invalid int value: 'lots'" in err
    err = await cli.refused("backends", rc=2)
    assert "ACTION" in err
    assert cli.stack.store.backends() == before


async def test_tenants(cli: Cli) -> None:
    r = await cli.ok("tenants", "quota", "engineering")
    assert r.out == "engineering: no quota\n"
    r = await cli.ok("tenants", "quota", "engineering", "1000", "1h")
    assert r.out == "engineering: 1000 requests per 1h\n"
    r = await cli.ok("tenants", "quota", "engineering")
    assert r.out == "engineering: 1000 requests per 1h\n"
    assert cli.stack.store.tenant("engineering").quota.requests == 1000
    await cli.ok("tenants", "quota", "research", "50", "30m")
    assert (await cli.ok("tenants", "list")).rows() == [
        ["TENANT", "QUOTA", "BACKEND", "QUOTAS", "DESCRIPTION"],
        ["engineering", "1000", "per", "1h", "-", "-"],
        ["research", "50", "per", "30m", "-", "-"],
    ]
    listed = json.loads((await cli.ok("tenants", "list", "--json")).out)
    assert [t["name"] for t in listed] == ["engineering", "research"]

    err = await cli.refused("tenants", "quota", "engineering", "1000", rc=2)
    assert err == "mcp-gateway: give REQUESTS and PERIOD, e.g. tenants quota engineering 1000 1h\n"
    err = await cli.refused("tenants", "quota", "engineering", "many", "1h", rc=2)
    assert err == "mcp-gateway: REQUESTS must be a whole number, not 'many'\n"
    err = await cli.refused("tenants", "quota", "engineering", "5", "soon")
    assert err.startswith("mcp-gateway: quota.period: invalid duration 'soon'")
    err = await cli.refused("tenants", "quota", "bad/tenant")
    assert err.startswith("mcp-gateway: tenant_id: invalid tenant id 'bad/tenant'")
    assert cli.stack.store.tenant("engineering").quota.requests == 1000  # unchanged

    assert (await cli.ok("tenants", "remove", "research")).out == "removed tenant research\n"
    err = await cli.refused("tenants", "remove", "research")
    assert err == "mcp-gateway: tenant 'research' does not exist\n"
    assert list(cli.stack.store.tenants()) == ["engineering"]


async def test_control_not_running(cli: Cli) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    want = (
        f"mcp-gateway: cannot reach the control process at {closed} (Connection refused): "
        "start it with mcp-gateway serve\n"
    )
    for args in [("backends", "list"), ("tenants", "quota", "x", "1", "1h")]:
        r = await cli(*args, control=closed)
        assert (r.rc, r.out, r.err) == (1, "", want), r
    r = await cli("backends", "list", "--control", closed)
    assert (r.rc, r.err) == (1, want), r
    r = await cli("backends", "list", control="ftp://nowhere")
    assert (
        r.rc == 2
        and r.err == "mcp-gateway: invalid control URL 'ftp://nowhere': write http://host:port\n"
    )


async def test_through_the_mcp_gateway_command(cli: Cli, url_backend: str) -> None:
    """The commands as the lead's `mcp-gateway` mounts them (add_commands / run)."""
    await cli.ok("backends", "register", "web", "--url", url_backend)
    r = await cli("backends", "list", exe=MCP_GATEWAY)
    assert r.rc == 0 and r.rows()[1][:2] == ["web", "url"], r
    r = await cli(
        "backends", "--control", cli.base, "list", control="http://127.0.0.1:1", exe=MCP_GATEWAY
    )
    assert r.rc == 0 and r.rows()[1][:2] == ["web", "url"], r
    r = await cli("backends", "status", "nope", exe=MCP_GATEWAY)
    assert r.rc == 1 and r.err.startswith("mcp-gateway: backend 'nope' is not registered"), r
