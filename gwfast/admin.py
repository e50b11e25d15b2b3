"""The admin listener (`admin_listen`): `GET /metrics` and `GET /healthz`, never public.

DESIGN.md "Routes": Prometheus text, summed over workers, is served here and not on the
public listener. With one worker the worker serves it on its own event loop; with more, a
child of the supervisor does (the supervisor forks workers again when one dies, and forking
from a process with a running event loop or threads is not safe), reading the shared block
the supervisor made before forking (`gwfast.metrics`). Scrapes are rare: this is plain code,
not hot-path code, but it is still a raw protocol with httptools and bounded buffers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket

import httptools
import msgspec
import uvloop

from gwfast.config import ConfigError, parse_listen
from gwfast.errors import error_response, plain_response
from gwfast.metrics import SharedBlock, render

log = logging.getLogger("gwfast")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_HEAD = 16384
IDLE_SECONDS = 60.0


def bind(address: str) -> socket.socket:
    """The admin listening socket, bound before any fork so a port in use stops the start."""
    host, port = parse_listen(address, "$.admin_listen")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise ConfigError(
            f"cannot listen on {address} ({e.strerror}): free the port, or set "
            "admin_listen to another address or to null - at `$.admin_listen`"
        ) from None
    sock.setblocking(False)
    return sock


class AdminConnection(asyncio.Protocol):
    """HTTP/1.1 with keep-alive, one request at a time; bodies are read and ignored."""

    def __init__(self, block: SharedBlock) -> None:
        self.block = block
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.pending = 0  # bytes of the current request head seen so far
        self.in_head = True
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.transport = None

    def _arm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(IDLE_SECONDS, self._close)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.in_head = True

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.pending = 0

    def on_message_complete(self) -> None:
        self._respond()

    def data_received(self, data: bytes) -> None:
        if self.in_head:
            self.pending += len(data)
            if self.pending > MAX_HEAD:
                self._send(error_response(431, "request head too large", close=True), True)
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._send(error_response(400, "malformed HTTP request", close=True), True)
        self._arm()

    def _respond(self) -> None:
        method = self.parser.get_method()
        path = self.url.partition(b"?")[0]
        keep = self.parser.should_keep_alive()
        if method not in (b"GET", b"HEAD"):
            resp = error_response(405, "use GET", close=not keep, headers=(("Allow", "GET, HEAD"),))
        elif path == b"/metrics":
            resp = plain_response(
                200, render(self.block.read()), content_type=CONTENT_TYPE, close=not keep
            )
        elif path == b"/healthz":
            resp = plain_response(200, b'{"status":"ok"}', close=not keep)
        else:
            resp = error_response(
                404, "the admin listener serves /metrics and /healthz", close=not keep
            )
        if method == b"HEAD":
            resp = resp[: resp.index(b"\r\n\r\n") + 4]
        self._send(resp, not keep)

    def _send(self, resp: bytes, close: bool) -> None:
        if self.transport is None:
            return
        self.transport.write(resp)
        if close:
            self.transport.close()
            self.transport = None


async def start(sock: socket.socket, block: SharedBlock) -> asyncio.Server:
    """Serve the admin routes on `sock` in the running loop."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: AdminConnection(block), sock=sock)
    host, port = sock.getsockname()[:2]
    log.info("admin listener on %s:%d (GET /metrics, /healthz)", host, port)
    return server


async def _watch(channel: socket.socket, stop: asyncio.Event) -> None:
    """The supervisor's channel (`gwfast.worker`): length-prefixed msgpack messages. Any
    but a reload ("drain", "stop") or its end (the supervisor is gone) stops the admin
    process; it reads no configuration, the block's directory names the backends."""
    reader, writer = await asyncio.open_connection(sock=channel)
    try:
        while True:
            size = int.from_bytes(await reader.readexactly(4), "big")
            msg = msgspec.msgpack.decode(await reader.readexactly(size))
            if not isinstance(msg, dict) or msg.get("op") != "reload":
                break
    except (asyncio.IncompleteReadError, ConnectionError, msgspec.DecodeError):
        pass
    finally:
        stop.set()
        writer.close()


async def _serve(sock: socket.socket, block: SharedBlock, channel: socket.socket | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await start(sock, block)
    watch = asyncio.create_task(_watch(channel, stop)) if channel is not None else None
    await stop.wait()
    server.close()
    if watch is not None:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)


def run(sock: socket.socket, block: SharedBlock, *, channel: socket.socket | None = None) -> None:
    """The admin process of a multi-worker gateway (a child of the supervisor): serves until
    SIGTERM/SIGINT or until the supervisor drains, stops or goes away."""
    log.info("admin process %d", os.getpid())
    uvloop.run(_serve(sock, block, channel))
