"""Run the data plane: one uvloop worker, or N workers on one port with SO_REUSEPORT."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import sys
from pathlib import Path

import uvloop

from gwfast._native import headscan, ring
from gwfast.config import Config, load_config_file
from gwfast.gateway import Gateway
from gwfast.health import HealthChecker
from gwfast.model import Snapshot
from gwfast.proxy import ClientConnection
from gwfast.sessions import SessionSealer

log = logging.getLogger("gwfast")
DRAIN_SECONDS = 10.0


def listen_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


async def serve(snapshot: Snapshot, keys: list[bytes], *, reuse_port: bool) -> None:
    loop = asyncio.get_running_loop()
    gw = Gateway(snapshot, SessionSealer(keys), loop)
    sock = listen_socket(snapshot.host, snapshot.port, reuse_port=reuse_port)
    server = await loop.create_server(lambda: ClientConnection(gw), sock=sock)
    health = HealthChecker(gw)
    health.start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker %d serving on %s:%d (native scanner %s, native ring %s)", os.getpid(),
             snapshot.host, snapshot.port, headscan.COMPILED, ring.COMPILED)
    await stop.wait()
    # graceful drain: stop accepting, let requests in flight end, then close the rest
    gw.draining = True
    server.close()
    for c in list(gw.connections):
        if c.state in (0,):  # idle keep-alive connections
            c._close()
    deadline = loop.time() + DRAIN_SECONDS
    while any(c.state != 4 for c in gw.connections) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    for c in list(gw.connections):
        c._close()
    health.stop()
    gw.pool.close()


def run_worker(snapshot: Snapshot, keys: list[bytes], *, reuse_port: bool) -> None:
    uvloop.run(serve(snapshot, keys, reuse_port=reuse_port))


def session_keys(cfg: Config, keys: list[bytes]) -> list[bytes]:
    if keys:
        return keys
    log.warning("no session_keys configured: generated a random key; sessions will not "
                "survive a restart or span replicas (set session_keys or session_key_file)")
    return [secrets.token_bytes(32)]


def run(config_path: str | Path) -> int:
    cfg, backends, keys = load_config_file(config_path)
    snapshot = Snapshot.build(cfg, backends)
    keys = session_keys(cfg, keys)
    if cfg.workers == 1:
        run_worker(snapshot, keys, reuse_port=False)
        return 0
    return supervise(snapshot, keys, cfg.workers)


def supervise(snapshot: Snapshot, keys: list[bytes], workers: int) -> int:
    """Fork `workers` processes sharing the port through SO_REUSEPORT; restart crashed
    ones; SIGTERM/SIGINT stop them all (each drains)."""
    # bind once here so a port in use fails the start, not each worker
    listen_socket(snapshot.host, snapshot.port, reuse_port=True).close()
    children: dict[int, int] = {}
    stopping = False

    def spawn(slot: int) -> None:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                run_worker(snapshot, keys, reuse_port=True)
            except BaseException:  # noqa: BLE001 - report and exit the child
                logging.getLogger("gwfast").exception("worker crashed")
                code = 1
            finally:
                sys.stderr.flush()
                os._exit(code)
        children[pid] = slot

    def on_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    for slot in range(workers):
        spawn(slot)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        slot = children.pop(pid, None)
        if slot is not None and not stopping:
            log.error("worker %d exited (status %d); restarting it", pid, status)
            spawn(slot)
    return 0


