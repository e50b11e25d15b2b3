"""Hostile and malformed HTTP/1.1 input over raw sockets, while healthy MCP sessions run.

Every shape of the gateway's documented error behaviour: the exact status, a JSON-RPC error
body with a message, and the connection closed where documented. A FaultProxy in
pass-through sits between the gateway and the backend to see what reached upstream: nothing
for a head the gateway refuses, and an aborted (closed) upstream connection for a body that
went wrong half way.

Two healthy sessions live through the whole module, an official SDK client and a raw
keep-alive connection; both are checked after every test and during the hostile ones.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from mcp import Client

from gwfast._testbase.backend import backend_config
from gwfast._testbase.faultproxy import FaultProxy
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

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

HOST = "127.0.0.1"
HEADER_READ = 2.0
BODY_READ = 2.0
MAX_BODY = 65536
LIMITS = {"max_header_bytes": 8192, "max_headers": 50, "max_body_bytes": MAX_BODY}
TIMEOUTS = {
    "header_read": f"{HEADER_READ}s",
    "body_read": f"{BODY_READ}s",
    "connect": "1s",
    "response_header": "10s",
    "upstream_read": "10s",
    "upstream_keepalive": "1s",
}
# Bounds against hanging, a few seconds above the timeout that should answer first; never a
# speed assertion.
MARGIN = 4.0
ABORT_BOUND = 4.0  # an aborted upstream request's connection is closed within this

# ----------------------------------------------------------------------------- requests
# Templates: $HOST becomes the gateway's host:port, $PORT its port, $PROBE a unique marker
# that lets the FaultProxy tell whether (and on which connection) the request went upstream.

INIT = initialize_body()
N = len(INIT)
STD = [
    b"X-Probe: $PROBE",
    b"Content-Type: application/json",
    b"Accept: application/json, text/event-stream",
]


def req(
    *extra: bytes,
    line: bytes = b"POST /a/mcp HTTP/1.1",
    host: bool = True,
    cl: bool = True,
    body: bytes = INIT,
    eol: bytes = b"\r\n",
) -> bytes:
    """An initialize POST (a new session if the gateway let it through) with `extra` lines."""
    lines = [line, *([b"Host: $HOST"] if host else []), *STD, *extra]
    if cl:
        lines.append(b"Content-Length: %d" % len(body))
    return eol.join(lines) + eol + eol + body


def chunked(*parts: bytes, ext: bytes = b"", trailer: bytes = b"") -> bytes:
    out = b"".join(b"%x%s\r\n%s\r\n" % (len(p), ext, p) for p in parts)
    return out + b"0\r\n" + trailer + b"\r\n"


def te(*extra: bytes, body: bytes | None = None) -> bytes:
    return req(
        b"Transfer-Encoding: chunked",
        *extra,
        cl=False,
        body=chunked(INIT) if body is None else body,
    )


def after_chunk(size_line: bytes, rest: bytes = INIT + b"\r\n0\r\n\r\n") -> bytes:
    return te(body=size_line + rest)


def _init_of_size(size: int) -> bytes:
    """An initialize request padded (in clientInfo.name) to exactly `size` bytes."""
    body = initialize_body()
    pad = size - len(body)
    assert pad > 0
    return body.replace(b'"gwfast-rawhttp"', b'"gwfast-rawhttp' + b"p" * pad + b'"')


AT_LIMIT = _init_of_size(MAX_BODY)
assert len(AT_LIMIT) == MAX_BODY

_digits = b"%d" % N
_hex = b"%x" % N
assert len(_digits) >= 3 and len(_hex) >= 2, "the initialize body is longer than that"

MALFORMED = {  # 400 and closed; nothing goes upstream
    "method-bad-char": req(line=b"P@ST /a/mcp HTTP/1.1"),
    "method-leading-space": req(line=b" POST /a/mcp HTTP/1.1"),
    "method-nul": req(line=b"PO\x00ST /a/mcp HTTP/1.1"),
    "target-with-space": req(line=b"POST /a/m cp HTTP/1.1"),
    "target-not-origin-form": req(line=b"POST a/mcp HTTP/1.1"),
    "target-ctl": req(line=b"POST /a/mcp\x01 HTTP/1.1"),
    "target-nul": req(line=b"POST /a/\x00mcp HTTP/1.1"),
    "target-del": req(line=b"POST /a/mcp\x7f HTTP/1.1"),
    "target-with-fragment": req(line=b"POST /a/mcp#frag HTTP/1.1"),
    "version-http2": req(line=b"POST /a/mcp HTTP/2.0"),
    "version-lowercase": req(line=b"POST /a/mcp http/1.1"),
    "version-garbage": req(line=b"POST /a/mcp HTTP/1.x"),
    "version-missing": req(line=b"POST /a/mcp"),
    "obs-fold": req(b"X-Folded: a", b" b"),
    "obs-fold-tab": req(b"X-Folded: a", b"\tb"),
    "space-before-colon": req(b"X-Test : 1"),
    "tab-before-colon": req(b"X-Test\t: 1"),
    "header-without-colon": req(b"X-Test 1"),
    "header-empty-name": req(b": 1"),
    "header-name-bad-char": req(b"X(Test): 1"),
    "header-name-space": req(b"X Test: 1"),
    "bare-lf-request-line": req().replace(b"\r\n", b"\n", 1),
    "bare-lf-header-line": req(b"X-Test: 1\nX-Other: 2"),
    "bare-lf-head-end": req().replace(b"\r\n\r\n", b"\r\n\n", 1),
    "bare-lf-everywhere": req(eol=b"\n"),
    "lone-cr-in-value": req(b"X-Test: a\rb"),
    "lone-cr-before-crlf": req(b"X-Test: a\r"),
    "lone-cr-in-request-line": req(line=b"POST /a/mcp\rX HTTP/1.1"),
    "nul-in-value": req(b"X-Test: a\x00b"),
    "ctl-in-value": req(b"X-Test: a\x01b"),
    "esc-in-value": req(b"X-Test: a\x1bb"),
    "del-in-value": req(b"X-Test: a\x7fb"),
    "repeated-host": req(b"Host: $HOST"),
    "repeated-host-different": req(b"Host: localhost:$PORT"),
    "repeated-session-id": req(b"Mcp-Session-Id: abc", b"Mcp-Session-Id: abc"),
    "missing-host": req(host=False),
}

SMUGGLING = {  # 400 and closed; nothing goes upstream
    "cl-then-te": req(
        b"Content-Length: %d" % len(chunked(INIT)),
        b"Transfer-Encoding: chunked",
        cl=False,
        body=chunked(INIT),
    ),
    "te-then-cl": req(
        b"Transfer-Encoding: chunked",
        b"Content-Length: %d" % len(chunked(INIT)),
        cl=False,
        body=chunked(INIT),
    ),
    "cl-zero-and-te": req(
        b"Content-Length: 0", b"Transfer-Encoding: chunked", cl=False, body=chunked(INIT)
    ),
    "cl-repeated-same": req(b"Content-Length: " + _digits),
    "cl-repeated-different": req(b"Content-Length: 5"),
    "cl-list": req(b"Content-Length: %s, %s" % (_digits, _digits), cl=False),
    "cl-plus": req(b"Content-Length: +" + _digits, cl=False),
    "cl-minus": req(b"Content-Length: -1", cl=False),
    "cl-hex": req(b"Content-Length: 0x" + _hex, cl=False),
    "cl-trailing-letter": req(b"Content-Length: " + _digits + b"a", cl=False),
    "cl-empty": req(b"Content-Length: ", cl=False),
    "cl-inner-space": req(b"Content-Length: " + _digits[:1] + b" " + _digits[1:], cl=False),
    "cl-underscore": req(b"Content-Length: " + _digits[:1] + b"_" + _digits[1:], cl=False),
    "cl-decimal-point": req(b"Content-Length: " + _digits + b".0", cl=False),
    "cl-fullwidth-digit": req(
        b"Content-Length: " + chr(0xFF10 + int(_digits[:1])).encode() + _digits[1:], cl=False
    ),
    "te-gzip": req(b"Transfer-Encoding: gzip", cl=False, body=chunked(INIT)),
    "te-gzip-chunked": req(b"Transfer-Encoding: gzip, chunked", cl=False, body=chunked(INIT)),
    "te-chunked-gzip": req(b"Transfer-Encoding: chunked, gzip", cl=False, body=chunked(INIT)),
    "te-identity": req(b"Transfer-Encoding: identity", cl=False),
    "te-xchunked": req(b"Transfer-Encoding: xchunked", cl=False, body=chunked(INIT)),
    "te-chunked-twice": req(b"Transfer-Encoding: chunked, chunked", cl=False, body=chunked(INIT)),
    "te-two-lines": req(
        b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked", cl=False, body=chunked(INIT)
    ),
    "te-empty": req(b"Transfer-Encoding: ", cl=False),
    "te-quoted": req(b'Transfer-Encoding: "chunked"', cl=False, body=chunked(INIT)),
    "te-with-param": req(b"Transfer-Encoding: chunked;q=1", cl=False, body=chunked(INIT)),
    "te-vertical-tab": req(b"Transfer-Encoding: \x0bchunked", cl=False, body=chunked(INIT)),
}

CHUNK_FRAMING = {  # 400 and closed; what went upstream is aborted
    "size-not-hex": after_chunk(b"zz\r\n"),
    "size-negative": after_chunk(b"-" + _hex + b"\r\n"),
    "size-0x-prefix": after_chunk(b"0x" + _hex + b"\r\n"),
    "size-plus": after_chunk(b"+" + _hex + b"\r\n"),
    "size-leading-space": after_chunk(b" " + _hex + b"\r\n"),
    "size-underscore": after_chunk(_hex[:1] + b"_" + _hex[1:] + b"\r\n"),
    "size-overflow": after_chunk(b"f" * 32 + b"\r\n"),
    "size-wraps-to-zero-at-2**64": after_chunk(b"1" + b"0" * 16 + b"\r\n"),
    "size-empty": after_chunk(b"\r\n"),
    "size-line-bare-lf": after_chunk(_hex + b"\n"),
    "data-longer-than-size": after_chunk(b"%x\r\n" % (N - 5)),
    "data-not-followed-by-crlf": after_chunk(_hex + b"\r\n", INIT + b"XX0\r\n\r\n"),
    "data-followed-by-bare-lf": after_chunk(_hex + b"\r\n", INIT + b"\n0\r\n\r\n"),
    "ext-nul": after_chunk(_hex + b";a\x00b\r\n"),
    "ext-ctl": after_chunk(_hex + b";\x01\r\n"),
    "ext-del": after_chunk(_hex + b";a=\x7f\r\n"),
    "ext-lone-cr": after_chunk(_hex + b";a\rb\r\n"),
    "last-chunk-ext-nul": after_chunk(_hex + b"\r\n", INIT + b"\r\n0;\x00\r\n\r\n"),
    "trailer-nul": te(body=chunked(INIT, trailer=b"X-T: a\x00b\r\n")),
    "trailer-without-colon": te(body=chunked(INIT, trailer=b"X-T\r\n")),
}

HEAD_TOO_LARGE = {  # 431 and closed; nothing goes upstream
    "one-huge-header": req(b"X-Big: " + b"a" * 9000),
    "huge-target": req(line=b"POST /a/mcp?" + b"q" * 9000 + b" HTTP/1.1"),
    "too-many-headers": req(*[b"X-H%d: %d" % (i, i) for i in range(60)]),
    # Host, X-Probe, Content-Type, Accept, Content-Length and 46 more: max_headers + 1
    "headers-one-over-limit": req(*[b"X-H%d: %d" % (i, i) for i in range(46)]),
    # never terminated: the limit must answer, not header_read's 408
    "unterminated-head": b"POST /a/mcp HTTP/1.1\r\nHost: $HOST\r\nX-Probe: $PROBE\r\nX-Big: "
    + b"a" * 9000,
    "unterminated-many-lines": b"POST /a/mcp HTTP/1.1\r\nHost: $HOST\r\nX-Probe: $PROBE\r\n"
    + b"".join(b"X-H%d: 1\r\n" % i for i in range(80)),
}

# 413 before anything goes upstream, closed; only the head is sent
_CL_VALUES = {
    "just-over": b"%d" % (MAX_BODY + 1),
    "far-over": b"%d" % 10**12,
    "beyond-64-bits": b"9" * 30,
}
BODY_TOO_LARGE_CL = {
    k: req(b"Content-Length: " + v, cl=False, body=b"") for k, v in _CL_VALUES.items()
}

SERVED = {  # shapes the gateway must accept (strictness must not break them): 200
    "plain": req(),
    "alias-route": req(line=b"POST /adapters/a/mcp HTTP/1.1"),
    "query-string": req(line=b"POST /a/mcp?x=1 HTTP/1.1"),
    "cl-leading-zeros": req(b"Content-Length: 000" + _digits, cl=False),
    "cl-lowercase-name": req(b"content-length: " + _digits, cl=False),
    "chunked": te(),
    "chunked-in-pieces": te(body=chunked(INIT[:10], INIT[10:50], INIT[50:])),
    "chunked-uppercase-hex": te(body=_hex.upper() + b"\r\n" + INIT + b"\r\n0\r\n\r\n"),
    "chunked-extension": te(body=chunked(INIT, ext=b";name=value")),
    "chunked-quoted-extension": te(body=chunked(INIT, ext=b';name="a quoted; value"')),
    "chunked-trailer": te(body=chunked(INIT, trailer=b"X-Trailer: 1\r\n")),
    "value-with-tab": req(b"X-Test: a\tb"),
    "ows-around-value": req(b"X-Test: \t spaced \t"),
    "many-headers-under-limit": req(*[b"X-H%d: %d" % (i, i) for i in range(30)]),
    "obs-text-value": req(b"X-Obs: caf\xe9 \xff\xfe\x80"),
    "invalid-utf8-user-agent": req(b"User-Agent: bad \xc3\x28 utf8"),
    "origin-same-origin": req(b"Origin: http://$HOST"),
    "origin-loopback": req(b"Origin: http://localhost:5173"),
    "host-localhost": req(b"Host: localhost:$PORT", host=False),
    # RFC 9112 §3.2.2: a server MUST accept the absolute-form
    "absolute-form-target": req(line=b"POST http://$HOST/a/mcp HTTP/1.1"),
    # exactly max_headers lines (5 + 45): "more than max_headers" gets 431, this does not
    "headers-at-limit": req(*[b"X-H%d: %d" % (i, i) for i in range(45)]),
    "head-just-under-limit": req(b"X-Big: " + b"a" * 7800),
    "body-at-limit": req(body=AT_LIMIT),
    "chunked-body-at-limit": te(body=chunked(AT_LIMIT[:30000], AT_LIMIT[30000:])),
    "expect-100-continue-body-sent-at-once": req(b"Expect: 100-continue"),
}

HOSTS_REFUSED = [
    "evil.example",
    "evil.example:$PORT",
    "127.0.0.1.evil.example:$PORT",
    "localhost.evil.example:$PORT",
]
ORIGINS_REFUSED = [
    "http://evil.example",
    "https://evil.example:443",
    "null",
    "http://127.0.0.1.evil.example",
    "http://localhost.evil.example:5173",
]
UNKNOWN_ROUTES = [
    "/",
    "/nope",
    "/a",
    "/a/",
    "/a/mcpx",
    "/a/mcp/extra",
    "/nope/mcp",
    "/adapters/nope/mcp",
    "/adapters/a",
    "/A/mcp",
]
OTHER_METHODS = ["PUT", "PATCH", "OPTIONS", "TRACE"]


def fill(template: bytes, gw: Gateway, probe: str) -> bytes:
    return (
        template.replace(b"$HOST", f"{HOST}:{gw.port}".encode())
        .replace(b"$PORT", str(gw.port).encode())
        .replace(b"$PROBE", probe.encode())
    )


def new_probe() -> str:
    return f"probe-{uuid.uuid4().hex}"


async def send(
    gw: Gateway,
    template: bytes,
    *,
    probe: str | None = None,
    timeout: float = 10.0,
    expect_close: bool = True,
) -> tuple[Response, bool]:
    """One hostile exchange on a new connection: (response, server closed the connection).

    Without `expect_close` the close is not waited for (the connection may stay open).
    """
    data = fill(template, gw, probe or new_probe())
    return await exchange(
        HOST, gw.port, data, timeout=timeout, close_timeout=3.0 if expect_close else None
    )


async def ask(gw: Gateway, data: bytes) -> Response:
    """One exchange where the connection may stay open."""
    resp, _ = await exchange(HOST, gw.port, data, close_timeout=None)
    return resp


def check_error(resp: Response, status: int) -> dict[str, Any]:
    assert resp.status == status, resp
    return resp.jsonrpc_error()


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def backend(backend_factory: Any) -> Any:
    return backend_factory.start(1, prefix="bad-input")[0]


@pytest.fixture(scope="module")
def proxy(backend: Any) -> Iterator[FaultProxy]:
    with FaultProxy(backend.port) as p:
        yield p


@pytest.fixture(scope="module")
def gw(gateway_factory: Any, proxy: FaultProxy) -> Gateway:
    upstream = [proxy.url("/mcp")]
    return gateway_factory.start(
        {
            "a": backend_config(upstream, health_interval="5s"),
            "b": backend_config(upstream, health_interval="5s"),
        },
        name="bad-input",
        limits=LIMITS,
        timeouts=TIMEOUTS,
    )


class Healthy:
    """An SDK client session and a raw keep-alive session, both through the gateway."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.client: Client | None = None
        self.raw: RawSession | None = None
        self.raw_lock = asyncio.Lock()
        self.calls = 0
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await wait_ready(HOST, self.gw.port, timeout=20)
        self._task = asyncio.create_task(self._run())
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait({self._task, ready}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            if self._task.done():
                self._task.result()  # raises what went wrong
            raise TimeoutError("the SDK client did not connect through the gateway")
        self.raw = await RawSession.open(HOST, self.gw.port, "/a/mcp")

    async def _run(self) -> None:
        # the client lives in this one task (anyio cancel scopes must exit where they began)
        async with Client(self.gw.url("a"), mode="legacy") as client:
            self.client = client
            self._ready.set()
            await self._stop.wait()

    async def check(self, tag: str) -> None:
        """Both sessions answer an echo, the raw one on the connection it always had."""
        self.calls += 1
        msg = f"healthy {tag} #{self.calls}"
        assert self.client is not None and self.raw is not None
        result = await asyncio.wait_for(self.client.call_tool("echo", {"message": msg}), 15)
        assert not result.is_error, result
        assert result.content[0].text == msg, result
        async with self.raw_lock:
            assert not self.raw.conn.eof, "the gateway closed the healthy keep-alive connection"
            assert await asyncio.wait_for(self.raw.echo(msg), 15) == msg

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, 15)
        if self.raw is not None:
            await self.raw.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def healthy(gw: Gateway) -> AsyncIterator[Healthy]:
    h = Healthy(gw)
    await h.start()
    try:
        yield h
    finally:
        await h.stop()


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def healthy_after_each(
    healthy: Healthy, request: pytest.FixtureRequest
) -> AsyncIterator[None]:
    yield
    await healthy.check(f"after {request.node.name}")


