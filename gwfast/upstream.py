"""Connections to endpoints: a keep-alive pool and the response relay.

An `Upstream` carries one request at a time. It finds the response head itself, rewrites the
few headers that must change (hop-by-hop ones, `Mcp-Session-Id`) and relays the body bytes
exactly as they arrive: SSE events are never held back. httptools follows the body framing so
the connection can go back to the pool when the response ends (RFC 9112 §6.3).
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from typing import TYPE_CHECKING

import httptools

from gwfast.metrics import STREAMS, UPSTREAM

if TYPE_CHECKING:
    from gwfast.model import Endpoint
    from gwfast.proxy import ClientConnection

# RFC 9110 §7.6.1: connection-specific fields a proxy must not forward
HOP_BY_HOP = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade")
)
SESSION_HEADER = b"mcp-session-id"
MAX_RESPONSE_HEAD = 65536

HEAD, BODY, DONE = 0, 1, 2


class Upstream(asyncio.Protocol):
    """One connection to an endpoint; relays one response at a time to a client."""

    __slots__ = (
        "ep",
        "pool",
        "transport",
        "client",
        "parser",
        "state",
        "head_buf",
        "headers",
        "complete",
        "headers_done",
        "reframe",
        "keep_alive",
        "closed",
        "idle_since",
        "requests",
        "no_body",
        "status",
        "streaming",
    )

    def __init__(self, ep: Endpoint, pool: Pool) -> None:
        self.ep = ep
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.client: ClientConnection | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.state = DONE
        self.head_buf: bytearray | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False
        self.headers_done = False
        self.reframe = False  # close-delimited body relayed to the client as chunked
        self.keep_alive = True
        self.closed = False
        self.idle_since = 0.0
        self.requests = 0
        self.no_body = False
        self.status = 0  # of the response being relayed (metrics: its status class)
        self.streaming = False  # counted in the backend's open-streams gauge

    # -- httptools callbacks (set flags only; the relay acts after feed_data returns) --
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_message_complete(self) -> None:
        self.complete = True

    # -- asyncio protocol --
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        b = self.ep.backend
        b.m[b.m_base + UPSTREAM] += 1
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        b = self.ep.backend
        b.m[b.m_base + UPSTREAM] -= 1
        if self.streaming:
            self.streaming = False
            b.m[b.m_base + STREAMS] -= 1
        self.pool.forget(self)
        client = self.client
        if client is not None:
            self.client = None
            if self.state == BODY and self.reframe:
                client.write_upstream(b"0\r\n\r\n")  # a close-delimited body ends here
                client.response_done(self, reusable=False)
            else:
                client.upstream_failed(self, "the endpoint closed the connection", self.state)

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.pause_reading(2)

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.resume_reading(2)

    def begin(self, client: ClientConnection, no_body: bool) -> None:
        """A request is about to be written: relay its response to `client`."""
        self.client = client
        self.state = HEAD
        self.head_buf = None
        self.headers = []
        self.complete = False
        self.headers_done = False
        self.reframe = False
        self.no_body = no_body
        self.requests += 1

    def close(self) -> None:
        self.closed = True
        self.client = None
        self.pool.forget(self)
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        try:
            self._received(data)
        except Exception:  # a bug must cost this request only, never the worker
            client = self.client
            self.close()
            if client is not None:
                client.internal_error()

    def _received(self, data: bytes) -> None:
        client = self.client
        if client is None:  # bytes on an idle connection: it cannot be trusted again
            self.close()
            return
        client.upstream_activity()
        if self.state == BODY:
            self._body(client, data)
            return
        if self.state != HEAD:
            self.close()
            return
        if self.head_buf is not None:
            self.head_buf += data
            data = bytes(self.head_buf)
        end = data.find(b"\r\n\r\n")
        if end < 0:
            if len(data) > MAX_RESPONSE_HEAD:
                self._bad(client, "the endpoint sent a response head over 64 KiB")
            elif self.head_buf is None:
                self.head_buf = bytearray(data)
            return
        self.head_buf = None
        end += 4
        try:
            self.parser.feed_data(data[:end])
        except httptools.HttpParserError as e:
            self._bad(client, f"the endpoint sent a malformed response ({e})")
            return
        status = self.parser.get_status_code()
        if status < 200:  # interim response (103 Early Hints): not relayed
            self.headers = []
            self.headers_done = self.complete = False
            if len(data) > end:
                self._received(data[end:])
            return
        self.keep_alive = self.parser.should_keep_alive()
        self.status = status
        head = self._client_head(client, data, status)
        self.state = BODY
        body = None
        if len(data) > end:
            body = memoryview(data)[end:]
            if self.reframe:
                body = b"%x\r\n%b\r\n" % (len(body), body)
            else:
                try:
                    self.parser.feed_data(body)
                except httptools.HttpParserError as e:
                    self._bad(client, f"the endpoint sent malformed body framing ({e})")
                    return
        client.response_head(head, body)
        if self.client is not None:
            if self.complete:
                self._finish(client)
            else:  # the body goes on after this read: a stream (SSE) or a long body
                self.streaming = True
                b = self.ep.backend
                b.m[b.m_base + STREAMS] += 1

    def _client_head(self, client: ClientConnection, data: bytes, status: int) -> bytes:
        line_end = data.find(b"\r\n") + 2
        parts = [b"HTTP/1.1" + data[8:line_end]]
        framed = self.no_body or status in (204, 304)
        for name, value in self.headers:
            low = name.lower()
            if low in HOP_BY_HOP:
                continue
            if low == SESSION_HEADER:
                value = client.session_for_client(value)
            elif low == b"content-length" or low == b"transfer-encoding":
                framed = True
            parts += (name, b": ", value, b"\r\n")
        if not framed:  # body ends at close: relay it chunked so the client keeps alive
            self.reframe = True
            parts.append(b"Transfer-Encoding: chunked\r\n")
        if client.close_after:
            parts.append(b"Connection: close\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def _body(self, client: ClientConnection, data: bytes) -> None:
        if self.reframe:
            client.write_upstream(b"%x\r\n%b\r\n" % (len(data), data))
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._bad(client, f"the endpoint sent malformed body framing ({e})")
            return
        client.write_upstream(data)
        if self.complete:
            if self.streaming:  # counted open when its head was relayed without the end
                self.streaming = False
                b = self.ep.backend
                b.m[b.m_base + STREAMS] -= 1
            self._finish(client)

    def _finish(self, client: ClientConnection) -> None:
        self.state = DONE
        self.client = None
        client.response_done(self, reusable=self.keep_alive and not self.closed)

    def _bad(self, client: ClientConnection, why: str) -> None:
        state = self.state
        self.close()
        client.upstream_failed(self, why, state)


class Pool:
    """Idle keep-alive connections per endpoint, newest first, closed after `keepalive`."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, *, keepalive: float, max_idle: int = 256
    ) -> None:
        self.loop = loop
        self.keepalive = keepalive
        self.max_idle = max_idle
        self.idle: dict[object, deque[Upstream]] = {}
        self.open = 0  # connections this worker holds, idle or busy
        self._reaper = loop.call_later(min(1.0, keepalive / 2), self._reap)

    def acquire(self, ep: Endpoint) -> Upstream | None:
        q = self.idle.get(ep.ident)
        while q:
            up = q.pop()
            if not up.closed and up.transport is not None and not up.transport.is_closing():
                if self.loop.time() - up.idle_since < self.keepalive:
                    return up
            up.close()
        return None

    def release(self, up: Upstream) -> None:
        if up.closed:
            return
        q = self.idle.get(up.ep.ident)
        if q is None:
            q = self.idle[up.ep.ident] = deque()
        if len(q) >= self.max_idle:
            up.close()
            return
        up.idle_since = self.loop.time()
        q.append(up)

    def forget(self, up: Upstream) -> None:
        q = self.idle.get(up.ep.ident)
        if q:
            try:
                q.remove(up)
            except ValueError:
                pass

    async def connect(self, ep: Endpoint, timeout: float) -> Upstream:
        up = Upstream(ep, self)
        await asyncio.wait_for(self.loop.create_connection(lambda: up, ep.host, ep.port), timeout)
        return up

    def _reap(self) -> None:
        cutoff = self.loop.time() - self.keepalive
        for q in self.idle.values():
            while q and q[0].idle_since < cutoff:
                q.popleft().close()
        self._reaper = self.loop.call_later(min(1.0, self.keepalive / 2), self._reap)

    def close(self) -> None:
        self._reaper.cancel()
        for q in self.idle.values():
            while q:
                q.pop().close()
