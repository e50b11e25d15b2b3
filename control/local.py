"""The local orchestrator: backends as supervised child processes (the embedded default).

`mcp-gateway serve` on one machine needs no cluster: a `command` backend runs as N child
processes on free loopback ports, a `url` backend is an existing server that is only
watched. Each replica has a supervisor task that starts its process, publishes it once its
port accepts TCP connections, restarts it with a backoff when it exits, and probes its
health check. How a process is started and stopped (own session, parent-death signal,
output through pipes, stop by process group) is in `control.procs`.

Invariants:
- A replica *slot* (an index) keeps its log ring for its whole life. What runs in it (a
  `_Run`: one command, env and path) keeps its port and restart count across restarts, so
  a restarted replica's endpoint URL is the same.
- A runtime change (`BackendSpec.runtime_hash`) gives the slot a new run on a new port; the
  old one keeps serving (listed too, same index) until the new one is READY, then stops.
  Every slot is replaced at once (a surge of N), each at its own pace; a url is replaced
  at once.
- READY means "accepts TCP connections" and lasts for the life of that process: the data
  plane runs its own HTTP health checks (with panic routing), so a backend without /healthz
  is still published. Our own probe only reports, in `healthy` and `health`.
- Output: each line is kept as ``[stdout] text`` or ``[stderr] text`` (cut at 8 KiB) in a
  ring of `log_lines` per slot, spanning restarts; lines starting ``---`` are ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import os
import signal
import socket
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import msgspec

from control import procs
from control.orchestrator import EXITED, READY, STARTING, STOPPING, Observed, Replica
from control.spec import BackendSpec, seconds
from gwfast import wire

log = logging.getLogger("gwfast.control")

IMAGE_REFUSED = (
    "image backends need the Kubernetes orchestrator (mcp-gateway serve --orchestrator "
    "kubernetes); locally register a command (a list of strings) or a url"
)
_seq = itertools.count()  # orders log lines across replicas


def _reason(e: OSError) -> str:
    """An OS error's text without asyncio's wrapping ("Connect call failed ('h', p)")."""
    if e.errno and e.errno > 0 and not isinstance(e, socket.gaierror):
        return os.strerror(e.errno)
    return e.strerror or str(e) or type(e).__name__


async def probe(
    host: str, port: int, path: str | None, *, timeout: float, authority: str
) -> tuple[bool, int | None, str]:
    """One health check, as the data plane's (`gwfast.health.probe`, which control/ may
    not import): `(connected, status, why)`, `why` "" when healthy, else
    `wire.health_advice`'s words. Path None: a TCP connect only."""
    writer = None
    connected = False
    status = error = None
    line = b""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            connected = True
            if path is None:
                return True, None, ""
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: gwfast-control\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            line = await reader.readline()
    except TimeoutError:
        error = f"no answer within {timeout:g}s" if connected else f"timed out after {timeout:g}s"
    except OSError as e:
        error = f"no HTTP answer ({_reason(e)})" if connected else _reason(e)
    except ValueError:  # a status line over the stream's limit
        error = "no HTTP answer (a status line over 64 KiB)"
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    if error is None:
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
            status = int(parts[1])
        elif line:
            error = f"no HTTP answer (it sent {line.strip()[:40]!r})"
        else:
            error = "no HTTP answer (the connection closed)"
    return connected, status, wire.health_advice(path, status, error)


@dataclass(eq=False)
class _Slot:
    index: int
    ring: deque  # (seq, text)
    current: _Run | None = None
    previous: _Run | None = None  # replaced, serving until `current` is READY

    def runs(self) -> list[_Run]:
        return [r for r in (self.previous, self.current) if r is not None]


@dataclass(eq=False)
class _Backend:
    spec: BackendSpec  # the spec it converges to
    slots: list[_Slot] = field(default_factory=list)
    message: str = ""


@dataclass(eq=False)
class _Run:
    """One process (or watched url) of a slot, from start to stop, restarts included."""

    backend: _Backend
    slot: _Slot
    spec: BackendSpec  # what it runs; only health_check is read from backend.spec
    runtime: str  # spec.runtime_hash()
    host: str
    port: int
    view: Replica  # what observed() shows (copied out)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    backoff: float = 0.0  # the delay before the pending restart, while EXITED


