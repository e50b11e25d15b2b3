"""A fault-injecting TCP proxy for adversity tests (after asyncpg's ``_testbase/fuzzer.py``).

Put it between the gateway and a backend: point the gateway's endpoint at ``proxy.port`` and
the proxy at the backend. It forwards bytes unchanged until a test asks for a fault:

- ``stall(direction)``: stop forwarding (bytes keep being read and are held, so a peer that
  closes is still seen); ``pass_through()`` delivers what was held.
- ``reset_after(n)``: RST the client side (SO_LINGER 0, then close) once ``n`` bytes of the
  response direction have been forwarded, e.g. mid-SSE.
- ``slow_read()``: read from one side at most ``chunk`` bytes every ``delay`` seconds, so the
  writer on that side meets TCP backpressure (give ``rcvbuf`` to make kernel buffers small).
- ``reset_now()``: RST every open connection; ``close_now()``: close them cleanly (FIN).
- ``refuse()`` / ``accept()``: close and reopen the listening socket on the same port
  (connections are refused meanwhile); ``blackhole()``: connections hang unanswered instead.

A fault may wait for a ``trigger``: bytes that must pass from the client first (e.g.
``b"tools/call"``), so health checks and other requests on other connections are untouched.
"Client" is whoever connects to the proxy (the gateway); "target" is the backend. ``up`` is
client -> target (requests), ``down`` is target -> client (responses).

The proxy runs its own asyncio event loop in a thread, so tests drive it with plain calls
from any thread or event loop; each call returns once the fault is in force. Every
connection is kept as a `ConnStats` record, so a test can check that the gateway closed the
connections it opened (``open_connections``, ``find(marker)``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import itertools
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal

UP = "up"
DOWN = "down"
Direction = Literal["up", "down", "both"]

_READ_SIZE = 65536
_RECORD_CAP = 8 * 1024 * 1024  # bytes kept per direction and connection for find()


def _dirs(direction: Direction) -> frozenset[str]:
    if direction == "both":
        return frozenset((UP, DOWN))
    if direction not in (UP, DOWN):
        raise ValueError(f"direction must be 'up', 'down' or 'both', not {direction!r}")
    return frozenset((direction,))


def rst(transport: asyncio.BaseTransport) -> None:
    """Close with a TCP RST: SO_LINGER on with a zero timeout, then close."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


@dataclasses.dataclass(frozen=True)
class Fault:
    """What the proxy does to the bytes of armed connections."""

    kind: Literal["pass", "stall", "reset", "slow"] = "pass"
    directions: frozenset[str] = frozenset()
    after: int = 0  # reset: bytes forwarded in `directions` before the RST
    trigger: bytes | None = None  # arm a connection once these bytes went up through it
    chunk: int = 1024  # slow: bytes per read
    delay: float = 0.05  # slow: pause after each read
    settle: float = 0.1  # reset: pause between the last forwarded byte and the RST


@dataclasses.dataclass(frozen=True)
class ConnStats:
    """A snapshot of one proxied connection."""

    id: int
    client_open: bool  # the client (gateway) has neither closed nor sent EOF
    target_open: bool
    bytes_up: int
    bytes_down: int
    max_read_up: int  # the largest single read from the client
    max_read_down: int  # the largest single read from the target
    max_faulted_read_up: int  # the same, among reads made while a fault was in force
    max_faulted_read_down: int
    reset_by_proxy: bool
    opened_at: float
    closed_at: float | None  # when the client side closed (monotonic)


class _Side(asyncio.BufferedProtocol):
    """One socket of a proxied connection; bytes read here go `direction` (up or down)."""

    def __init__(self, conn: _Conn, direction: str) -> None:
        self.conn = conn
        self.direction = direction
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray(_READ_SIZE)
        self.view = memoryview(self.buf)
        self.pauses: set[str] = set()  # why reading is paused: connecting, backpressure, ...
        self.eof = False
        self.lost = False

    # reading side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.conn.side_made(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view[: self.conn.read_size(self.direction)]

    def buffer_updated(self, nbytes: int) -> None:
        self.conn.on_data(self.direction, bytes(self.view[:nbytes]))

    def eof_received(self) -> bool:
        self.eof = True
        self.conn.on_eof(self.direction)
        return True  # keep the socket for writing: half-close is forwarded as half-close

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.conn.on_lost(self, exc)

    # writing side: our write buffer filled, so stop reading from the peer side
    def pause_writing(self) -> None:
        self.conn.peer_of(self).pause("backpressure")

    def resume_writing(self) -> None:
        self.conn.peer_of(self).resume("backpressure")

    def pause(self, reason: str) -> None:
        if not self.pauses and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
        self.pauses.add(reason)

    def resume(self, reason: str) -> None:
        if reason not in self.pauses:
            return
        self.pauses.discard(reason)
        if not self.pauses and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    @property
    def writable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()


