"""Upstream faults between the gateway and a backend, injected by a FaultProxy.

The gateway's only endpoint is the proxy, which forwards to a real MCP backend. Each test
breaks the upstream one way (reset mid-SSE, stall before the head, stall mid-stream, slow
reads, reset before the head, refused connections, a client that goes away) and checks that
the client gets a clean error status or a clean (visibly incomplete) end of stream, never a
hang: every wait is bounded a few seconds above the timeout that should answer. Afterwards a
new session works and the gateway holds no upstream connection beyond upstream_keepalive.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from mcp import Client

from gwfast._testbase.backend import backend_config
from gwfast._testbase.faultproxy import ConnStats, FaultProxy
from gwfast._testbase.gateway import Gateway
from gwfast._testbase.rawhttp import (
    MCP_HEADERS,
    RawConnection,
    RawSession,
    Response,
    build_request,
    exchange,
    initialize_body,
    jsonrpc,
    wait_ready,
)

pytestmark = pytest.mark.timeout(60)

HOST = "127.0.0.1"
CONNECT = 1.0
RESPONSE_HEADER = 2.0
UPSTREAM_READ = 2.0
KEEPALIVE = 1.0
TIMEOUTS = {
    "connect": f"{CONNECT}s",
    "response_header": f"{RESPONSE_HEADER}s",
    "upstream_read": f"{UPSTREAM_READ}s",
    "upstream_keepalive": f"{KEEPALIVE}s",
}
# A bound against hanging, added to the configured timeout that should answer; never a speed
# assertion.
MARGIN = 4.0


@pytest.fixture(scope="module")
def backend(backend_factory: Any) -> Any:
    return backend_factory.start(1, prefix="faults")[0]


@pytest.fixture(scope="module")
def proxy(backend: Any) -> Iterator[FaultProxy]:
    # small kernel buffers, so that slow_read() pushes back on the writer
    with FaultProxy(backend.port, rcvbuf=16384) as p:
        yield p


@pytest.fixture(scope="module")
def gw(gateway_factory: Any, proxy: FaultProxy) -> Gateway:
    return gateway_factory.start(
        {"f": backend_config([proxy.url("/mcp")], health_interval="1s")},
        name="faults",
        timeouts=TIMEOUTS,
    )


@pytest.fixture(autouse=True)
async def clean_proxy(proxy: FaultProxy, gw: Gateway) -> AsyncIterator[None]:
    await wait_ready(HOST, gw.port, timeout=20)
    yield
    proxy.accept()  # whatever a failed test left behind
    proxy.pass_through()


async def new_session(gw: Gateway) -> RawSession:
    return await RawSession.open(HOST, gw.port, "/f/mcp")


def check_error(resp: Response, status: int) -> dict[str, Any]:
    assert resp.status == status, resp
    return resp.jsonrpc_error()


def call_body() -> bytes:
    return jsonrpc("tools/call", {"name": "echo", "arguments": {"message": "x"}})


async def post_once(gw: Gateway, body: bytes, *, session_id: str | None = None) -> Response:
    """One POST on a new connection, answered within connect + MARGIN."""
    headers = dict(MCP_HEADERS)
    if session_id:
        headers.update({"Mcp-Session-Id": session_id, "MCP-Protocol-Version": "2025-06-18"})
    data = build_request("POST", "/f/mcp", host=f"{HOST}:{gw.port}", headers=headers, body=body)
    resp, _ = await exchange(HOST, gw.port, data, timeout=CONNECT + MARGIN, close_timeout=None)
    return resp


def open_upstream(proxy: FaultProxy) -> list[ConnStats]:
    return [c for c in proxy.connections() if c.client_open]


async def assert_recovered(gw: Gateway, proxy: FaultProxy) -> None:
    """Faults off: a new SDK session works; no upstream connection outlives keep-alive."""
    proxy.pass_through()
    await wait_ready(HOST, gw.port, timeout=15)
    msg = f"recovered {uuid.uuid4().hex}"
    async with asyncio.timeout(20), Client(gw.url("f"), mode="legacy") as client:
        result = await client.call_tool("echo", {"message": msg})
    assert not result.is_error and result.content[0].text == msg, result
    # pooled idle connections may live up to upstream_keepalive; health checks come and go
    left = await proxy.wait_open(0, timeout=KEEPALIVE + MARGIN)
    assert left == 0, f"upstream connections still open: {open_upstream(proxy)}"
    assert gw.proc is not None and gw.proc.alive()


async def start_slow(s: RawSession, seconds: float, token: str) -> tuple[Response, Any]:
    """Call `slow` with progress; return the streaming response head and its event iterator."""
    await s.conn.send(
        s.request_bytes(s.tool_call_body("slow", {"seconds": seconds}, progress_token=token))
    )
    resp = await s.conn.read_head(method="POST", timeout=10)
    assert resp.status == 200, resp
    assert resp.content_type == "text/event-stream", resp
    events = s.conn.sse_events(resp, timeout=UPSTREAM_READ + MARGIN)
    first = await anext(events)
    msg = json.loads(first["data"])
    assert msg.get("method") == "notifications/progress", first
    return resp, events


async def drain_truncated(resp: Response, events: Any, conn: RawConnection, bound: float) -> None:
    """The rest of the stream ends within `bound`, visibly incomplete, and the connection
    is closed: no terminating chunk, no tool result."""
    async with asyncio.timeout(bound):
        rest = [e async for e in events]
    assert resp.chunked, f"a streamed response must be chunked so truncation shows: {resp!r}"
    assert not resp.complete, f"the stream ended as if complete: {resp!r}"
    assert conn.eof, "the client connection was not closed"
    for e in rest:
        assert "result" not in json.loads(e.get("data") or "{}"), e


# ----------------------------------------------------------------------------- faults


async def test_reset_mid_sse_closes_the_client_stream(gw: Gateway, proxy: FaultProxy) -> None:
    s = await new_session(gw)
    try:
        resp, events = await start_slow(s, 5, f"tok-{uuid.uuid4().hex}")
        assert proxy.reset_now() >= 1
        await drain_truncated(resp, events, s.conn, MARGIN)
    finally:
        await s.close()
    await assert_recovered(gw, proxy)


async def test_reset_after_n_bytes_mid_sse(gw: Gateway, proxy: FaultProxy) -> None:
    # the same through reset_after: RST once the response head and a few bytes are through
    s = await new_session(gw)
    try:
        token = f"tok-{uuid.uuid4().hex}"
        proxy.reset_after(400, trigger=token.encode())
        await s.conn.send(
            s.request_bytes(s.tool_call_body("slow", {"seconds": 3}, progress_token=token))
        )
        resp = await s.conn.read_head(method="POST", timeout=RESPONSE_HEADER + MARGIN)
        if resp.status == 200:  # the head (and maybe an event) got through before the RST
            events = s.conn.sse_events(resp, timeout=UPSTREAM_READ + MARGIN)
            await drain_truncated(resp, events, s.conn, 3 + MARGIN)
        else:  # the RST came before the whole head: a clean error instead
            await s.conn.read_body(resp, timeout=MARGIN)
            check_error(resp, 502)
        [conn] = proxy.find(token.encode())
        assert conn.reset_by_proxy
    finally:
        await s.close()
    await assert_recovered(gw, proxy)


@pytest.mark.parametrize("direction", ["down", "up", "both"])
async def test_stall_before_head_504(gw: Gateway, proxy: FaultProxy, direction: str) -> None:
    # down: the backend answers but nothing comes back; up: the request never arrives
    s = await new_session(gw)
    try:
        proxy.stall(direction, trigger=b"tools/call")  # type: ignore[arg-type]
        resp = await s.post(
            s.tool_call_body("echo", {"message": "stalled"}), timeout=RESPONSE_HEADER + MARGIN
        )
        check_error(resp, 504)
    finally:
        await s.close()
    await assert_recovered(gw, proxy)


async def test_stall_mid_stream_closes_the_client_after_upstream_read(
    gw: Gateway, proxy: FaultProxy
) -> None:
    s = await new_session(gw)
    try:
        resp, events = await start_slow(s, 6, f"tok-{uuid.uuid4().hex}")
        proxy.stall("down")
        await drain_truncated(resp, events, s.conn, UPSTREAM_READ + MARGIN)
    finally:
        await s.close()
    await assert_recovered(gw, proxy)


@pytest.mark.parametrize("direction", ["up", "down"])
async def test_slow_reading_upstream_still_relays_exactly(
    gw: Gateway, proxy: FaultProxy, direction: str
) -> None:
    # up: the backend side reads the gateway's request slowly (the gateway must wait on
    # backpressure, not fail or corrupt); down: the response trickles in
    s = await new_session(gw)
    try:
        token = uuid.uuid4().hex
        message = token + "x" * 400_000
        proxy.slow_read(direction=direction, chunk=8192, delay=0.01, trigger=token.encode())  # type: ignore[arg-type]
        assert await s.echo(message, timeout=30) == message
        [conn] = proxy.find(token.encode())
        slow = conn.max_faulted_read_up if direction == "up" else conn.max_faulted_read_down
        assert 0 < slow <= 8192, conn  # the fault really applied
    finally:
        await s.close()
    await assert_recovered(gw, proxy)


@pytest.mark.parametrize("when", ["request-arrives", "response-starts"])
async def test_reset_before_head_502(gw: Gateway, proxy: FaultProxy, when: str) -> None:
    s = await new_session(gw)
    try:
        direction = "up" if when == "request-arrives" else "down"
        proxy.reset_after(0, direction=direction, trigger=b"tools/call")  # type: ignore[arg-type]
        resp = await s.post(
            s.tool_call_body("echo", {"message": "reset"}), timeout=RESPONSE_HEADER + MARGIN
        )
        check_error(resp, 502)
    finally:
        await s.close()
    await assert_recovered(gw, proxy)


async def test_refused_endpoint_session_404_new_session_502_or_503(
    gw: Gateway, proxy: FaultProxy
) -> None:
    s = await new_session(gw)
    await s.close()
    assert s.session_id
    proxy.refuse()
    try:
        resp = await post_once(gw, call_body(), session_id=s.session_id)
        check_error(resp, 404)
        resp = await post_once(gw, initialize_body())
        assert resp.status in (502, 503), resp
        resp.jsonrpc_error()
    finally:
        proxy.accept()
    await assert_recovered(gw, proxy)


async def test_upstream_fin_mid_sse_is_not_passed_off_as_a_complete_stream(
    gw: Gateway, proxy: FaultProxy
) -> None:
    # a clean close (FIN, as when a backend process exits) in the middle of a chunked
    # response: the client must see a truncated body, never a terminating chunk
    s = await new_session(gw)
    try:
        resp, events = await start_slow(s, 5, f"tok-{uuid.uuid4().hex}")
        assert proxy.close_now() >= 1
        await drain_truncated(resp, events, s.conn, MARGIN)
    finally:
        await s.close()
    await assert_recovered(gw, proxy)


async def test_connect_timeout_gives_clean_errors(gw: Gateway, proxy: FaultProxy) -> None:
    # the endpoint's host drops SYNs: timeouts.connect must answer, for a new session 502 or
    # 503; for an existing session the contract names no status, but it must be an error
    # the gateway answers itself, in time
    s = await new_session(gw)
    await s.close()
    assert s.session_id
    await asyncio.to_thread(proxy.blackhole)
    try:
        resp = await post_once(gw, call_body(), session_id=s.session_id)
        assert resp.status in (404, 502, 503, 504), resp
        resp.jsonrpc_error()
        resp = await post_once(gw, initialize_body())
        assert resp.status in (502, 503), resp
        resp.jsonrpc_error()
    finally:
        proxy.accept()
    await assert_recovered(gw, proxy)


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_client_gone_mid_sse_closes_the_upstream_stream(
    gw: Gateway, proxy: FaultProxy, how: str
) -> None:
    s = await new_session(gw)
    token = f"tok-{uuid.uuid4().hex}"
    try:
        await start_slow(s, 12, token)
        [upstream] = proxy.find(token.encode())
        assert upstream.client_open
    finally:
        if how == "reset":
            s.conn.abort()
        else:
            await s.close()
    # "at once": well before the tool's 11 remaining seconds would end the response
    left = await proxy.wait_open(0, only=[upstream.id], timeout=MARGIN)
    assert left == 0, "the gateway kept streaming from upstream for a client that left"
    await assert_recovered(gw, proxy)


async def test_zz_gateway_alive_and_no_traceback(gw: Gateway) -> None:
    assert gw.proc is not None and gw.proc.alive(), gw.output()[-3000:]
    log = gw.output()
    assert "Traceback" not in log, log[-5000:]
