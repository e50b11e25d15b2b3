"""The fault-injecting proxy on its own, between raw sockets and a tiny echo server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from gwfast._testbase.faultproxy import FaultProxy
from gwfast._testbase.procs import free_port

pytestmark = pytest.mark.timeout(30)


class Echo:
    """An echo server that records what it read and how its connections ended."""

    def __init__(self) -> None:
        self.reads: list[bytes] = []
        self.ends: list[str] = []  # "eof" or "reset", one per finished connection
        self.server: asyncio.Server | None = None
        self.port = 0
        self.handlers: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        end = "eof"
        try:
            while data := await reader.read(65536):
                self.reads.append(data)
                writer.write(data)
                await writer.drain()
            writer.write_eof()
        except (ConnectionError, OSError):
            end = "reset"
        finally:
            self.ends.append(end)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    @property
    def received(self) -> bytes:
        return b"".join(self.reads)


class Peer:
    """A raw client socket driven through the running loop (a reset shows as an error)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()

    @classmethod
    async def connect(cls, port: int) -> Peer:
        sock = socket.socket()
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    async def send(self, data: bytes) -> None:
        await self.loop.sock_sendall(self.sock, data)

    async def recv_exactly(self, n: int, *, timeout: float = 5.0) -> bytes:
        buf = bytearray()
        async with asyncio.timeout(timeout):
            while len(buf) < n:
                data = await self.loop.sock_recv(self.sock, n - len(buf))
                if not data:
                    break
                buf += data
        return bytes(buf)

    async def recv_until_end(self, *, timeout: float = 5.0) -> tuple[bytes, str]:
        """Read until EOF or reset: (bytes read, "eof" | "reset")."""
        buf = bytearray()
        async with asyncio.timeout(timeout):
            while True:
                try:
                    data = await self.loop.sock_recv(self.sock, 65536)
                except ConnectionResetError:
                    return bytes(buf), "reset"
                if not data:
                    return bytes(buf), "eof"
                buf += data

    async def nothing_within(self, seconds: float) -> bool:
        """True if no byte (and no end) arrives within `seconds`."""
        try:
            async with asyncio.timeout(seconds):
                await self.loop.sock_recv(self.sock, 1 << 16)
        except TimeoutError:
            return True
        return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    e = Echo()
    e.server = await asyncio.start_server(e.handle, "127.0.0.1", 0)
    e.port = e.server.sockets[0].getsockname()[1]
    yield e
    e.server.close()
    # the proxy (torn down first) closed every connection: let the handlers finish
    pending = {t for t in e.handlers if not t.done()}
    if pending:
        _, still = await asyncio.wait(pending, timeout=5)
        for t in still:
            t.cancel()
    await e.server.wait_closed()


@pytest.fixture
def proxy(echo: Echo) -> Iterator[FaultProxy]:
    with FaultProxy(echo.port) as p:
        yield p


@pytest.fixture
async def peers() -> AsyncIterator[list[Peer]]:
    made: list[Peer] = []
    yield made
    for p in made:
        p.close()


async def connect(proxy: FaultProxy, peers: list[Peer]) -> Peer:
    p = await Peer.connect(proxy.port)
    peers.append(p)
    return p


async def test_pass_through_is_byte_exact_and_counted(
    proxy: FaultProxy, echo: Echo, peers: list[Peer]
) -> None:
    data = os.urandom(1 << 20)
    p = await connect(proxy, peers)
    sender = asyncio.create_task(p.send(data))
    got = await p.recv_exactly(len(data))
    await sender
    assert got == data
    assert proxy.open_connections == 1
    p.close()
    assert await proxy.wait_open(0) == 0
    [stats] = proxy.connections()
    assert (stats.bytes_up, stats.bytes_down) == (len(data), len(data))
    assert not stats.client_open and stats.closed_at is not None


async def test_half_close_travels_both_ways(
    proxy: FaultProxy, echo: Echo, peers: list[Peer]
) -> None:
    p = await connect(proxy, peers)
    await p.send(b"abc")
    p.sock.shutdown(socket.SHUT_WR)
    assert await p.recv_until_end() == (b"abc", "eof")
    assert await proxy.wait_open(0) == 0
    await asyncio.sleep(0.05)
    assert echo.ends == ["eof"]


