"""The supervisor of `workers: N`: forks the workers, replaces dead ones, relays reloads.

Each worker binds the port itself with SO_REUSEPORT, so a dead worker's socket leaves the
kernel's group and the others take its share of new connections until its replacement
listens. A worker that dies young is replaced after a delay (1 s doubling to 30 s) so that one
crashing at start does not spin; one that ran for a while is replaced at once.

Why configuration travels over a socketpair rather than as forwarded signals, and what the
signals do, is in `gwfast.worker`. The supervisor's own loop is a plain `select` on the
signal wakeup pipe: it never runs an event loop, so the children it forks start clean.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass

from gwfast import admin
from gwfast.metrics import SharedBlock
from gwfast.model import Snapshot
from gwfast.worker import ConfigSource, Message, encode_message, listen_socket, run_worker

log = logging.getLogger("gwfast")

STOP_GRACE = 5.0  # after the drain (or a second signal), workers still alive are killed
SEND_TIMEOUT = 5.0  # a worker that does not take a message this fast is stuck: replaced
MIN_BACKOFF, MAX_BACKOFF = 1.0, 30.0  # restart delay of a worker that died young, doubling
STABLE_AFTER = 10.0  # a worker that ran this long is replaced at once
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def set_parent_death_signal(sig: int) -> None:
    """Linux: the kernel sends `sig` to this process when its parent dies."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)


def restart_delay(lived: float, previous: float) -> float:
    """Delay before replacing a worker that ran `lived` seconds, when the one before it in
    the same slot waited `previous`: none after a stable run, else 1 s doubling to 30 s."""
    if lived >= STABLE_AFTER:
        return 0.0
    return min(MAX_BACKOFF, max(MIN_BACKOFF, previous * 2))