class LocalOrchestrator:
    """Supervised local processes; nothing is kept on disk (replicas do not outlive the
    control process, which starts them again from the registry)."""

    kind = "local"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        log_lines: int = 2000,
        stop_grace: float = procs.STOP_GRACE,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.host = host
        self.log_lines = log_lines
        self.stop_grace = stop_grace
        self.on_change: Callable[[], None] = on_change or (lambda: None)
        self._backends: dict[str, _Backend] = {}
        self._tasks: set[asyncio.Task] = set()  # every supervisor, running or stopping
        self._ports: set[int] = set()  # held by a slot of ours

    # -- the Orchestrator protocol --
    def refuses(self, spec: BackendSpec) -> str | None:
        return IMAGE_REFUSED if spec.kind == "image" else None

    async def start(self) -> None:
        pass  # nothing survives a control process: replicas start on `ensure`

    async def ensure(self, spec: BackendSpec) -> None:
        """Converge without waiting for processes: starts, stops and replacements happen
        in the replicas' supervisor tasks, each reported through `on_change`."""
        b = self._backends.get(spec.name)
        if b is None:
            b = self._backends[spec.name] = _Backend(spec)
        b.spec = spec
        b.message = self.refuses(spec) or ""
        want = 0 if b.message else 1 if spec.kind == "url" else spec.replicas
        while len(b.slots) > want:  # scale down: highest indices first
            for run in b.slots.pop().runs():
                self._retire(run)
        runtime = spec.runtime_hash()
        for slot in b.slots:
            assert slot.current is not None
            if slot.current.runtime != runtime:
                self._replace(slot, spec)
        while len(b.slots) < want:
            slot = _Slot(len(b.slots), deque(maxlen=self.log_lines))
            b.slots.append(slot)
            slot.current = self._launch(b, slot, spec)
        self.on_change()

    async def remove(self, name: str) -> None:
        b = self._backends.pop(name, None)
        if b is None:
            return
        runs = [run for slot in b.slots for run in slot.runs()]
        for run in runs:
            self._retire(run)
        tasks = [r.task for r in runs if r.task]
        if tasks:
            # wait, never gather: a cancelled remove() (the reconciler closing) must not
            # cancel the stops half-way; close() waits for them
            await asyncio.wait(tasks)
        self.on_change()

    def observed(self) -> dict[str, Observed]:
        out = {}
        for name, b in self._backends.items():
            replicas, words = [], [b.message] if b.message else []
            for slot in b.slots:
                for run in slot.runs():
                    replicas.append(msgspec.structs.replace(run.view))
                    if run.view.state == EXITED:
                        words.append(f"replica {slot.index} restarts after {run.backoff:g}s")
            out[name] = Observed(spec=b.spec, replicas=replicas, message="; ".join(words))
        return out

    async def logs(self, name: str, replica: int | None, lines: int) -> list[str]:
        """Lines are ``[stdout] text``, ``[stderr] text`` or our ``--- ...`` markers; of all
        replicas (`replica` None) each is prefixed ``[index] ``, merged oldest first."""
        b = self._backends[name]  # KeyError: unknown backend
        if lines <= 0:
            return []
        if replica is None:
            merged = heapq.merge(
                *(((seq, f"[{s.index}] {text}") for seq, text in s.ring) for s in b.slots)
            )
            return [text for _, text in deque(merged, maxlen=lines)]
        if not 0 <= replica < len(b.slots):
            raise IndexError(replica)
        ring = b.slots[replica].ring
        return [text for _, text in itertools.islice(ring, max(0, len(ring) - lines), None)]

    async def close(self) -> None:
        for b in self._backends.values():
            for slot in b.slots:
                for run in slot.runs():
                    self._retire(run)
        self._backends.clear()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- slots and runs --
    def _note(self, slot: _Slot, text: str) -> None:
        slot.ring.append((next(_seq), text))

    def _launch(self, b: _Backend, slot: _Slot, spec: BackendSpec) -> _Run:
        if spec.url is not None:
            parts = urlsplit(spec.url)
            host, port, endpoint = parts.hostname or "", parts.port or 80, spec.url
        else:
            host, port = self.host, self._free_port()
            authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            endpoint = f"http://{authority}{spec.path}"
        view = Replica(index=slot.index, state=STARTING, endpoint=endpoint, since=time.time())
        run = _Run(b, slot, spec, spec.runtime_hash(), host, port, view)
        supervise = self._supervise if spec.command is not None else self._watch_url
        run.task = asyncio.create_task(supervise(run), name=f"replica {spec.name}/{slot.index}")
        self._tasks.add(run.task)
        run.task.add_done_callback(lambda t: self._ended(run, t))
        return run

    def _ended(self, run: _Run, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if run.spec.command is not None:
            self._ports.discard(run.port)
        if not task.cancelled() and task.exception() is not None:
            log.error("supervisor of %s failed", task.get_name(), exc_info=task.exception())

    def _replace(self, slot: _Slot, spec: BackendSpec) -> None:
        old = slot.current
        assert old is not None
        if spec.command is not None and old.view.routable and slot.previous is None:
            slot.previous = old  # serves until the new process is READY (a url: at once)
        else:
            self._retire(old)
        self._note(slot, f"--- replica {slot.index} replaced (its command, env or path changed)")
        slot.current = self._launch(old.backend, slot, spec)

    def _retire(self, run: _Run) -> None:
        """Unroute at once; the supervisor stops the process and releases the port."""
        if not run.stop.is_set():
            run.stop.set()
            self._update(run, state=STOPPING)

    def _free_port(self) -> int:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        while True:  # the kernel may hand out a port one of our stopped replicas held
            with socket.socket(family) as s:
                s.bind((self.host, 0))
                port = s.getsockname()[1]
            if port not in self._ports:
                self._ports.add(port)
                return port

    def _update(self, run: _Run, **changes) -> None:
        """Change what observed() shows; `on_change` only when something did change."""
        view, changed = run.view, False
        for key, value in changes.items():
            if getattr(view, key) != value:
                setattr(view, key, value)
                changed = True
                if key == "state":
                    view.since = time.time()
        if changed:
            self.on_change()

    def _ready(self, run: _Run) -> None:
        if run.stop.is_set():  # retired while its watch was connecting
            return
        self._update(run, state=READY)
        slot = run.slot
        if slot.current is run and slot.previous is not None:
            self._retire(slot.previous)
            slot.previous = None

    # -- supervision --
    async def _supervise(self, run: _Run) -> None:
        """Start, watch and restart one command replica until `run.stop` is set."""
        spec, slot, port = run.spec, run.slot, str(run.port)
        assert spec.command is not None
        argv = [arg.replace("{port}", port) for arg in spec.command]
        env = {**os.environ, **spec.env, "PORT": port}

        def on_line(stream: str, text: str) -> None:
            self._note(slot, f"[{stream}] {text}")

        while not run.stop.is_set():
            started = time.monotonic()
            try:
                child = await procs.spawn(argv, env=env, on_line=on_line)
            except (OSError, ValueError, subprocess.SubprocessError) as e:
                outcome = f"could not start: {e}"
                if isinstance(e, FileNotFoundError) and "/" not in argv[0]:
                    outcome += (
                        " (looked up on the control process's PATH: give the full path, or "
                        "set PATH in the backend's env)"
                    )
                self._note(slot, f"--- replica {slot.index} {outcome}")
            else:
                try:
                    outcome = await self._run_child(run, child, started)
                except Exception as e:  # a bug here must not end supervision
                    log.exception("supervising %s failed", spec.name)
                    outcome = f"lost track of the process: {e!r}"
            if run.stop.is_set():
                break
            run.backoff = procs.restart_delay(time.monotonic() - started, run.backoff)
            self._update(run, state=EXITED, pid=None, last_exit=outcome, healthy=None, health="")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.stop.wait(), run.backoff)
                break
            self._note(slot, f"--- replica {slot.index} restarted ({outcome})")
            self._update(run, state=STARTING, restarts=run.view.restarts + 1)

    async def _run_child(self, run: _Run, child: procs.Child, started: float) -> str:
        """Until the process exits or `run.stop` is set; it is reaped either way."""
        self._update(run, state=STARTING, pid=child.pid, healthy=None, health="")
        watch = asyncio.create_task(self._watch(run))
        exited = asyncio.create_task(child.proc.wait())
        stopping = asyncio.create_task(run.stop.wait())
        try:
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when cancelled (a loop torn down without close()): no orphan
            watch.cancel()
            stopping.cancel()
            if child.proc.returncode is None and not exited.done():
                if run.stop.is_set():
                    await procs.stop(child, grace=self.stop_grace)
                else:
                    procs.signal_group(child.pid, signal.SIGKILL)
            await asyncio.gather(watch, stopping, return_exceptions=True)
        await exited
        procs.signal_group(child.pid, signal.SIGKILL)  # strays in its group
        await procs.finish(child)
        assert child.proc.returncode is not None
        return procs.describe_exit(child.proc.returncode, time.monotonic() - started)

    async def _watch_url(self, run: _Run) -> None:
        watch = asyncio.create_task(self._watch(run))
        try:
            await run.stop.wait()
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)

    async def _watch(self, run: _Run) -> None:
        """STARTING until the port accepts TCP connections, then READY (for the life of
        this process) and one health check every `interval`."""
        url = run.spec.url
        authority = urlsplit(run.view.endpoint or "").netloc  # host:port, IPv6 bracketed
        pause = 0.05
        while True:
            timeout = seconds(run.backend.spec.health_check.timeout)
            connected, _, why = await probe(
                run.host, run.port, None, timeout=timeout, authority=authority
            )
            if connected:
                break
            if url is not None:  # a process that starts is "starting"; a url says why not
                self._update(run, healthy=False, health=f"{authority}: {why}")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)
        self._ready(run)
        while True:
            hc = run.backend.spec.health_check  # may change without a restart
            _, status, why = await probe(
                run.host, run.port, hc.path, timeout=seconds(hc.timeout), authority=authority
            )
            if why:
                self._update(run, healthy=False, health=why)
            else:
                done = f"GET {hc.path} answered {status}" if hc.path else "accepts TCP connections"
                self._update(run, healthy=True, health=done)
            await asyncio.sleep(seconds(hc.interval))
