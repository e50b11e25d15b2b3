"""Placement, health and failover through a real gateway in front of real MCP SDK backends."""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
import time

import pytest
from mcp import Client

from gwfast._testbase.backend import backend_config
from gwfast._testbase.procs import free_port

pytestmark = pytest.mark.timeout(120)

INIT = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
)
HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def _post(port: int, path: str, body: str, headers: dict | None = None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("POST", path, body, {**HEADERS, **(headers or {})})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r, data


async def _whoami(url: str) -> str:
    async with Client(url, mode="legacy") as c:
        return (await c.call_tool("whoami", {})).content[0].text


async def test_new_sessions_never_fail_while_one_endpoint_lives(backend_factory, gateway_factory):
    (live,) = backend_factory.start(1, prefix="live")
    dead = [f"http://127.0.0.1:{free_port()}/mcp" for _ in range(2)]
    # a long health interval: the dead endpoints are found by live traffic (passive checks)
    gw = gateway_factory.start({"b": backend_config([*dead, live.url], health_interval="60s")})
    seen = await asyncio.gather(*[_whoami(gw.url("b")) for _ in range(12)])
    assert set(seen) == {live.name}
    assert "ejected" in gw.output()


async def test_readyz_reflects_endpoint_health(backend_factory, gateway_factory):
    (b,) = backend_factory.start(1, prefix="ready")
    gw = gateway_factory.start({"b": backend_config([b.url], health_interval="200ms")})
    deadline = time.monotonic() + 10
    while _get(gw.port, "/readyz")[0] != 200:
        assert time.monotonic() < deadline, "never became ready"
        await asyncio.sleep(0.1)
    b.kill()
    deadline = time.monotonic() + 10
    while (res := _get(gw.port, "/readyz"))[0] != 503:
        assert time.monotonic() < deadline, "still ready with its only endpoint dead"
        await asyncio.sleep(0.1)
    assert json.loads(res[1])["error"]["message"]
    # a new session now gets a clear 503, not a hang or a 500
    r, body = _post(gw.port, "/b/mcp", INIT)
    assert r.status == 503 and "no healthy endpoint" in json.loads(body)["error"]["message"]
    assert _get(gw.port, "/healthz")[0] == 200  # alive all the same


def _get(port: int, path: str, headers: dict | None = None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path, headers=headers or {})
    r = c.getresponse()
    data = r.read() if r.getheader("content-type", "") != "text/event-stream" else b""
    c.close()
    return r.status, data, r


async def test_get_stream_and_delete_reach_the_session_endpoint(backend_factory, gateway_factory):
    reps = backend_factory.start(3, prefix="own")
    gw = gateway_factory.start({"b": backend_config([r.url for r in reps])})
    for _ in range(6):
        r, _ = _post(gw.port, "/b/mcp", INIT)
        assert r.status == 200
        sid, owner = r.getheader("mcp-session-id"), r.getheader("x-replica")
        note = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
        r, _ = _post(
            gw.port, "/b/mcp", note, {"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18"}
        )
        assert r.status == 202 and r.getheader("x-replica") == owner
        c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        c.request(
            "GET",
            "/b/mcp",
            headers={
                "Accept": "text/event-stream",
                "Mcp-Session-Id": sid,
                "Last-Event-ID": "0_x",
                "MCP-Protocol-Version": "2025-06-18",
            },
        )
        resp = c.getresponse()
        assert resp.getheader("x-replica") == owner
        c.close()
        c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        c.request(
            "DELETE",
            "/b/mcp",
            headers={"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18"},
        )
        resp = c.getresponse()
        resp.read()
        assert resp.status == 200 and resp.getheader("x-replica") == owner
        c.close()
        # the backend forgot the session: the gateway relays its 404 so clients re-initialize
        r, _ = _post(gw.port, "/b/mcp", note, {"Mcp-Session-Id": sid})
        assert r.status == 404


async def test_session_ids_are_the_gateways_and_route_across_gateway_replicas(
    backend_factory, gateway_factory
):
    reps = backend_factory.start(2, prefix="xgw")
    cfg = {"b": backend_config([r.url for r in reps])}
    key = ["QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIzNDU="]
    gw1 = gateway_factory.start(cfg, session_keys=key)
    gw2 = gateway_factory.start(cfg, session_keys=key)
    r, _ = _post(gw1.port, "/b/mcp", INIT)
    sid, owner = r.getheader("mcp-session-id"), r.getheader("x-replica")
    assert sid and not sid.startswith(("0", "1", "2")) and len(sid) > 40
    listed = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    for port in (gw1.port, gw2.port, gw2.port):
        r, body = _post(
            port, "/b/mcp", listed, {"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18"}
        )
        assert r.status == 200 and r.getheader("x-replica") == owner, body


def test_workers_share_the_port_and_stop_on_sigterm(backend_factory, gateway_factory):
    (b,) = backend_factory.start(1, prefix="workers")
    gw = gateway_factory.start({"b": backend_config([b.url])}, workers=2)
    for _ in range(20):
        r, _ = _post(gw.port, "/b/mcp", INIT)
        assert r.status == 200
    gw.proc.signal(signal.SIGTERM)
    assert gw.proc.popen.wait(15) == 0
    assert gw.output().count("serving on") == 2