async def assert_upstream_aborted(proxy: FaultProxy, probe: str) -> None:
    """Every upstream connection that carried `probe` is closed by the gateway."""
    ids = [c.id for c in proxy.find(probe.encode())]
    if ids:
        left = await proxy.wait_open(0, only=ids, timeout=ABORT_BOUND)
        assert left == 0, f"the gateway kept {left} upstream connection(s) of an aborted request"


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("name", list(MALFORMED))
async def test_malformed_head_400_closed(gw: Gateway, proxy: FaultProxy, name: str) -> None:
    probe = new_probe()
    resp, closed = await send(gw, MALFORMED[name], probe=probe)
    check_error(resp, 400)
    assert closed, "the connection must be closed after a malformed head"
    assert not proxy.find(probe.encode()), "a malformed request reached the backend"


@pytest.mark.parametrize("name", list(SMUGGLING))
async def test_smuggling_shapes_400_closed(gw: Gateway, proxy: FaultProxy, name: str) -> None:
    probe = new_probe()
    resp, closed = await send(gw, SMUGGLING[name], probe=probe)
    check_error(resp, 400)
    assert closed, "the connection must be closed after ambiguous framing"
    assert not proxy.find(probe.encode()), "an ambiguously framed request reached the backend"


@pytest.mark.parametrize("name", list(CHUNK_FRAMING))
async def test_bad_chunk_framing_400_closed(gw: Gateway, proxy: FaultProxy, name: str) -> None:
    probe = new_probe()
    resp, closed = await send(gw, CHUNK_FRAMING[name], probe=probe)
    check_error(resp, 400)
    assert closed, "the connection must be closed after bad chunk framing"
    await assert_upstream_aborted(proxy, probe)