async def test_stall_down_holds_responses_until_pass_through(
    proxy: FaultProxy, echo: Echo, peers: list[Peer]
) -> None:
    p = await connect(proxy, peers)
    await p.send(b"warm")
    assert await p.recv_exactly(4) == b"warm"
    proxy.stall("down")
    await p.send(b"ping")
    assert await p.nothing_within(0.3)
    assert echo.received == b"warmping"  # the request went up, the echo is held
    proxy.pass_through()
    assert await p.recv_exactly(4) == b"ping"


async def test_stall_up_holds_requests(proxy: FaultProxy, echo: Echo, peers: list[Peer]) -> None:
    proxy.stall("up")
    p = await connect(proxy, peers)
    await p.send(b"ping")
    assert await p.nothing_within(0.3)
    assert echo.received == b""
    proxy.pass_through()
    assert await p.recv_exactly(4) == b"ping"


async def test_stalled_connection_still_sees_the_client_close(
    proxy: FaultProxy, echo: Echo, peers: list[Peer]
) -> None:
    proxy.stall("both")
    p = await connect(proxy, peers)
    await p.send(b"ping")
    await asyncio.sleep(0.1)
    assert proxy.open_connections == 1
    p.close()
    assert await proxy.wait_open(0) == 0


async def test_trigger_arms_only_the_connection_that_sent_it(
    proxy: FaultProxy, echo: Echo, peers: list[Peer]
) -> None:
    proxy.stall("down", trigger=b"BAD!")
    a = await connect(proxy, peers)
    b = await connect(proxy, peers)
    await a.send(b"hello")
    assert await a.recv_exactly(5) == b"hello"
    await b.send(b"xxBA")  # the trigger split over two reads still counts
    assert await b.recv_exactly(4) == b"xxBA"
    await b.send(b"D!yy")
    assert await b.nothing_within(0.3)
    await a.send(b"again")
    assert await a.recv_exactly(5) == b"again"
    proxy.pass_through()
    assert await b.recv_exactly(4) == b"D!yy"


async def test_reset_after_n_bytes_of_the_response(
    proxy: FaultProxy, echo: Echo, peers: list[Peer]
) -> None:
    p = await connect(proxy, peers)
    await p.send(b"first")
    assert await p.recv_exactly(5) == b"first"
    proxy.reset_after(10)  # counted from now
    data = bytes(range(100))
    await p.send(data)
    assert await p.recv_until_end() == (data[:10], "reset")
    assert await proxy.wait_open(0) == 0
    [stats] = proxy.connections()
    assert stats.reset_by_proxy
    await asyncio.sleep(0.1)
    assert len(echo.ends) == 1  # the target side was dropped too


async def test_reset_after_zero_with_trigger_resets_before_any_byte(
    proxy: FaultProxy, echo: Echo, peers: list[Peer]
) -> None:
    proxy.reset_after(0, trigger=b"GO")
    p = await connect(proxy, peers)
    await p.send(b"hi")
    assert await p.recv_exactly(2) == b"hi"
    await p.send(b"GO")
    assert await p.recv_until_end() == (b"", "reset")
    other = await connect(proxy, peers)  # later connections without the trigger still work
    await other.send(b"fine")
    assert await other.recv_exactly(4) == b"fine"


async def test_reset_now_resets_every_open_connection(
    proxy: FaultProxy, echo: Echo, peers: list[Peer]
) -> None:
    a = await connect(proxy, peers)
    b = await connect(proxy, peers)
    for p in (a, b):
        await p.send(b"x")
        assert await p.recv_exactly(1) == b"x"
    assert proxy.reset_now() == 2
    assert await a.recv_until_end() == (b"", "reset")
    assert await b.recv_until_end() == (b"", "reset")
    assert await proxy.wait_open(0) == 0


