"""Child processes for the load driver: start pinned, re-pin, read CPU time, always stop.

Every server the driver starts runs in its own session (process group) so that stopping it
also stops its workers (nginx, gwfast). ``Children`` is a context manager that kills all of
them on any exit, including Ctrl-C, an exception or SIGTERM sent to the driver.

CPU time is utime+stime from ``/proc/PID/stat`` summed over a process and its descendants,
so an nginx master's worker and a gwfast supervisor's worker are counted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, *, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Wait until 127.0.0.1:port accepts connections, failing early if proc exits."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")
        time.sleep(0.05)


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def process_tree(pid: int) -> list[int]:
    """pid and all its live descendants."""
    kids = _children_map()
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(kids.get(p, ()))
    return tree


def cpu_seconds(pid: int) -> float:
    """utime+stime of pid and its descendants, in seconds (resolution 1/CLK_TCK)."""
    ticks = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return ticks / CLK_TCK


def pin(pid: int, cpus: set[int]) -> None:
    """Move every thread of pid and its descendants to cpus (new threads inherit it)."""
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(tid), cpus)


class Child:
    """A server process in its own process group, started on the given CPUs."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cpus: set[int],
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log = log
        with open(log, "ab") as out:
            self.popen = subprocess.Popen(
                ["taskset", "-c", ",".join(map(str, sorted(cpus))), *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def pin(self, cpus: set[int]) -> None:
        pin(self.pid, cpus)

    def stop(self, timeout: float = 5.0) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)
            try:
                self.popen.wait(timeout)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):  # workers that outlived their master
            os.killpg(self.pid, signal.SIGKILL)

    def tail(self, lines: int = 20) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class Children(contextlib.AbstractContextManager):
    """Owns every Child started by the driver; stops them all on exit, whatever the cause."""

    def __init__(self) -> None:
        self.children: list[Child] = []

    def start(self, *args, **kwargs) -> Child:
        child = Child(*args, **kwargs)
        self.children.append(child)
        return child

    def __enter__(self) -> Children:
        # SIGTERM to the driver must unwind like Ctrl-C, so the finally clauses run
        self._old = signal.signal(signal.SIGTERM, _raise_interrupt)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGTERM, self._old)
        for child in reversed(self.children):
            child.stop()
        self.children.clear()


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


T = TypeVar("T")


def in_workdir(prefix: str, keep: bool, body: Callable[[Path], T]) -> T | None:
    """body(workdir) in a fresh temporary directory, removed afterwards unless `keep`; None
    when interrupted (Ctrl-C or SIGTERM: `Children` has stopped every server by then)."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        return body(workdir)
    except KeyboardInterrupt:
        print("\ninterrupted; every server was stopped", file=sys.stderr)
        return None
    finally:
        if keep:
            print(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