def describe_exit(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


@dataclass
class _Child:
    slot: int
    sock: socket.socket
    started: float


class Supervisor:
    """Forks `workers` processes, replaces dead ones, relays reloads, drains on SIGTERM."""

    def __init__(self, source: ConfigSource) -> None:
        assert source.current is not None
        self.source = source
        self.workers = source.current.config.workers
        self.children: dict[int, _Child] = {}
        # last restart delay of each slot; slot `workers` is the admin process (gwfast.admin)
        self.delays = [0.0] * (self.workers + 1)
        self.admin_sock: socket.socket | None = None
        self.due: dict[int, float] = {}  # slot -> when to start its replacement
        self.pending: list[int] = []  # signals received, handled by the main loop
        self.stopping = False
        self.deadline: float | None = None  # workers still alive then are killed
        self.pid = os.getpid()

    def run(self) -> int:
        loaded = self.source.current
        assert loaded is not None
        snapshot = Snapshot.build(loaded.config, loaded.backends)
        # bind once here so that a port in use fails the start, not each worker
        listen_socket(snapshot.host, snapshot.port, reuse_port=True).close()
        # before any fork: the metrics block the workers write and the admin process reads
        # (one region per worker slot), and the admin listener, bound once for its life
        self.block = SharedBlock(self.workers)
        if loaded.config.admin_listen is not None:
            self.admin_sock = admin.bind(loaded.config.admin_listen)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, self._on_signal)
        log.info(
            "supervisor %d starting %d workers on %s:%d",
            self.pid,
            self.workers,
            snapshot.host,
            snapshot.port,
        )
        try:
            for slot in range(self.workers):
                self._spawn(slot)
            if self.admin_sock is not None:
                self._spawn(self.workers)
            self._loop()
        finally:
            signal.set_wakeup_fd(-1)
            os.close(self.wake_r)
            os.close(self.wake_w)
        log.info("supervisor %d: all workers stopped", self.pid)
        return 0

    def _on_signal(self, signum: int, frame: object) -> None:
        self.pending.append(signum)

    def _loop(self) -> None:
        while True:
            now = time.monotonic()
            waits = [t - now for t in self.due.values()]
            if self.deadline is not None:
                waits.append(self.deadline - now)
            timeout = max(0.0, min(waits)) if waits else None
            select.select([self.wake_r], [], [], timeout)
            with contextlib.suppress(BlockingIOError):
                while os.read(self.wake_r, 512):
                    pass
            while self.pending:
                self._handle(self.pending.pop(0))
            self._reap()
            if self.stopping and not self.children:
                return
            now = time.monotonic()
            for slot, when in list(self.due.items()):
                if when <= now:
                    del self.due[slot]
                    self._spawn(slot)
            if self.deadline is not None and now >= self.deadline:
                self.deadline = None
                for pid in self.children:
                    log.error("worker %d still running: killing it", pid)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)

    def _handle(self, signum: int) -> None:
        if signum == signal.SIGCHLD:
            return  # reaped right after
        if signum == signal.SIGHUP:
            if self.stopping:
                return
            loaded = self.source.reload()
            if loaded is not None:
                self._send_all(Message("reload", self.source.generation, loaded))
            return
        name = signal.Signals(signum).name
        drain = self.source.current.config.timeouts.drain  # type: ignore[union-attr]
        if not self.stopping:
            self.stopping = True
            self.due.clear()
            log.info(
                "supervisor %d got %s: draining %d workers (up to %gs, timeouts.drain)",
                self.pid,
                name,
                len(self.children),
                drain,
            )
            self._send_all(Message("drain"))
            self.deadline = time.monotonic() + drain + STOP_GRACE
        else:
            log.warning("supervisor %d got %s again: stopping the workers now", self.pid, name)
            self._send_all(Message("stop"))
            self.deadline = min(self.deadline or 1e18, time.monotonic() + STOP_GRACE)

    def _send_all(self, msg: Message) -> None:
        frame = encode_message(msg)
        for pid, child in list(self.children.items()):
            try:
                child.sock.sendall(frame)
            except TimeoutError:
                log.error(
                    "worker %d did not take a message within %gs: killing it", pid, SEND_TIMEOUT
                )
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                pass  # it is exiting: reaped soon

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            child.sock.close()
            if child.slot < self.workers:  # its connections died with it (gwfast.metrics)
                self.block.reset_gauges(child.slot)
            lived = time.monotonic() - child.started
            why = describe_exit(status)
            if self.stopping:
                log.info("worker %d %s", pid, why)
                continue
            delay = self.delays[child.slot] = restart_delay(lived, self.delays[child.slot])
            log.error("worker %d %s after %.1fs; starting a new one in %gs", pid, why, lived, delay)
            self.due[child.slot] = time.monotonic() + delay

    def _spawn(self, slot: int) -> None:
        loaded = self.source.current
        assert loaded is not None
        mine, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                mine.close()
                if self._become_worker():
                    if slot == self.workers:
                        assert self.admin_sock is not None
                        admin.run(self.admin_sock, self.block, channel=theirs)
                    else:
                        if self.admin_sock is not None:
                            self.admin_sock.close()
                        run_worker(
                            loaded,
                            reuse_port=True,
                            channel=theirs,
                            metrics=self.block.region(slot),
                            follow=self.source.follow,  # each worker follows on its own
                        )
                code = 0
            except BaseException:  # noqa: BLE001 - report and exit the child
                log.exception("worker %d crashed", os.getpid())
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        theirs.close()
        mine.settimeout(SEND_TIMEOUT)
        self.children[pid] = _Child(slot, mine, time.monotonic())

    def _become_worker(self) -> bool:
        """In the child after fork: drop the supervisor's signal handling and descriptors;
        die with the supervisor. False if it is already gone."""
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # reloads come from the supervisor
        os.close(self.wake_r)
        os.close(self.wake_w)
        for child in self.children.values():  # the other workers' channels
            child.sock.close()
        set_parent_death_signal(signal.SIGTERM)
        return os.getppid() == self.pid  # else the supervisor died before prctl took effect
