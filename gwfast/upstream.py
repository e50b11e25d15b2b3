"""Connections to endpoints: a keep-alive pool and the response relay.

An `Upstream` carries one request at a time. It finds the response head itself, rewrites the
few headers that must change (hop-by-hop ones, `Mcp-Session-Id`) and relays the body bytes
exactly as they arrive: SSE events are never held back. The native response scanner reads the
head in one pass and the body is followed by its length or the native chunk reader, so the
connection can go back to the pool when the response ends (RFC 9112 §6.3).
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

from gwfast._native.chunks import MAX_BODY_CAP, ChunkError, ChunkReader
from gwfast._native.headscan import HeadError
from gwfast._native.resphead import ResponseScanner
from gwfast.headers import drop_connection_listed, header_value
from gwfast.metrics import STREAMS, UPSTREAM

if TYPE_CHECKING:
    from gwfast.model import Endpoint
    from gwfast.proxy import ClientConnection

# Dropped from responses by the scanner (RFC 9110 §7.6.1): Connection, Keep-Alive,
# Proxy-Connection, TE, Trailer, Upgrade; and Mcp-Session-Id, which the relay rewrites.

HEAD, BODY, DONE = 0, 1, 2
COPY_MAX = 8192  # bodies up to this size are copied, as in proxy.py; larger ones are views
RESPONSE = ResponseScanner()  # shared by the worker's connections: scans never interleave


class Upstream:  # an asyncio.Protocol
    """One connection to an endpoint; relays one response at a time to a client."""

    __slots__ = (
        "ep",
        "pool",
        "transport",
        "send",
        "is_closing",
        "client",
        "state",
        "head_buf",
        "body_left",
        "chunks",
        "reframe",
        "keep_alive",
        "closed",
        "idle_since",
        "status",
        "streaming",
        "status_line",
    )

    def __init__(self, ep: Endpoint, pool: Pool) -> None:
        self.ep = ep
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.send = self.is_closing = None  # the transport's, set with it
        self.client: ClientConnection | None = None
        self.state = DONE
        self.head_buf: bytearray | None = None
        self.body_left = 0  # bytes of a Content-Length body still to come; -1 otherwise
        self.chunks: ChunkReader | None = None  # follows a chunked body
        self.reframe = False  # close-delimited body relayed to the client as chunked
        self.keep_alive = True
        self.closed = False
        self.idle_since = 0.0
        self.status = 0  # of the response being relayed (metrics: its status class)
        self.streaming = False  # counted in the backend's open-streams gauge
        self.status_line = b""  # the last status line relayed (" 200 OK\r\n")

    # -- asyncio protocol --
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.send = transport.write  # type: ignore[attr-defined]  # bound once (hot path)
        self.is_closing = transport.is_closing
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
                client.response_done(self, False, self.pool.loop.time())
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

    def begin(self, client: ClientConnection) -> None:
        """A request is about to be written: relay its response to `client`."""
        self.client = client
        self.state = HEAD
        self.head_buf = None
        self.chunks = None
        self.reframe = False

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
        now = client.upstream_activity()  # the time of this read, for the pool and timers
        if self.state == BODY:
            self._body(client, data, 0, now)
            return
        if self.state != HEAD:
            self.close()
            return
        if self.head_buf is not None:
            self.head_buf += data
            data = bytes(self.head_buf)
        sc = RESPONSE
        sc.reset()  # one scanner per worker: each call scans a new bytes object from 0
        try:
            end = sc.scan(data, 0, len(data))
        except HeadError as e:
            self._bad(client, e.message)
            return
        if end == 0:
            if self.head_buf is None:
                self.head_buf = bytearray(data)
            return
        self.head_buf = None
        status = sc.status
        if status < 200:
            if status == 101:
                self._bad(client, "the endpoint switched protocols (101), which MCP never does")
                return
            if len(data) > end:  # interim response (103 Early Hints): not relayed
                self._received(data[end:])
            return
        self.status = status
        self.keep_alive = not sc.conn_close and (sc.http_minor == 1 or sc.conn_keep_alive)
        self.reframe = False
        self.chunks = None
        if status == 204 or status == 304:  # no content (HEAD is never forwarded)
            self.body_left = 0
        elif sc.chunked:
            self.chunks = ChunkReader(MAX_BODY_CAP)
            self.body_left = -1
        elif sc.content_length >= 0:
            self.body_left = sc.content_length
        else:  # the body ends at close: relay it chunked so the client keeps alive
            self.reframe = True
            self.keep_alive = False
            self.body_left = -1
        head = self._client_head(client, sc, data)
        self.state = BODY
        if len(data) > end:
            self._body(client, data, end, now, head)
        else:
            client.response_head(RESPONSE.assemble(head, data, end, end), None)
            if self.body_left == 0 and self.client is not None:
                self._finish(client, now)
        if self.client is not None and self.state == BODY and not self.streaming:
            # the body goes on after this read: a stream (SSE) or a long body
            self.streaming = True
            b = self.ep.backend
            b.m[b.m_base + STREAMS] += 1

    def _client_head(self, client: ClientConnection, sc, data: bytes) -> tuple:
        """The parts of the head for the client, joined with the body bytes that came with it
        by RESPONSE.assemble on `data`: the kept lines are the part None, copied from `data`
        there, unless the body is reframed (and `data` replaced)."""
        kept = None
        if sc.conn_other:  # RFC 9110 §7.6.1: also drop the fields Connection names
            kept = drop_connection_listed(sc.kept(data), header_value(data, b"connection") or b"")
        elif self.reframe:
            kept = sc.kept(data)
        has_sid = sc.session_start >= 0
        return (
            b"HTTP/1.1",  # the version we speak; the status line as the endpoint sent it
            self._status_line(sc, data),
            kept,
            b"Mcp-Session-Id: " if has_sid else b"",
            client.session_for_client(sc.span(data, sc.session_start, sc.session_end))
            if has_sid
            else b"",
            b"\r\n" if has_sid else b"",
            b"Transfer-Encoding: chunked\r\n" if self.reframe else b"",
            b"Connection: close\r\n" if client.close_after else b"",
            b"\r\n",
        )

    def _status_line(self, sc, data: bytes) -> bytes:
        """The status line after the version; the previous one's object when it repeats."""
        line = self.status_line = sc.span_as(data, 8, sc.line_end, self.status_line)
        return line

    def _body(self, client: ClientConnection, data: bytes, pos: int, now: float, head=None) -> None:
        """Relay data[pos:] (after the parts of `head`, in one write) and follow the framing
        to the end."""
        n = len(data)
        stop = n
        done = False
        if self.reframe:
            data = b"%x\r\n%b\r\n" % (n - pos, memoryview(data)[pos:])
            pos, stop = 0, len(data)
        else:
            if self.chunks is not None:
                try:
                    stop = self.chunks.feed(data, pos, n)
                except ChunkError as e:
                    self._bad(client, f"the endpoint sent malformed chunked framing ({e})")
                    return
                done = self.chunks.done
            else:
                stop = min(n, pos + self.body_left)
                self.body_left -= stop - pos
                done = self.body_left == 0
            if stop < n:  # bytes past the end of the response: the connection is unusable
                self.keep_alive = False
        if head is not None:  # one write: small bodies copied with the head, else a view
            if stop - pos <= COPY_MAX:
                client.response_head(RESPONSE.assemble(head, data, pos, stop), None)
            else:
                client.response_head(
                    RESPONSE.assemble(head, data, pos, pos), memoryview(data)[pos:stop]
                )
        elif pos == 0 and stop == len(data):
            client.write_upstream(data)
        elif stop - pos <= COPY_MAX:
            client.write_upstream(RESPONSE.span(data, pos, stop))
        else:
            client.write_upstream(memoryview(data)[pos:stop])
        if done and self.client is not None:
            if self.streaming:  # counted open when its head was relayed without the end
                self.streaming = False
                b = self.ep.backend
                b.m[b.m_base + STREAMS] -= 1
            self._finish(client, now)

    def _finish(self, client: ClientConnection, now: float) -> None:
        self.state = DONE
        self.client = None
        client.response_done(self, self.keep_alive and not self.closed, now)

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
        self.idle: dict[object, list[Upstream]] = {}  # oldest first
        self.open = 0  # connections this worker holds, idle or busy
        self._reaper = loop.call_later(min(1.0, keepalive / 2), self._reap)

    def acquire(self, ep: Endpoint, now: float) -> Upstream | None:
        q = self.idle.get(ep.ident)
        while q:
            up = q.pop()
            if not up.closed and up.transport is not None and not up.is_closing():
                if now - up.idle_since < self.keepalive:
                    return up
            up.close()
        return None

    def release(self, up: Upstream, now: float) -> None:
        if up.closed:
            return
        q = self.idle.get(up.ep.ident)
        if q is None:
            q = self.idle[up.ep.ident] = []
        if len(q) >= self.max_idle:
            up.close()
            return
        up.idle_since = now
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
                q.pop(0).close()
        self._reaper = self.loop.call_later(min(1.0, self.keepalive / 2), self._reap)

    def close_idle(self, keep: set[bytes] | None = None) -> None:
        """Close the idle connections of every endpoint whose ident is not in `keep`."""
        for ident in [i for i in self.idle if keep is None or i not in keep]:
            q = self.idle.pop(ident)
            while q:
                q.pop().close()

    def close(self) -> None:
        self._reaper.cancel()
        self.close_idle()