class _Conn:
    def __init__(self, proxy: FaultProxy, cid: int) -> None:
        self.proxy = proxy
        self.loop = proxy._loop
        self.id = cid
        self.client = _Side(self, UP)
        self.target = _Side(self, DOWN)
        self.client.pauses.add("connecting")
        self.connect_task: asyncio.Task[None] | None = None
        self.logs = {UP: bytearray(), DOWN: bytearray()}
        self.counts = {UP: 0, DOWN: 0}
        self.max_read = {UP: 0, DOWN: 0}
        self.max_faulted_read = {UP: 0, DOWN: 0}
        self.held: dict[str, list[bytes]] = {UP: [], DOWN: []}
        self.held_eof = {UP: False, DOWN: False}
        self.client_open = True
        self.reset_by_proxy = False
        self.dead = False  # torn down: nothing more is forwarded
        self.opened_at = time.monotonic()
        self.closed_at: float | None = None
        # fault state, renewed when the proxy's fault changes
        self.gen = -1
        self.armed = False
        self.tail = b""
        self.fault_count = 0

    def stats(self) -> ConnStats:
        return ConnStats(
            id=self.id,
            client_open=self.client_open,
            target_open=self.target.transport is not None and not self.target.lost,
            bytes_up=self.counts[UP],
            bytes_down=self.counts[DOWN],
            max_read_up=self.max_read[UP],
            max_read_down=self.max_read[DOWN],
            max_faulted_read_up=self.max_faulted_read[UP],
            max_faulted_read_down=self.max_faulted_read[DOWN],
            reset_by_proxy=self.reset_by_proxy,
            opened_at=self.opened_at,
            closed_at=self.closed_at,
        )

    def peer_of(self, side: _Side) -> _Side:
        return self.target if side is self.client else self.client

    def out_side(self, direction: str) -> _Side:
        return self.target if direction == UP else self.client

    def in_side(self, direction: str) -> _Side:
        return self.client if direction == UP else self.target

    # ----- set-up -----

    def side_made(self, side: _Side) -> None:
        if side is self.client:
            assert side.transport is not None
            side.transport.pause_reading()  # until the target is connected
            self.connect_task = self.loop.create_task(self._connect())
        else:
            self.client.resume("connecting")

    async def _connect(self) -> None:
        p = self.proxy
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if p.rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, p.rcvbuf)
        try:
            await asyncio.wait_for(
                self.loop.sock_connect(sock, (p.target_host, p.target_port)), p.connect_timeout
            )
            await self.loop.create_connection(lambda: self.target, sock=sock)
        except (TimeoutError, OSError):
            sock.close()
            self.reset()  # the target is not there: the client sees a reset
        except asyncio.CancelledError:
            sock.close()
            raise

    # ----- the fault in force -----

    def fault(self) -> Fault:
        p = self.proxy
        if self.gen != p._gen:
            self.gen = p._gen
            self.armed = p._fault.trigger is None
            self.tail = b""
            self.fault_count = 0
        return p._fault

    def active(self, direction: str) -> Fault | None:
        f = self.fault()
        if f.kind != "pass" and self.armed and direction in f.directions:
            return f
        return None

    def read_size(self, direction: str) -> int:
        f = self.active(direction)
        return f.chunk if f is not None and f.kind == "slow" else _READ_SIZE

    def _see_trigger(self, data: bytes) -> None:
        f = self.fault()
        if self.armed or f.trigger is None:
            return
        window = self.tail + data
        if f.trigger in window:
            self.armed = True
            self.fault_count = 0
        self.tail = window[-(len(f.trigger) - 1) :] if len(f.trigger) > 1 else b""

    # ----- data -----

    def on_data(self, direction: str, data: bytes) -> None:
        if self.dead:
            return
        self.counts[direction] += len(data)
        self.max_read[direction] = max(self.max_read[direction], len(data))
        if self.active(direction) is not None:  # armed before this read
            self.max_faulted_read[direction] = max(self.max_faulted_read[direction], len(data))
        log = self.logs[direction]
        if self.proxy.record and len(log) < _RECORD_CAP:
            log += data[: _RECORD_CAP - len(log)]
        if direction == UP:
            self._see_trigger(data)
        f = self.active(direction)
        if f is None:
            self._forward(direction, data)
        elif f.kind == "stall":
            self.held[direction].append(data)
        elif f.kind == "slow":
            self._forward(direction, data)
            src = self.in_side(direction)
            src.pause("slow")
            self.loop.call_later(f.delay, src.resume, "slow")
        elif f.kind == "reset":
            left = f.after - self.fault_count
            if len(data) < left:
                self.fault_count += len(data)
                self._forward(direction, data)
            else:
                self.fault_count = f.after
                self._forward(direction, data[:left])
                self._reset_soon(f.settle)

    def _forward(self, direction: str, data: bytes) -> None:
        if self.held[direction]:  # keep order: what was held goes first
            self.flush(direction)
        out = self.out_side(direction)
        if data and out.writable:
            assert out.transport is not None
            out.transport.write(data)

    def on_eof(self, direction: str) -> None:
        if direction == UP:
            self._client_closed()
        if self.active(direction) is not None and self.fault().kind == "stall":
            self.held_eof[direction] = True
            return
        self._forward_eof(direction)

    def _forward_eof(self, direction: str) -> None:
        if self.held[direction]:
            self.flush(direction)
        out = self.out_side(direction)
        if out.writable:
            assert out.transport is not None
            try:
                out.transport.write_eof()
            except OSError:  # the peer is gone already (e.g. it reset)
                out.transport.abort()
        if self.client.eof and self.target.eof:
            self.close()

    def flush(self, direction: str) -> None:
        """Deliver held bytes (and a held EOF) once the direction is no longer stalled."""
        held, self.held[direction] = self.held[direction], []
        out = self.out_side(direction)
        if held and out.writable:
            assert out.transport is not None
            out.transport.write(b"".join(held))
        if self.held_eof[direction]:
            self.held_eof[direction] = False
            self._forward_eof(direction)

    def refresh(self) -> None:
        """The proxy's fault changed: release what the new fault no longer holds."""
        self.fault()
        for direction in (UP, DOWN):
            f = self.active(direction)
            if f is None or f.kind != "stall":
                self.flush(direction)
            if f is None or f.kind != "slow":
                self.in_side(direction).resume("slow")

    # ----- closing -----

    def _client_closed(self) -> None:
        if self.client_open:
            self.client_open = False
            self.closed_at = time.monotonic()

    def on_lost(self, side: _Side, exc: Exception | None) -> None:
        if side is self.client:
            self._client_closed()
        peer = self.peer_of(side)
        if exc is not None and peer.writable:
            assert peer.transport is not None
            rst(peer.transport)  # a reset travels on as a reset
        else:
            self.close()
        if self.client.lost and (self.target.lost or self.target.transport is None):
            self._finish()

    def _reset_soon(self, settle: float) -> None:
        self.dead = True
        for side in (self.client, self.target):
            side.pause("reset")
        self.loop.call_later(settle, self.reset)

    def reset(self) -> None:
        """RST the client side and drop the target side."""
        self.dead = True
        self.reset_by_proxy = True
        self._client_closed()
        if self.connect_task is not None and not self.connect_task.done():
            self.connect_task.cancel()
        for side in (self.client, self.target):
            if side.writable:
                assert side.transport is not None
                rst(side.transport)

    def close(self) -> None:
        """Close both sides after what is already written (no RST)."""
        for side in (self.client, self.target):
            if side.writable:
                assert side.transport is not None
                side.transport.close()
        if self.connect_task is not None and not self.connect_task.done():
            self.connect_task.cancel()

    def _finish(self) -> None:
        self._client_closed()
        self.proxy._open.discard(self)