@pytest.mark.parametrize("name", list(HEAD_TOO_LARGE))
async def test_head_too_large_431_closed(gw: Gateway, proxy: FaultProxy, name: str) -> None:
    probe = new_probe()
    resp, closed = await send(gw, HEAD_TOO_LARGE[name], probe=probe, timeout=HEADER_READ + MARGIN)
    check_error(resp, 431)
    assert closed
    assert not proxy.find(probe.encode())


@pytest.mark.parametrize("name", list(BODY_TOO_LARGE_CL))
async def test_content_length_over_max_413_before_upstream(
    gw: Gateway, proxy: FaultProxy, name: str
) -> None:
    probe = new_probe()
    # only the head is sent: the answer must not wait for a body
    resp, closed = await send(gw, BODY_TOO_LARGE_CL[name], probe=probe, timeout=BODY_READ + MARGIN)
    check_error(resp, 413)
    assert closed
    assert not proxy.find(probe.encode()), "a request over max_body_bytes went upstream"


async def test_chunked_body_over_max_413_as_soon_as_it_exceeds(
    gw: Gateway, proxy: FaultProxy
) -> None:
    probe = new_probe()
    head = fill(req(b"Transfer-Encoding: chunked", cl=False, body=b""), gw, probe)
    piece = b"x" * 16384
    async with await RawConnection.open(HOST, gw.port) as conn:
        await conn.send(head)
        for _ in range(MAX_BODY // len(piece) + 2):  # past the limit, then no more, no end
            if not await conn.send(b"%x\r\n%s\r\n" % (len(piece), piece)):
                break
        # body_read would answer 408 if the gateway waited for the rest
        resp = await conn.read_response(timeout=BODY_READ + MARGIN)
        check_error(resp, 413)
        assert await conn.wait_closed(timeout=3)
    await assert_upstream_aborted(proxy, probe)


async def test_slow_loris_head_408_closed(gw: Gateway, proxy: FaultProxy) -> None:
    probes = [new_probe(), new_probe()]
    full = [fill(req(), gw, p) for p in probes]

    async def trickle() -> tuple[Response, bool]:
        async with await RawConnection.open(HOST, gw.port) as conn:
            # a byte every 0.2 s: never idle, but the head is not complete within header_read
            sender = asyncio.create_task(conn.send_slowly(full[0][:-4], step=1, delay=0.2))
            try:
                resp = await conn.read_response(timeout=HEADER_READ + MARGIN)
                return resp, await conn.wait_closed(timeout=3)
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender

    async def partial() -> tuple[Response, bool]:
        async with await RawConnection.open(HOST, gw.port) as conn:
            await conn.send(full[1][:60])  # part of a head, then silence
            resp = await conn.read_response(timeout=HEADER_READ + MARGIN)
            return resp, await conn.wait_closed(timeout=3)

    for resp, closed in await asyncio.gather(trickle(), partial()):
        check_error(resp, 408)
        assert closed
    for p in probes:
        assert not proxy.find(p.encode())


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_stalled_body_408_closed_upstream_aborted(
    gw: Gateway, proxy: FaultProxy, framing: str
) -> None:
    probe = new_probe()
    if framing == "chunked":
        head = req(b"Transfer-Encoding: chunked", cl=False, body=b"")
        first = b"%x\r\n%s" % (N, INIT[:20])
    else:
        head = req(b"Content-Length: %d" % N, cl=False, body=b"")
        first = INIT[:20]
    async with await RawConnection.open(HOST, gw.port) as conn:
        await conn.send(fill(head, gw, probe) + first)  # then silence
        resp = await conn.read_response(timeout=BODY_READ + MARGIN)
        check_error(resp, 408)
        assert await conn.wait_closed(timeout=3)
    await assert_upstream_aborted(proxy, probe)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_truncated_body_then_close_aborts_upstream(
    gw: Gateway, proxy: FaultProxy, framing: str
) -> None:
    probe = new_probe()
    if framing == "chunked":
        data = req(b"Transfer-Encoding: chunked", cl=False, body=b"%x\r\n%s" % (N, INIT[:20]))
    else:
        data = req(b"Content-Length: %d" % N, cl=False, body=INIT[:20])
    conn = await RawConnection.open(HOST, gw.port)
    await conn.send(fill(data, gw, probe))
    await asyncio.sleep(0.3)  # let the head reach the backend, if the gateway streams
    await conn.close()
    await assert_upstream_aborted(proxy, probe)


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_client_gone_before_response_head_aborts_upstream(
    gw: Gateway, proxy: FaultProxy, how: str
) -> None:
    # the request is upstream, its response held back by the proxy: a client that leaves
    # must not leave the upstream request running until response_header (10 s here)
    probe = new_probe()
    proxy.stall("down", trigger=probe.encode())
    try:
        conn = await RawConnection.open(HOST, gw.port)
        await conn.send(fill(req(), gw, probe))
        async with asyncio.timeout(5):
            while not (found := proxy.find(probe.encode())):
                await asyncio.sleep(0.02)
        if how == "reset":
            conn.abort()
        else:
            await conn.close()
        left = await proxy.wait_open(0, only=[c.id for c in found], timeout=ABORT_BOUND)
        assert left == 0, "the upstream request outlived the client that sent it"
    finally:
        proxy.pass_through()


@pytest.mark.parametrize("field", [b"Content-Length: 5", b"Transfer-Encoding: chunked"])
async def test_framing_fields_in_trailers_never_reach_upstream(
    gw: Gateway, proxy: FaultProxy, field: bytes
) -> None:
    # RFC 9110 §6.5.1: framing fields cannot be trailers. The gateway may refuse the request
    # (400, closed) or drop the field (RFC 9112 §7.1.2); it must not hand it to the backend,
    # whose parser then answers for the gateway (or, worse, re-frames the stream).
    probe = new_probe()
    trailer = field + b" " + probe.encode() + b"\r\n"
    resp, closed = await send(gw, te(body=chunked(INIT, trailer=trailer)), probe=probe)
    if resp.status == 400:
        resp.jsonrpc_error()
        assert closed
    else:
        assert resp.status == 200, resp
    assert trailer not in proxy.data("up"), "a framing field went upstream as a trailer"


@pytest.mark.parametrize("shape", ["many-fields", "one-huge-field"])
async def test_trailer_section_is_bounded(gw: Gateway, proxy: FaultProxy, shape: str) -> None:
    # Trailers are fields too: a request must not carry past max_headers, max_header_bytes
    # and max_body_bytes all at once by putting the bytes after the last chunk. The contract
    # names no status for trailers; any of the limit statuses, closed, upstream aborted.
    if shape == "many-fields":  # 2000 fields, 220 kB
        trailer = b"".join(b"X-T%d: %s\r\n" % (i, b"v" * 100) for i in range(2000))
    else:  # one field of 100 kB
        trailer = b"X-T: " + b"v" * 100_000 + b"\r\n"
    assert len(trailer) > max(MAX_BODY, LIMITS["max_header_bytes"])
    probe = new_probe()
    resp, closed = await send(gw, te(body=chunked(INIT, trailer=trailer)), probe=probe)
    assert resp.status in (400, 413, 431), resp
    resp.jsonrpc_error()
    assert closed
    await assert_upstream_aborted(proxy, probe)


async def test_pipelined_requests_answered_in_order_and_smuggled_one_refused(
    gw: Gateway, proxy: FaultProxy
) -> None:
    probes = [new_probe() for _ in range(3)]
    smuggled = req(b"Transfer-Encoding: chunked", body=b"0\r\n\r\n")  # CL and TE
    data = b"".join(fill(t, gw, p) for t, p in zip([req(), req(), smuggled], probes, strict=True))
    async with await RawConnection.open(HOST, gw.port) as conn:
        await conn.send(data)
        for _ in range(2):
            resp = await conn.read_response(timeout=10)
            assert resp.status == 200, resp
            assert any(m.get("id") == 1 and "result" in m for m in resp.messages()), resp
        resp = await conn.read_response(timeout=10)
        check_error(resp, 400)
        assert await conn.wait_closed(timeout=3)
    assert proxy.find(probes[0].encode()) and proxy.find(probes[1].encode())
    assert not proxy.find(probes[2].encode()), "the smuggled request reached the backend"


async def test_expect_100_continue_then_body(gw: Gateway) -> None:
    head = req(b"Expect: 100-continue", b"Content-Length: %d" % N, cl=False, body=b"")
    async with await RawConnection.open(HOST, gw.port) as conn:
        await conn.send(fill(head, gw, new_probe()))
        interim = await conn.read_raw_head(timeout=BODY_READ + MARGIN)  # not the body's 408
        assert interim.startswith(b"HTTP/1.1 100 "), interim
        await conn.send(INIT)
        resp = await conn.read_response(timeout=10)
    assert resp.status == 200, resp


async def test_obs_text_in_header_value_is_forwarded(gw: Gateway, proxy: FaultProxy) -> None:
    probe = new_probe()
    value = b"caf\xe9 \xff\xfe\x80 " + probe.encode()
    resp, _ = await send(gw, req(b"X-Obs: " + value), probe=probe, expect_close=False)
    assert resp.status == 200, resp
    assert value in proxy.data("up"), "the header value did not reach the backend unchanged"


@pytest.mark.parametrize("name", list(SERVED))
async def test_valid_shapes_are_served(gw: Gateway, name: str) -> None:
    async with await RawConnection.open(HOST, gw.port) as conn:
        await conn.send(fill(SERVED[name], gw, new_probe()))
        resp = await conn.read_response(timeout=10)
    assert resp.status == 200, resp
    [msg] = [m for m in resp.messages() if m.get("id") == 1]
    assert "protocolVersion" in msg["result"], resp
    assert resp.header("mcp-session-id"), resp


async def test_obs_text_in_session_id_404(gw: Gateway) -> None:
    data = build_request(
        "POST",
        "/a/mcp",
        host=f"{HOST}:{gw.port}",
        headers=[
            *MCP_HEADERS.items(),
            ("Mcp-Session-Id", b"\xff\xfe\x80caf\xe9"),
            ("MCP-Protocol-Version", "2025-06-18"),
        ],
        body=jsonrpc("tools/call", {"name": "echo", "arguments": {"message": "x"}}),
    )
    resp = await ask(gw, data)
    check_error(resp, 404)


@pytest.mark.parametrize("host", HOSTS_REFUSED)
async def test_host_not_allowed_403(gw: Gateway, proxy: FaultProxy, host: str) -> None:
    probe = new_probe()
    resp, _ = await send(
        gw, req(b"Host: " + host.encode(), host=False), probe=probe, expect_close=False
    )
    check_error(resp, 403)
    assert not proxy.find(probe.encode())


async def test_host_checked_on_every_request_of_a_connection(
    gw: Gateway, proxy: FaultProxy
) -> None:
    """The relay remembers the last Host it allowed on a connection: a different one on the
    same keep-alive connection must still be refused, and never reach the backend."""
    probes = [new_probe() for _ in range(3)]
    # no body: the 403 then keeps the connection open (an unread body would close it)
    refused = req(b"Host: " + HOSTS_REFUSED[1].encode(), host=False, body=b"")
    async with await RawConnection.open(HOST, gw.port) as conn:
        for template, probe, status in zip(
            [req(), refused, req()], probes, [200, 403, 200], strict=True
        ):
            await conn.send(fill(template, gw, probe))
            resp = await conn.read_response(timeout=10)
            if status == 200:
                assert resp.status == 200, resp
            else:
                check_error(resp, status)
    assert proxy.find(probes[0].encode()) and proxy.find(probes[2].encode())
    assert not proxy.find(probes[1].encode()), "a refused Host reached the backend"


@pytest.mark.parametrize("origin", ORIGINS_REFUSED)
async def test_origin_not_allowed_403(gw: Gateway, proxy: FaultProxy, origin: str) -> None:
    probe = new_probe()
    resp, _ = await send(gw, req(b"Origin: " + origin.encode()), probe=probe, expect_close=False)
    check_error(resp, 403)
    assert not proxy.find(probe.encode())


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("path", UNKNOWN_ROUTES)
async def test_unknown_route_404(gw: Gateway, path: str, method: str) -> None:
    body = INIT if method == "POST" else b""
    data = build_request(method, path, host=f"{HOST}:{gw.port}", headers=MCP_HEADERS, body=body)
    resp = await ask(gw, data)
    check_error(resp, 404)


@pytest.mark.parametrize("path", ["/a/mcp", "/adapters/a/mcp"])
@pytest.mark.parametrize("method", OTHER_METHODS)
async def test_other_methods_405_with_allow(gw: Gateway, method: str, path: str) -> None:
    body = INIT if method in ("PUT", "PATCH") else b""
    data = build_request(method, path, host=f"{HOST}:{gw.port}", headers=MCP_HEADERS, body=body)
    resp = await ask(gw, data)
    check_error(resp, 405)
    allow = resp.header("allow")
    assert allow is not None, resp
    assert {m.strip() for m in allow.split(",")} == {"GET", "POST", "DELETE"}, allow


# ----------------------------------------------------------------------------- sessions


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def session_ids(gw: Gateway, backend: Any) -> dict[str, str]:
    """Session ids that must not open on backend `a`."""
    a = await RawSession.open(HOST, gw.port, "/a/mcp")
    b = await RawSession.open(HOST, gw.port, "/b/mcp")
    direct = await RawSession.open(HOST, backend.port, "/mcp")  # the backend's own id
    for s in (a, b, direct):
        await s.close()
    assert a.session_id and b.session_id and direct.session_id
    valid = a.session_id
    mid = len(valid) // 2
    tampered = valid[:mid] + ("A" if valid[mid] != "A" else "B") + valid[mid + 1 :]
    return {
        "valid": valid,
        "random": base64.urlsafe_b64encode(os.urandom(64)).decode().rstrip("="),
        "garbage": "!!not-a-session-id!!",
        "truncated": valid[:-6],
        "tampered": tampered,
        "other-backend": b.session_id,
        "backend-own-id": direct.session_id,
        "very-long": "A" * 4000,
    }


BAD_SESSIONS = [
    "random",
    "garbage",
    "truncated",
    "tampered",
    "other-backend",
    "backend-own-id",
    "very-long",
]


def session_request(gw: Gateway, method: str, sid: str, path: str = "/a/mcp") -> bytes:
    headers = [("Mcp-Session-Id", sid), ("MCP-Protocol-Version", "2025-06-18")]
    if method == "POST":
        body = jsonrpc("tools/call", {"name": "echo", "arguments": {"message": "x"}}, id=7)
        headers += list(MCP_HEADERS.items())
    else:
        body = b""
        headers.append(("Accept", "text/event-stream"))
    return build_request(method, path, host=f"{HOST}:{gw.port}", headers=headers, body=body)


@pytest.mark.parametrize("method", ["POST", "GET", "DELETE"])
@pytest.mark.parametrize("kind", BAD_SESSIONS)
async def test_session_id_that_does_not_open_404(
    gw: Gateway, session_ids: dict[str, str], kind: str, method: str
) -> None:
    resp = await ask(gw, session_request(gw, method, session_ids[kind]))
    check_error(resp, 404)


async def test_valid_session_id_is_served(gw: Gateway, session_ids: dict[str, str]) -> None:
    # the control for the 404s above: the same request with the real id works
    resp = await ask(gw, session_request(gw, "POST", session_ids["valid"]))
    assert resp.status == 200, resp
    assert any(m.get("id") == 7 and "result" in m for m in resp.messages()), resp


# ----------------------------------------------------------------------------- load


async def test_hostile_inputs_concurrent_with_healthy_calls(gw: Gateway, healthy: Healthy) -> None:
    shapes = [*MALFORMED.values(), *SMUGGLING.values(), *CHUNK_FRAMING.values()]

    async def hostile(template: bytes) -> None:
        # the exact status of each shape is the business of the tests above; here: an error
        # the gateway answered itself, and the connection closed
        resp, closed = await send(gw, template)
        assert 400 <= resp.status < 500, resp
        resp.jsonrpc_error()
        assert closed

    async def calls() -> None:
        for i in range(10):
            await healthy.check(f"concurrent {i}")

    await asyncio.wait_for(asyncio.gather(*(hostile(t) for t in shapes), calls(), calls()), 30)


async def test_200_hostile_connections_do_not_stop_a_healthy_session(
    gw: Gateway, healthy: Healthy
) -> None:
    partial_head = b"POST /a/mcp HTTP/1.1\r\nHost: $HOST\r\nX-Probe: $PROBE\r\n"
    tls_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"
    kinds = ["partial", "garbage", "smuggle", "silent"] * 50
    conns = await asyncio.gather(*(RawConnection.open(HOST, gw.port) for _ in kinds))
    try:
        payload = {
            "partial": partial_head,
            "garbage": tls_hello,
            "smuggle": SMUGGLING["cl-then-te"],
            "silent": b"",
        }
        await asyncio.gather(
            *(
                c.send(fill(payload[k], gw, new_probe()))
                for c, k in zip(conns, kinds, strict=True)
                if payload[k]
            )
        )
        # all 200 are open (the partial heads until header_read): healthy calls go on
        for i in range(5):
            await healthy.check(f"under 200 hostile connections {i}")

        expect = {"partial": 408, "garbage": 400, "smuggle": 400}

        async def answered(conn: RawConnection, kind: str) -> None:
            resp = await conn.read_response(timeout=HEADER_READ + MARGIN)
            check_error(resp, expect[kind])
            assert await conn.wait_closed(timeout=3), kind

        await asyncio.gather(
            *(answered(c, k) for c, k in zip(conns, kinds, strict=True) if k in expect)
        )
    finally:
        for c in conns:
            await c.close()
    await healthy.check("after 200 hostile connections")


async def test_zz_gateway_alive_and_no_traceback(gw: Gateway) -> None:
    assert gw.proc is not None and gw.proc.alive(), gw.output()[-3000:]
    log = gw.output()
    assert "Traceback" not in log, log[-5000:]
