"""Session affinity through the gateway, driven by the official MCP Python SDK client.

Three replicas of the project's test backend sit behind one gateway; each replica names
itself in the ``whoami`` tool and the ``X-Replica`` response header, so a test can see
which endpoint served every call of a session.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from gwfast._testbase.backend import Backend, BackendFactory, backend_config

pytestmark = pytest.mark.timeout(180)

BACKEND = "aff"  # session affinity
SPREAD = "spread"  # affinity: none


@dataclass
class Wire:
    """What one client saw on the wire: every response's method and status, and headers."""

    responses: list[tuple[str, int]] = field(default_factory=list)
    replicas: set[str] = field(default_factory=set)
    session_ids: set[str] = field(default_factory=set)

    def statuses(self, method: str) -> list[int]:
        return [status for m, status in self.responses if m == method]


@contextlib.asynccontextmanager
async def mcp_client(url: str, mode: str = "legacy") -> AsyncIterator[tuple[Client, Wire]]:
    """An SDK `Client` over an HTTP client that records what each response said."""
    wire = Wire()

    async def on_response(response: httpx2.Response) -> None:
        wire.responses.append((response.request.method, response.status_code))
        if replica := response.headers.get("x-replica"):
            wire.replicas.add(replica)
        if sid := response.headers.get("mcp-session-id"):
            wire.session_ids.add(sid)

    timeout = httpx2.Timeout(30.0, read=120.0)
    async with (
        httpx2.AsyncClient(timeout=timeout, event_hooks={"response": [on_response]}) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        yield client, wire


async def whoami(client: Client) -> str:
    result = await client.call_tool("whoami", {})
    assert not result.is_error, result
    return result.content[0].text


async def echo(client: Client, message: str) -> str:
    result = await client.call_tool("echo", {"message": message})
    assert not result.is_error, result
    return result.content[0].text


@pytest.fixture(scope="module")
def replicas(backend_factory: BackendFactory) -> list[Backend]:
    return backend_factory.start(3, prefix="aff")


@pytest.fixture(scope="module")
def gateway(gateway_factory, replicas: list[Backend]):
    urls = [r.url for r in replicas]
    return gateway_factory.start(
        {BACKEND: backend_config(urls), SPREAD: backend_config(urls, affinity="none")}
    )


@pytest.fixture
def replica_names(replicas: list[Backend]) -> set[str]:
    return {r.name for r in replicas}


async def test_backend_reports_its_replica_directly(replicas: list[Backend]) -> None:
    """The fixture itself: each replica names itself, in the tool result and the header."""
    for replica in replicas:
        async with mcp_client(replica.url) as (client, wire):
            assert await whoami(client) == replica.name
            assert await echo(client, "héllo") == "héllo"
        assert wire.replicas == {replica.name}


async def test_concurrent_sessions_each_stick_to_one_replica(gateway, replica_names) -> None:
    sessions, calls = 36, 8

    async def one_session(i: int) -> tuple[set[str], Wire]:
        seen: set[str] = set()
        async with mcp_client(gateway.url(BACKEND)) as (client, wire):
            for j in range(calls):
                seen.add(await whoami(client))
                assert await echo(client, f"s{i}-c{j}") == f"s{i}-c{j}"
        return seen, wire

    results = await asyncio.gather(*(one_session(i) for i in range(sessions)))

    for seen, wire in results:
        assert len(seen) == 1, f"a session was served by several replicas: {seen}"
        # every response of the session (POSTs, the GET stream, the DELETE) came from there
        assert wire.replicas == seen, (seen, wire.replicas)
        assert len(wire.session_ids) == 1
        assert all(status < 300 for _, status in wire.responses), wire.responses
        methods = {method for method, _ in wire.responses}
        assert methods == {"POST", "GET", "DELETE"}, wire.responses
    per_session = [next(iter(seen)) for seen, _ in results]
    assert set(per_session) == replica_names, f"sessions did not spread: {per_session}"
    # the gateway issues one id per session
    ids = [next(iter(wire.session_ids)) for _, wire in results]
    assert len(set(ids)) == sessions


async def raw_post(url: str, session_id: str) -> httpx2.Response:
    """A legacy-era `tools/list` on an existing session, without the SDK."""
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "Mcp-Session-Id": session_id,
        "MCP-Protocol-Version": "2025-11-25",
    }
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/list"}
    async with httpx2.AsyncClient(timeout=30) as http:
        return await http.post(url, json=body, headers=headers)