@pytest.mark.parametrize("direction", ["up", "down"])
async def test_slow_read_reads_small_pieces(echo: Echo, peers: list[Peer], direction: str) -> None:
    with FaultProxy(echo.port, rcvbuf=4096) as proxy:
        proxy.slow_read(direction=direction, chunk=1000, delay=0.005)  # type: ignore[arg-type]
        data = os.urandom(40_000)
        p = await connect(proxy, peers)
        sender = asyncio.create_task(p.send(data))
        assert await p.recv_exactly(len(data), timeout=20) == data
        await sender
        [stats] = proxy.connections()
        slow, faulted, fast = (
            (stats.max_read_up, stats.max_faulted_read_up, stats.max_read_down)
            if direction == "up"
            else (stats.max_read_down, stats.max_faulted_read_down, stats.max_read_up)
        )
        assert 0 < slow <= 1000
        assert faulted == slow
        assert fast > 0


async def test_refuse_then_accept_on_the_same_port(
    proxy: FaultProxy, echo: Echo, peers: list[Peer]
) -> None:
    port = proxy.port
    old = await connect(proxy, peers)
    await old.send(b"x")
    assert await old.recv_exactly(1) == b"x"
    proxy.refuse()
    assert await old.recv_until_end() == (b"", "reset")
    with pytest.raises(ConnectionRefusedError):
        await Peer.connect(port)
    proxy.accept()
    assert proxy.port == port
    p = await connect(proxy, peers)
    await p.send(b"back")
    assert await p.recv_exactly(4) == b"back"


async def test_blackhole_makes_connects_hang_until_accept(
    proxy: FaultProxy, echo: Echo, peers: list[Peer]
) -> None:
    old = await connect(proxy, peers)
    await old.send(b"x")
    assert await old.recv_exactly(1) == b"x"
    await asyncio.to_thread(proxy.blackhole)
    assert await old.recv_until_end() == (b"", "reset")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await Peer.connect(proxy.port)
    proxy.accept()
    p = await connect(proxy, peers)
    await p.send(b"back")
    assert await p.recv_exactly(4) == b"back"


async def test_close_now_ends_connections_cleanly(
    proxy: FaultProxy, echo: Echo, peers: list[Peer]
) -> None:
    p = await connect(proxy, peers)
    await p.send(b"x")
    assert await p.recv_exactly(1) == b"x"
    assert proxy.close_now() == 1
    assert await p.recv_until_end() == (b"", "eof")
    assert await proxy.wait_open(0) == 0
    assert not proxy.connections()[0].reset_by_proxy


async def test_unreachable_target_resets_the_client(peers: list[Peer]) -> None:
    with FaultProxy(free_port(), connect_timeout=1.0) as proxy:
        try:
            p = await connect(proxy, peers)
        except ConnectionResetError:
            pass  # the reset can win the race with our connect() returning
        else:
            assert await p.recv_until_end() == (b"", "reset")
        assert await proxy.wait_open(0) == 0
        assert proxy.connections()[0].reset_by_proxy


async def test_find_and_data_report_what_went_through(
    proxy: FaultProxy, echo: Echo, peers: list[Peer]
) -> None:
    a = await connect(proxy, peers)
    b = await connect(proxy, peers)
    await a.send(b"marker-A")
    await b.send(b"marker-B")
    assert await a.recv_exactly(8) == b"marker-A"
    assert await b.recv_exactly(8) == b"marker-B"
    [found] = proxy.find(b"marker-B")
    assert found.id == proxy.connections()[1].id
    assert proxy.find(b"marker-A", direction="down")[0].id == proxy.connections()[0].id
    assert b"marker-A" in proxy.data("up") and b"marker-B" in proxy.data("down")
    a.close()
    assert await proxy.wait_open(1) == 1  # b is still open
    assert await proxy.wait_open(0, only=[found.id], timeout=0.2) == 1


async def test_stop_closes_everything(echo: Echo, peers: list[Peer]) -> None:
    proxy = FaultProxy(echo.port).start()
    p = await connect(proxy, peers)
    await p.send(b"x")
    assert await p.recv_exactly(1) == b"x"
    await asyncio.to_thread(proxy.stop)
    _, end = await p.recv_until_end()
    assert end in ("eof", "reset")
    with pytest.raises(ConnectionRefusedError):
        await Peer.connect(proxy.port)
