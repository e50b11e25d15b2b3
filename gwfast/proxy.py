"""The client side of the hot path: read a request head, route it, relay it.

One `ClientConnection` per client socket. It reads into a reused buffer (BufferedProtocol),
lets the native scanner find the head and the offsets routing needs, answers errors itself,
and otherwise writes a rebuilt head plus the untouched body bytes (memoryview slices of the
read buffer) to a pooled upstream connection. `gwfast.upstream.Upstream` relays the answer.

Invariants:
- one request at a time per connection; bytes of a pipelined next request wait in the buffer;
- a buffer slice handed to a transport that could not send it at once belongs to that
  transport (uvloop queues the memoryview, it does not copy): the connection switches to a
  fresh buffer instead of overwriting it;
- every request that took an endpoint's `outstanding` slot gives it back exactly once
  (`_end_request`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING

from gwfast._native.chunks import ChunkError, ChunkReader, TrailersTooLarge
from gwfast._native.headscan import HeadError, HeadScanner
from gwfast.errors import error_response, plain_response
from gwfast.headers import drop_connection_listed, header_value
from gwfast.metrics import (
    CODE_INDEX,
    CODES_AT,
    CONNECT_FAILURES,
    CONNECTIONS,
    EJECTIONS,
    SESSIONS,
    UNROUTED,
)
from gwfast.upstream import BODY as UP_BODY

if TYPE_CHECKING:
    from gwfast.gateway import Gateway
    from gwfast.model import Backend, Endpoint
    from gwfast.upstream import Upstream

log = logging.getLogger("gwfast")

IDLE, HEAD, CONNECTING, FORWARD, CLOSED = range(5)
P_BUFFER, P_UPSTREAM = 1, 2  # reasons to pause reading from the client
ALLOW = (("Allow", "GET, POST, DELETE"),)
POST = b"POST"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
TARGET_REST = b" HTTP/1.1\r\nHost: "  # after the path and query of a request line
HEALTHZ = plain_response(200, b'{"status":"ok"}')


class BufferPool:
    """Read buffers and head scanners of one worker, lent to a connection while it has bytes
    to read and taken back when it has none, so idle keep-alive connections and open streams
    hold neither (one event loop: no locks). A small stock of (buffer, view, scanner) is
    kept per configuration; taking and giving back are a list pop and append."""

    def __init__(self) -> None:
        self.lists: dict[tuple[int, int, int], list] = {}

    def free_list(self, size: int, max_headers: int, max_head_bytes: int) -> list:
        return self.lists.setdefault((size, max_headers, max_head_bytes), [])


KEEP_FREE = 64
# Bodies up to this size are copied into the write (one buffer, no writev, no view of the
# read buffer left with the transport); larger ones go out as views without copying.
COPY_MAX = 8192
SESSIONS_KEPT = 16384  # opened session ids kept per backend (then the map starts afresh)
BUFFERS = BufferPool()


class ClientConnection:  # an asyncio.BufferedProtocol (uvloop takes it by its get_buffer)
    __slots__ = (
        "gw",
        "loop",
        "clock",
        "send",
        "scanner",
        "size",
        "buf",
        "mv",
        "start",
        "end",
        "scan_pos",
        "state",
        "transport",
        "peer",
        "xff_line",
        "upstream",
        "ep",
        "backend",
        "body_left",
        "chunks",
        "request_done",
        "close_after",
        "session_token",
        "backend_sid",
        "paused",
        "deadline",
        "timer",
        "timer_at",
        "sent_head",
        "connect_task",
        "method",
        "target_rest",
        "head_rest",
        "std",
        "free",
        "lease",
        "host_ok",
        "host_ok_by",
        "route_path",
        "route_table",
        "route_backend",
        "settings_of",
        "max_body",
        "routes",
        "hosts",
        "origins",
        "pool",
        "timeouts",
        "t_idle",
        "t_header",
        "t_body",
        "t_response",
        "t_read",
        "place_key",
        "t0",
    )

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.loop = gw.loop
        # bound once: a method looked up on every call costs more than the call itself
        self.clock = gw.loop.time
        self.send = None  # the client transport's write
        self.pool = gw.pool  # one per worker, for good: reloads keep it
        # a request's timeouts and limits are those in force when it began (`_load_settings`)
        self.timeouts = None
        self.t_idle = self.t_header = self.t_body = self.t_response = self.t_read = 0.0
        lim = gw.limits
        self.scanner: HeadScanner | None = None
        self.place_key: bytes | None = None
        self.t0 = 0  # backend.hist.clock() when the request was routed (metrics)
        self.std = self.size = max(65536, 2 * lim.max_header_bytes)
        self.free = BUFFERS.free_list(self.std, lim.max_headers, lim.max_header_bytes)
        self.lease: tuple | None = None  # (buf, mv, scanner) as taken from `free`
        self.host_ok = b""  # the last Host value `host_ok_by` (gw.hosts) allowed
        self.host_ok_by = None
        self.route_path = b""  # the last path routed, in `route_table` (gw.routes)
        self.route_table = self.route_backend = None
        self.settings_of = None  # the snapshot the fields below come from (_load_settings)
        self.max_body = 0
        self.routes = {}
        self.hosts = self.origins = None
        # the read buffer is taken from the worker's pool when bytes arrive and given back
        # when none are pending: 10,000 idle streams hold no 64 KiB buffers
        self.buf: bytearray | None = None
        self.mv: memoryview | None = None
        self.start = self.end = self.scan_pos = 0
        self.state = IDLE
        self.transport: asyncio.Transport | None = None
        self.peer = b"unknown"
        self.xff_line = b""
        self.upstream: Upstream | None = None
        self.ep: Endpoint | None = None
        self.backend: Backend | None = None
        self.body_left = 0
        self.chunks: ChunkReader | None = None
        self.request_done = True
        self.close_after = False
        self.session_token: bytes | None = None
        self.backend_sid: bytes | None = None
        self.paused = 0
        self.deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.sent_head = False
        self.connect_task: asyncio.Task | None = None
        self.method = b""
        self.target_rest = b""
        self.head_rest = ()

    # ------------------------------------------------------------------ transport events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.send = transport.write  # type: ignore[attr-defined]
        self.gw.connections.add(self)
        self.gw.m[CONNECTIONS] += 1
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer = peer[0].encode()
        self.xff_line = b"X-Forwarded-For: " + self.peer + b"\r\n"
        self.transport.set_write_buffer_limits(high=256 * 1024)  # type: ignore[union-attr]
        self._load_settings()
        self._arm(self.clock() + self.t_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = CLOSED
        self.gw.connections.discard(self)
        self.gw.m[CONNECTIONS] -= 1
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._drop_upstream()  # the client left: the upstream request or stream ends now
        self._end_request()
        if self.scanner is not None:
            self.scanner.reset()  # a half-read head must not resume in the next connection
        self.start = self.end
        self._release_buffer()

    def eof_received(self) -> bool:
        return False  # a half-closed client is treated as gone (and closed)

    def get_buffer(self, sizehint: int) -> memoryview:
        end = self.end
        if end == 0:
            if self.mv is None:
                if self.free:
                    lease = self.lease = self.free.pop()  # given back as is: no tuple made
                    self.buf, self.mv, self.scanner = lease
                else:
                    lim = self.gw.limits
                    self.buf = bytearray(self.std)
                    self.mv = memoryview(self.buf)
                    self.scanner = HeadScanner(lim.max_headers, lim.max_header_bytes)
            return self.mv  # the common case between requests: no slice to allocate
        if end == len(self.buf):
            self._make_room(force=True)
        return self.mv[self.end :]

    def buffer_updated(self, nbytes: int) -> None:
        self.end += nbytes
        fresh = self.state == IDLE
        if fresh:
            self.state = HEAD
            self._load_settings()
        try:
            self._process()
        except Exception:  # a bug must cost this request only, never the worker
            self.internal_error()
            return
        if fresh and self.state == HEAD:  # armed only when the head did not come whole
            self._arm(self.clock() + self.t_header)

    def internal_error(self) -> None:
        log.exception("internal error while handling a request")
        self.fail(500, "internal gateway error; the gateway's log has the details", close=True)

    def pause_writing(self) -> None:  # the client reads slower than the endpoint writes
        up = self.upstream
        if up is not None and up.transport is not None:
            up.transport.pause_reading()

    def resume_writing(self) -> None:
        up = self.upstream
        if up is not None and up.transport is not None and not up.closed:
            up.transport.resume_reading()

    def pause_reading(self, reason: int) -> None:
        if not self.paused and self.transport is not None:
            self.transport.pause_reading()
        self.paused |= reason

    def resume_reading(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and self.transport is not None and self.state != CLOSED:
                self.transport.resume_reading()

    # ------------------------------------------------------------------ request side
    def _process(self) -> None:
        while True:
            st = self.state
            if st == HEAD:
                try:
                    head_end = self.scanner.scan(self.buf, self.start, self.end)
                except HeadError as e:
                    self.fail(e.status, e.message)
                    return
                if head_end == 0:
                    return
                self._on_head(head_end)
                if self.state == IDLE and self.start < self.end:
                    self.state = HEAD  # a pipelined request follows an answered one
                    self._load_settings()
                    continue
                if self.state not in (CONNECTING, FORWARD):
                    return
            elif st not in (CONNECTING, FORWARD):
                return
            if not self.request_done:
                self._body(self.clock())
            elif self.end - self.start > self.size // 2:
                self.pause_reading(P_BUFFER)  # pipelined bytes pile up: wait
            return

    def _advance(self) -> bool:
        """Take in the body bytes that arrived (validating chunked framing); False when the
        request failed."""
        if self.scan_pos < self.end and not self.request_done:
            if self.chunks is not None:
                try:
                    self.scan_pos = self.chunks.feed(self.buf, self.scan_pos, self.end)
                except TrailersTooLarge as e:
                    self.fail(431, str(e))
                    return False
                except ChunkError as e:
                    self.fail(400, f"malformed chunked request body: {e}")
                    return False
                except OverflowError:
                    self.fail(413, self._too_large())
                    return False
                done = self.chunks.done
            else:
                n = min(self.body_left, self.end - self.scan_pos)
                self.scan_pos += n
                self.body_left -= n
                done = self.body_left == 0
            if done:
                self.request_done = True
        return True

    def _body(self, now: float) -> None:
        if not self._advance():
            return
        if self.state == FORWARD:
            self._send_body()
            if self.request_done and not self.sent_head:
                self._arm(now + self.t_response)
        if not self.request_done:
            self._arm(now + self.t_body)
        if self.buf is not None and self.end == len(self.buf):
            self._make_room()

    def _send_body(self, head: tuple | None = None) -> None:
        """Write the validated body bytes after the parts of `head` (see `_head_rest`):
        copied with them into one new bytes object when small, else (in one writev) as a
        view of the read buffer."""
        up = self.upstream
        if up is None or up.transport is None:
            return
        n = self.scan_pos - self.start
        if n > 0:
            if n <= COPY_MAX:
                if head is None:
                    up.send(self.scanner.span(self.buf, self.start, self.scan_pos))
                else:
                    up.send(self.scanner.assemble(head, self.buf, self.start, self.scan_pos))
            elif head is None:
                up.send(self.mv[self.start : self.scan_pos])
            else:
                up.transport.writelines(
                    (
                        self.scanner.assemble(head, self.buf, self.start, self.start),
                        self.mv[self.start : self.scan_pos],
                    )
                )
            self.start = self.scan_pos
            if n > COPY_MAX and up.transport.get_write_buffer_size():
                self._new_buffer()  # the transport holds a view of this one
        elif head is not None:
            up.send(self.scanner.assemble(head, self.buf, self.start, self.start))
        if self.start == self.end:
            self.start = self.end = self.scan_pos = 0
            self.resume_reading(P_BUFFER)
            if self.request_done:
                self._release_buffer()

    def _release_buffer(self) -> None:
        """Give the read buffer back while no bytes are pending in it (it is never one a
        transport still holds: `_send_body` switches away from those)."""
        buf = self.buf
        if buf is not None and self.start == self.end:
            if len(buf) == self.std and len(self.free) < KEEP_FREE:
                lease = self.lease
                if lease is None or lease[0] is not buf:
                    lease = (buf, self.mv, self.scanner)
                self.free.append(lease)
            self.buf = self.mv = self.scanner = None
            self.lease = None
            self.start = self.end = self.scan_pos = 0
            self.size = self.std

    def _new_buffer(self) -> None:
        tail = self.mv[self.start : self.end]
        buf = bytearray(self.size)
        mv = memoryview(buf)
        buf[: len(tail)] = tail
        self.scan_pos -= self.start
        self.end -= self.start
        self.start = 0
        self.buf = buf
        self.mv = mv

    def _make_room(self, force: bool = False) -> None:
        if self.start > 0:
            n = self.end - self.start
            self.buf[:n] = self.mv[self.start : self.end]
            self.scan_pos -= self.start
            self.start, self.end = 0, n
        elif force:  # read before a pause took effect: never hand out an empty buffer
            self.size *= 2
            self._new_buffer()
        else:
            self.pause_reading(P_BUFFER)

    def _on_head(self, head_end: int) -> None:
        sc = self.scanner
        buf = self.buf
        gw = self.gw
        # values that repeat are the objects already held (no allocation, same identity)
        method = sc.span_as(buf, sc.method_start, sc.method_end, POST)
        target = sc.span_as(buf, sc.target_start, sc.target_end, self.route_path)
        if target[0] == 0x2F:  # "/...": the origin form (the scanner refuses empty targets)
            qs = sc.query_start - sc.target_start if sc.query_start >= 0 else -1
        else:
            target = _origin_form(target)
            qs = target.find(b"?")
        path = target if qs < 0 else target[:qs]
        self.close_after = (
            sc.conn_close or (sc.http_minor == 0 and not sc.conn_keep_alive) or gw.draining
        )  # a draining worker answers, then closes
        self.start = self.scan_pos = head_end
        self.chunks = None
        self.body_left = 0
        if sc.chunked:
            lim = gw.limits
            self.chunks = ChunkReader(
                lim.max_body_bytes,
                max_trailers=lim.max_headers,
                max_trailer_bytes=lim.max_header_bytes,
            )
        elif sc.content_length > 0:
            self.body_left = sc.content_length
        self.request_done = self.chunks is None and self.body_left == 0
        if not target:  # an absolute form without http(s):// (the scanner refused "#")
            self.fail(
                400,
                "invalid request target: send an absolute path such as /name/mcp (RFC 9112 §3.2)",
            )
            return
        if sc.host_start < 0:
            if sc.http_minor == 1:
                self.fail(400, "missing Host header (required by HTTP/1.1, RFC 9112 §3.2)")
                return
            host = b""
        else:
            host = sc.span_as(buf, sc.host_start, sc.host_end, self.host_ok)
            hosts = self.hosts
            if host != self.host_ok or hosts is not self.host_ok_by:  # a client's Host
                allowed = hosts.allows(host)  # rarely changes: its last pass is kept
                if allowed is None:
                    self.fail(400, "invalid Host header: expected host[:port]")
                    return
                if not allowed:
                    self.fail(
                        403,
                        f"Host {host.decode('latin-1')!r} is not allowed: add it to "
                        "allowed_hosts (DNS-rebinding protection)",
                    )
                    return
                self.host_ok, self.host_ok_by = host, hosts
        if sc.origin_start >= 0:
            origin = sc.span(buf, sc.origin_start, sc.origin_end)
            if not self.origins.allows(origin, host):
                self.fail(
                    403,
                    f"Origin {origin.decode('latin-1')!r} is not allowed: add it "
                    "to allowed_origins (DNS-rebinding protection)",
                )
                return
        routes = self.routes
        if path == self.route_path and routes is self.route_table:
            backend = self.route_backend  # a connection mostly asks one backend
        else:
            backend = routes.get(path)
            if backend is None:
                self._local(method, path)
                return
            self.route_path, self.route_table, self.route_backend = path, routes, backend
        self.backend = backend  # from here on, errors are counted for this backend
        self.t0 = backend.hist.clock()  # the request's duration counts from its routing
        if method != b"POST" and method != b"GET" and method != b"DELETE":
            self.fail(
                405,
                f"method {method.decode('latin-1')} is not allowed on an MCP "
                "endpoint: use POST, GET or DELETE",
                headers=ALLOW,
            )
            return
        if sc.content_length > self.max_body:
            self.fail(413, self._too_large())
            return
        if sc.expect_start >= 0 and not self.request_done:
            if sc.span(buf, sc.expect_start, sc.expect_end).lower() == b"100-continue":
                self.transport.write(CONTINUE)  # type: ignore[union-attr]
        ep = None
        self.session_token = self.backend_sid = None
        if backend.session_affinity and sc.session_start >= 0:
            token = sc.span(buf, sc.session_start, sc.session_end)
            sessions = backend.sessions
            known = sessions.get(token)  # (endpoint, backend session id)
            if known is None:
                known = self._open_session(backend, token)
                if known is None:
                    return  # answered 404
            ep = known[0]
            self.session_token, self.backend_sid = token, known[1]
        self.method = method
        # read now: by a connect retry the head may be gone from the buffer
        header = backend.placement_header
        self.place_key = self._header_value(header) if header is not None else None
        self.target_rest = TARGET_REST if qs < 0 else target[qs:] + TARGET_REST
        self.head_rest = self._head_rest(host)
        if ep is None:
            ep = self._choose(backend, None)
            if ep is None:
                self.fail(503, backend.unavailable_message())
                return
        self._dispatch(ep)

    def _open_session(self, backend: Backend, token: bytes) -> tuple | None:
        """A session id this snapshot's backend has not seen: open it (AES-GCM) and find its
        endpoint, kept in `backend.sessions`; None once answered 404. A reload publishes new
        Backend objects, so a retired key or a removed endpoint is never served from there."""
        opened = self.gw.sealer.open(backend.name_b, token)
        if opened is None:
            self.fail(
                404,
                "session not found: this Mcp-Session-Id was not issued by this "
                "gateway for this backend (or its key was retired); start a new "
                "session with initialize",
            )
            return None
        ep = backend.by_ident.get(opened[0])
        if ep is None:
            self.fail(
                404,
                "session not found: its endpoint is no longer configured; start "
                "a new session with initialize",
            )
            return None
        known = (ep, opened[1])
        if len(backend.sessions) >= SESSIONS_KEPT:
            backend.sessions.clear()
        backend.sessions[token] = known
        return known

    def _head_rest(self, host: bytes) -> tuple:
        """The head's header lines, as parts `_send_body` joins with the rest in one copy.
        The kept lines are the part None, copied from the read buffer by that join, unless
        the buffer may change first (`_keep_head`)."""
        sc = self.scanner
        kept = None
        if sc.conn_other:
            kept = drop_connection_listed(
                sc.kept(self.buf), self._header_value(b"connection") or b""
            )
        if sc.xff_start >= 0:
            xff = b"".join(
                (
                    b"X-Forwarded-For: ",
                    sc.span(self.buf, sc.xff_start, sc.xff_end),
                    b", ",
                    self.peer,
                    b"\r\n",
                )
            )
        else:
            xff = self.xff_line
        sid = self.backend_sid
        return (  # the empty pieces cost nothing
            kept,
            b"" if sid is None else b"Mcp-Session-Id: ",
            b"" if sid is None else sid,
            b"" if sid is None else b"\r\n",
            xff,
            b"X-Forwarded-Proto: http\r\nX-Forwarded-Host: ",
            host,
            b"\r\n\r\n",
        )

    def _keep_head(self) -> None:
        """Copy the kept lines into `head_rest` while the buffer still holds them."""
        rest = self.head_rest
        if rest[0] is None:
            self.head_rest = (self.scanner.kept(self.buf), *rest[1:])

    def _header_value(self, name: bytes) -> bytes | None:
        """Slow path: the first value of any header, found in the raw head."""
        sc = self.scanner
        return header_value(sc.span(self.buf, sc.method_start, self.start), name)

    def _choose(self, backend: Backend, exclude: set[int] | None) -> Endpoint | None:
        if not backend.session_affinity:
            return backend.pick_least_loaded(exclude)
        # principal and tenant placement take their key from authentication (not yet
        # configured): until then they place like random
        return backend.place(self.place_key, exclude)

    def _dispatch(self, ep: Endpoint) -> None:
        self.ep = ep
        ep.outstanding += 1
        now = self.clock()
        up = self.pool.acquire(ep, now)
        if up is not None:
            self._attach(up, now)
        else:
            self.state = CONNECTING
            self._keep_head()  # body bytes may move the buffer before the connection is up
            self.connect_task = self.loop.create_task(self._connect())
            if not self.request_done:
                self._body(now)

    async def _connect(self) -> None:
        try:
            await self._connect_any()
        except asyncio.CancelledError:
            raise
        except Exception:
            self.internal_error()

    async def _connect_any(self) -> None:
        gw = self.gw
        tried: set[int] = set()
        while True:
            ep = self.ep
            assert ep is not None and self.backend is not None
            try:
                up = await gw.pool.connect(ep, gw.timeouts.connect)
            except (TimeoutError, OSError) as e:
                if self.state == CLOSED:
                    return
                why = "timed out" if isinstance(e, asyncio.TimeoutError) else (e.strerror or str(e))
                b = self.backend
                b.m[b.m_base + CONNECT_FAILURES] += 1
                if ep.healthy:
                    log.warning("endpoint %s ejected: connect failed (%s)", ep.url, why)
                    b.set_health(ep, False)  # passive check; active checks restore
                    b.m[b.m_base + EJECTIONS] += 1
                self._end_request()
                if self.session_token is not None:
                    self.fail(
                        404,
                        "session not found: its endpoint is unavailable; start a new "
                        "session with initialize",
                    )
                    return
                tried.add(ep.index)
                nxt = self._choose(self.backend, tried)
                if nxt is None:
                    self.fail(
                        502,
                        f"could not connect to any endpoint of backend "
                        f"{self.backend.name!r} (last: {why})",
                    )
                    return
                self.ep = nxt
                nxt.outstanding += 1
                continue
            finally:
                self.connect_task = None
            if self.state == CLOSED:
                up.close()
                return
            self._attach(up, self.clock())
            return

    def _attach(self, up: Upstream, now: float) -> None:
        ep = self.ep
        assert ep is not None and up.transport is not None
        self.state = FORWARD
        self.upstream = up
        self.sent_head = False
        up.begin(self)
        if not self._advance():
            return
        self._send_body(
            (self.method, b" ", ep.path, self.target_rest, ep.authority, b"\r\n", self.head_rest)
        )
        self._body(now)

    def _local(self, method: bytes, path: bytes) -> None:
        """Routes the gateway answers itself."""
        if path == b"/healthz" or path == b"/readyz":
            if method != b"GET" and method != b"HEAD":
                self.fail(405, "use GET", headers=(("Allow", "GET, HEAD"),))
                return
            if path == b"/readyz" and not (self.gw.ready and self.gw.any_healthy()):
                self.fail(503, "not ready: no healthy endpoint yet", close=False)
                return
            self._answer(
                HEALTHZ if path == b"/healthz" else plain_response(200, b'{"status":"ready"}')
            )
            return
        name = path.split(b"/")[1].decode("latin-1") if path.count(b"/") >= 2 else ""
        if path.endswith(b"/mcp") and name:
            self.fail(
                404, f"unknown backend {name!r}: use /{{backend}}/mcp with a configured backend"
            )
        else:
            self.fail(404, "no route for this path: MCP backends are served at /{backend}/mcp")

    def _answer(self, response: bytes) -> None:
        if not self.request_done:  # a body we did not read: drop the connection after
            self.close_after = True
        self.gw.m[UNROUTED + CODE_INDEX[200]] += 1
        self.transport.write(response)  # type: ignore[union-attr]
        self._request_finished(self.clock())

    # ------------------------------------------------------------------ response side
    def upstream_activity(self) -> float:
        """Bytes came from the endpoint: the silence deadline moves. Returns the time now,
        which the rest of that read's handling uses."""
        now = self.clock()
        self._arm(now + self.t_read)
        return now

    def session_for_client(self, value: bytes) -> bytes:
        backend = self.backend
        if backend is None or not backend.session_affinity or self.ep is None:
            return value
        if value == self.backend_sid and self.session_token is not None:
            return self.session_token
        backend.m[backend.m_base + SESSIONS] += 1  # a new session: its id sealed anew
        return self.gw.sealer.seal(backend.name_b, self.ep.ident, value)

    def response_head(self, head: bytes, body) -> None:
        """The response head (with the body bytes that came with it, when small), and then
        in the same writev `body`, a view of the rest, when not None."""
        self.sent_head = True  # its deadline: `upstream_activity`, called for this read
        if body is None:
            self.send(head)
        else:
            self.transport.writelines((head, body))  # type: ignore[union-attr]

    def write_upstream(self, data: bytes) -> None:
        self.send(data)

    def response_done(self, up: Upstream, reusable: bool, now: float) -> None:
        self.upstream = None
        # the duration histogram: a C call (gwfast._native.hist)
        self.backend.hist.observe(up.status, self.t0)  # type: ignore[union-attr]
        if reusable and self.request_done:
            self.pool.release(up, now)
        else:
            up.close()
            if not self.request_done:  # the endpoint answered before the body ended
                self.close_after = True
        self._end_request()
        self._request_finished(now)

    def upstream_failed(self, up: Upstream, why: str, up_state: int) -> None:
        self.upstream = None
        self._end_request()
        if self.state == CLOSED:
            return
        if up_state == UP_BODY or self.sent_head:
            # the head is out: closing without the final chunk is how the client learns
            # that the body is incomplete
            if self.sent_head:
                self.backend.hist.observe(up.status, self.t0)  # type: ignore[union-attr]
            self._close()
        else:
            self.fail(502, f"bad gateway: {why} before answering")

    # ------------------------------------------------------------------ endings
    def _request_finished(self, now: float) -> None:
        self.sent_head = False
        self.session_token = self.backend_sid = None
        self.backend = None  # errors before the next request's routing count for no backend
        if self.state == CLOSED:
            return
        if self.close_after:
            self._close()
            return
        self.state = IDLE
        self._arm(now + self.t_idle)
        if self.start == self.end:
            self._release_buffer()
        self.resume_reading(P_BUFFER | P_UPSTREAM)
        if self.start < self.end:
            self.state = HEAD
            self._load_settings()
            self._arm(now + self.t_header)
            self.loop.call_soon(self._process)

    def _end_request(self) -> None:
        ep = self.ep
        if ep is not None:
            ep.outstanding -= 1
            self.ep = None

    def _drop_upstream(self) -> None:
        up = self.upstream
        if up is not None:
            self.upstream = None
            if self.sent_head:  # the response ends here, cut short (a client leaving a stream)
                self.backend.hist.observe(up.status, self.t0)  # type: ignore[union-attr]
            up.close()
        task = self.connect_task
        if task is not None:
            self.connect_task = None
            task.cancel()

    def close(self) -> None:
        """Close now, whatever is in flight (a worker's drain and stop)."""
        self._close()

    def _close(self) -> None:
        self.state = CLOSED
        self._drop_upstream()
        self._end_request()
        if self.transport is not None:
            self.transport.close()

    def fail(
        self,
        status: int,
        message: str,
        *,
        close: bool | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """Answer an error the gateway found itself. The connection is closed after framing
        errors and timeouts (the byte stream can no longer be trusted) and whenever part of
        the request body is still unread; otherwise it stays open for the next request."""
        if close is None:
            close = status in (400, 408, 413, 431)
        self._drop_upstream()
        self._end_request()
        if self.state == CLOSED or self.transport is None:
            return
        if self.sent_head:
            self._close()
            return
        b = self.backend
        if b is None:
            self.gw.m[UNROUTED + CODE_INDEX[status]] += 1
        else:
            b.m[b.m_base + CODES_AT + CODE_INDEX[status]] += 1
        close = close or not self.request_done or self.close_after
        self.transport.write(error_response(status, message, close=close, headers=headers))
        if close:
            self._close()
        else:
            self._request_finished(self.clock())

    def _too_large(self) -> str:
        return (
            f"request body over the limit of {self.gw.limits.max_body_bytes} bytes "
            "(limits.max_body_bytes)"
        )

    # ------------------------------------------------------------------ timers
    def _load_settings(self) -> None:
        gw = self.gw
        if gw.snapshot is not self.settings_of:  # a reload published new ones
            self.settings_of = gw.snapshot
            t = self.timeouts = gw.timeouts
            self.t_idle, self.t_header, self.t_body = t.idle, t.header_read, t.body_read
            self.t_response, self.t_read = t.response_header, t.upstream_read
            self.max_body = gw.limits.max_body_bytes
            self.routes, self.hosts, self.origins = gw.routes, gw.hosts, gw.origins

    def _arm(self, deadline: float) -> None:
        """One timer per connection; moving the deadline later costs no reschedule."""
        self.deadline = deadline
        if self.timer is None or deadline < self.timer_at:
            if self.timer is not None:
                self.timer.cancel()
            self.timer_at = deadline
            self.timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if self.state == CLOSED:
            return
        if self.clock() < self.deadline:
            self.timer_at = self.deadline
            self.timer = self.loop.call_at(self.deadline, self._on_timer)
            return
        t = self.timeouts
        st = self.state
        if st == IDLE:
            self._close()
        elif st == HEAD:
            self.fail(
                408, f"request head not complete within {t.header_read:g}s (timeouts.header_read)"
            )
        elif not self.request_done:
            self.fail(408, f"request body stalled for over {t.body_read:g}s (timeouts.body_read)")
        elif st == CONNECTING:
            self._arm(self.clock() + t.connect)  # the connect attempt has its own limit
        elif not self.sent_head:
            self.fail(
                504,
                f"the endpoint sent no response within {t.response_header:g}s "
                "(timeouts.response_header)",
            )
        else:
            log.info(
                "closing a response silent for over %gs (timeouts.upstream_read)", t.upstream_read
            )
            self._close()


def _origin_form(target: bytes) -> bytes:
    """RFC 9112 §3.2.2: a server must accept the absolute form; route on its path. Empty
    when the target is neither form (answered with 400)."""
    low = target[:8].lower()
    if low.startswith(b"http://") or low.startswith(b"https://"):
        rest = target[target.index(b"//") + 2 :]
        slash = rest.find(b"/")
        return rest[slash:] if slash >= 0 else b"/"
    return b""