async def test_gateway_issues_sealed_session_ids(gateway, replicas) -> None:
    """The client sees the gateway's own id: the backend does not know it, and an id
    that does not open gets 404 with a JSON-RPC error body (so clients re-initialize)."""
    async with mcp_client(gateway.url(BACKEND)) as (client, wire):
        name = await whoami(client)
        (sid,) = wire.session_ids
        replica = next(r for r in replicas if r.name == name)

        ok = await raw_post(gateway.url(BACKEND), sid)
        assert ok.status_code == 200, ok.text
        assert ok.headers.get("x-replica") == name

        direct = await raw_post(replica.url, sid)
        assert direct.status_code == 404, "the backend must not know the gateway's id"

        tampered = sid[:-4] + ("AAAA" if not sid.endswith("AAAA") else "BBBB")
        for bad in (tampered, "not-a-session", "0" * 64):
            resp = await raw_post(gateway.url(BACKEND), bad)
            assert resp.status_code == 404, (bad, resp.status_code, resp.text)
            error = resp.json()
            assert error["jsonrpc"] == "2.0" and "error" in error, error
            assert error["error"]["message"], error

        # the session itself is untouched by the bad attempts
        assert await whoami(client) == name


@pytest.mark.parametrize("mode", ["2026-07-28", "auto"])
async def test_modern_and_auto_modes_work_through_the_gateway(gateway, replica_names, mode) -> None:
    async with mcp_client(gateway.url(BACKEND), mode=mode) as (client, wire):
        assert client.protocol_version == "2026-07-28"
        tools = {t.name for t in (await client.list_tools()).tools}
        assert {"whoami", "echo", "slow"} <= tools
        for i in range(5):
            assert await whoami(client) in replica_names
            assert await echo(client, f"modern-{i}") == f"modern-{i}"
    assert not wire.session_ids, "no session id in the stateless protocol"
    assert all(status < 300 for _, status in wire.responses), wire.responses


async def test_adapters_alias_routes_like_the_plain_path(gateway, replica_names) -> None:
    url = f"{gateway.base}/adapters/{BACKEND}/mcp"
    async with mcp_client(url) as (client, wire):
        seen = {await whoami(client) for _ in range(6)}
        assert await echo(client, "via adapters") == "via adapters"
    assert len(seen) == 1 and seen <= replica_names
    assert wire.replicas == seen
    assert len(wire.session_ids) == 1


async def test_affinity_none_spreads_stateless_requests(gateway, replica_names) -> None:
    """Stateless (2026-07-28) requests to an `affinity: none` backend reach every replica."""
    seen: list[str] = []

    async def caller() -> None:
        async with mcp_client(gateway.url(SPREAD), mode="2026-07-28") as (client, _):
            for _ in range(6):
                seen.append(await whoami(client))

    await asyncio.gather(*(caller() for _ in range(8)))
    assert len(seen) == 48
    assert set(seen) == replica_names, f"requests did not spread: {sorted(seen)}"


async def test_killed_replica_loses_only_its_sessions(
    backend_factory: BackendFactory, gateway_factory
) -> None:
    """Kill one replica: its sessions get 404 (so clients re-initialize), the rest go on."""
    victims = backend_factory.start(3, prefix="kill")
    gw = gateway_factory.start({BACKEND: backend_config([r.url for r in victims])}, name="kill")
    names = {r.name for r in victims}

    async with contextlib.AsyncExitStack() as stack:
        by_replica: dict[str, list[tuple[Client, Wire]]] = {name: [] for name in names}
        # Open sessions until every replica holds at least two (random placement).
        for _ in range(90):
            if all(len(v) >= 2 for v in by_replica.values()):
                break
            client, wire = await stack.enter_async_context(mcp_client(gw.url(BACKEND)))
            by_replica[await whoami(client)].append((client, wire))
        assert all(len(v) >= 2 for v in by_replica.values()), {
            k: len(v) for k, v in by_replica.items()
        }

        dead = victims[1]
        dead.kill()
        live_names = names - {dead.name}

        # Sessions on the other replicas carry on, on the same replica.
        for name in live_names:
            for client, _ in by_replica[name]:
                assert await whoami(client) == name
                assert await echo(client, "still here") == "still here"

        # A session that lived on the dead replica fails on its next call with a 404
        # from the gateway (MCP spec: the client must start a new session).
        for client, wire in by_replica[dead.name]:
            before = len(wire.statuses("POST"))
            with pytest.raises(MCPError):
                await whoami(client)
            after = wire.statuses("POST")[before:]
            assert after == [404], f"expected the gateway's 404, saw {after}"

        # A new session is placed on a live replica and works.
        for i in range(6):
            async with mcp_client(gw.url(BACKEND)) as (client, wire):
                assert await whoami(client) in live_names
                assert await echo(client, f"new-{i}") == f"new-{i}"
            assert wire.replicas <= live_names