class FaultProxy:
    """A TCP proxy to ``target_host:target_port`` listening on ``listen_host:port``.

    ``port=0`` picks a free port (``.port`` after ``start()``). ``rcvbuf`` sets SO_RCVBUF on
    both sides, so ``slow_read`` makes writers wait instead of filling kernel buffers.
    """

    def __init__(
        self,
        target_port: int,
        *,
        target_host: str = "127.0.0.1",
        listen_host: str = "127.0.0.1",
        port: int = 0,
        rcvbuf: int | None = None,
        connect_timeout: float = 3.0,
        record: bool = True,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.listen_host = listen_host
        self.port = port
        self.rcvbuf = rcvbuf
        self.connect_timeout = connect_timeout
        self.record = record
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # start()
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._hole: list[socket.socket] = []  # blackhole(): listener and queue fillers
        self._fault = Fault()
        self._gen = 0
        self._ids = itertools.count(1)
        self._all: list[_Conn] = []
        self._open: set[_Conn] = set()

    # ----- life cycle -----

    def start(self) -> FaultProxy:
        # a plain selector loop, whatever the caller's policy (uvloop): raw socket options work
        self._loop = asyncio.SelectorEventLoop()
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name=f"faultproxy-{self.target_port}", daemon=True
        )
        self._thread.start()
        ready.wait(10)
        self._call(self._listen)
        return self

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(ready.set)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def stop(self) -> None:
        self._close_hole()
        if self._thread is None:
            return
        with contextlib.suppress(RuntimeError):
            self._call(self._shutdown)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _shutdown(self) -> None:
        self._close_listener()
        for conn in list(self._open):
            conn.close()
        await asyncio.sleep(0.05)
        for conn in list(self._open):
            conn.reset()
        tasks = [t for t in asyncio.all_tasks(self._loop) if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.02)  # let connection_lost callbacks run before the loop stops

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run fn(*args) (a function or a coroutine function) on the proxy's loop; wait."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("FaultProxy methods are called from outside its thread")

        async def run() -> Any:
            res = fn(*args)
            return await res if asyncio.iscoroutine(res) else res

        fut: concurrent.futures.Future[Any] = asyncio.run_coroutine_threadsafe(run(), self._loop)
        return fut.result(10)

    async def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        try:
            sock.bind((self.listen_host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        self._server = await self._loop.create_server(self._accept_one, sock=sock, backlog=512)

    def _accept_one(self) -> _Side:
        conn = _Conn(self, next(self._ids))
        self._all.append(conn)
        self._open.add(conn)
        return conn.client

    def _close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    @property
    def address(self) -> tuple[str, int]:
        return (self.listen_host, self.port)

    def url(self, path: str = "/mcp") -> str:
        return f"http://{self.listen_host}:{self.port}{path}"

    # ----- faults -----

    def _set(self, fault: Fault) -> None:
        def apply() -> None:
            self._fault = fault
            self._gen += 1
            for conn in list(self._open):
                conn.refresh()

        self._call(apply)

    def pass_through(self) -> None:
        """Forward everything; release what a stall held."""
        self._set(Fault())

    def stall(self, direction: Direction = "both", *, trigger: bytes | None = None) -> None:
        """Stop forwarding in `direction` (bytes are read and held until pass_through())."""
        self._set(Fault("stall", _dirs(direction), trigger=trigger))

    def reset_after(
        self,
        n_bytes: int,
        *,
        direction: Direction = "down",
        trigger: bytes | None = None,
        settle: float = 0.1,
    ) -> None:
        """RST the client side once `n_bytes` more went `direction` (default: responses).

        Counting starts now for open connections (or when `trigger` went up). The `n_bytes`
        are forwarded; `settle` seconds later (so the client has read them) the RST follows.
        With 0 the RST comes when the first byte would be forwarded.
        """
        if n_bytes < 0:
            raise ValueError("n_bytes must be >= 0")
        self._set(Fault("reset", _dirs(direction), after=n_bytes, trigger=trigger, settle=settle))

    def slow_read(
        self,
        *,
        direction: Direction = "up",
        chunk: int = 1024,
        delay: float = 0.05,
        trigger: bytes | None = None,
    ) -> None:
        """Read at most `chunk` bytes every `delay` s; `up` reads from the client slowly."""
        if chunk < 1 or delay < 0:
            raise ValueError("chunk must be >= 1 and delay >= 0")
        self._set(Fault("slow", _dirs(direction), chunk=chunk, delay=delay, trigger=trigger))

    def reset_now(self) -> int:
        """RST every open connection now; returns how many."""

        def do() -> int:
            conns = list(self._open)
            for conn in conns:
                conn.reset()
            return len(conns)

        return self._call(do)

    def refuse(self, *, reset_existing: bool = True) -> None:
        """Close the listening socket: new connections are refused (as by a dead backend)."""

        def do() -> None:
            self._close_listener()
            if reset_existing:
                for conn in list(self._open):
                    conn.reset()

        self._call(do)

    def blackhole(self, *, reset_existing: bool = True) -> None:
        """Keep the port but complete no handshake: connects hang until the connecting side
        gives up, as with a host that is down or firewalled (its SYNs are dropped).

        A listening socket with a backlog of 0 whose accept queue is filled and never
        drained; accept() undoes it.
        """
        self.refuse(reset_existing=reset_existing)
        hole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        hole.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        hole.bind((self.listen_host, self.port))
        hole.listen(0)
        fillers: list[socket.socket] = []
        for _ in range(16):
            f = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            f.setblocking(False)
            f.connect_ex((self.listen_host, self.port))
            _, writable, _ = select.select([], [f], [], 0.3)
            if not writable:  # this SYN was dropped: the queue is full
                f.close()
                break
            fillers.append(f)
        else:
            hole.close()
            for f in fillers:
                f.close()
            raise RuntimeError("could not fill the accept queue of the blackhole socket")
        self._hole = [hole, *fillers]

    def accept(self) -> None:
        """Listen again on the same port after refuse() or blackhole()."""
        self._close_hole()
        if self._call(lambda: self._server is None):
            self._call(self._listen)

    def _close_hole(self) -> None:
        for sock in self._hole:
            sock.close()
        self._hole = []

    def close_now(self) -> int:
        """Close every open connection cleanly now (FIN both ways); returns how many."""

        def do() -> int:
            conns = list(self._open)
            for conn in conns:
                conn.dead = True
                conn.close()
            return len(conns)

        return self._call(do)

    # ----- observing -----

    def connections(self) -> list[ConnStats]:
        """Every connection accepted so far, oldest first."""
        return self._call(lambda: [c.stats() for c in self._all])

    @property
    def open_connections(self) -> int:
        """Connections whose client side (the gateway) is still open."""
        return self._call(lambda: sum(1 for c in self._all if c.client_open))

    @property
    def total_connections(self) -> int:
        return self._call(lambda: len(self._all))

    def find(self, marker: bytes, *, direction: Literal["up", "down"] = UP) -> list[ConnStats]:
        """Connections that carried `marker` in `direction` (needs record=True)."""
        return self._call(lambda: [c.stats() for c in self._all if marker in c.logs[direction]])

    def data(self, direction: Literal["up", "down"] = UP) -> bytes:
        """Everything recorded in `direction`, over all connections, in accept order."""
        return self._call(lambda: b"".join(bytes(c.logs[direction]) for c in self._all))

    async def wait_open(
        self,
        at_most: int = 0,
        *,
        timeout: float = 5.0,
        only: Iterable[int] | None = None,
    ) -> int:
        """Wait until at most `at_most` client sides are open; returns the last count.

        `only` restricts the count to connection ids (e.g. from find()). Never raises on
        timeout: the caller asserts on the returned count.
        """
        ids = set(only) if only is not None else None
        deadline = time.monotonic() + timeout
        while True:
            n = await asyncio.to_thread(self._count_open, ids)
            if n <= at_most or time.monotonic() >= deadline:
                return n
            await asyncio.sleep(0.02)

    def _count_open(self, ids: set[int] | None) -> int:
        return self._call(
            lambda: sum(1 for c in self._all if c.client_open and (ids is None or c.id in ids))
        )
