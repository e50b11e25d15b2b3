"""Starting and stopping one local replica's process, for `control.local`.

What a child of the control process must never do, and how it is prevented here:
- write to the control process's stdout (it may be speaking MCP over stdio): stdout and
  stderr are pipes the control process reads line by line, stdin is /dev/null;
- take a terminal's Ctrl-C before the control process stops it in order: each child leads
  its own session (and process group);
- outlive the control process, even a SIGKILLed one: Linux sends the child SIGTERM when
  its parent dies (``prctl(PR_SET_PDEATHSIG)``). The kernel ties that to the thread that
  forked, so replicas must be started from a thread that lives as long as the process (the
  event loop's). Grandchildren are not covered; a clean stop reaches them by process group.

The pipes are our own (`os.pipe`), not asyncio's ``PIPE``: on Python 3.11 a process's
``wait()`` returns only once its pipes close, so a grandchild holding stdout would hide the
replica's exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
MAX_LINE = 8192  # bytes of one output line that are kept; the rest is cut
MIN_BACKOFF, MAX_BACKOFF = 1.0, 30.0  # restart delay of a replica that died young, doubling
STABLE_AFTER = 10.0  # a replica that ran this long is restarted at once
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def restart_delay(lived: float, previous: float) -> float:
    """Delay before restarting a replica that ran `lived` seconds, when its previous restart
    waited `previous`: none after a stable run, else 1 s doubling to 30 s (as
    `gwfast.supervisor.restart_delay`, which control/ may not import)."""
    if lived >= STABLE_AFTER:
        return 0.0
    return min(MAX_BACKOFF, max(MIN_BACKOFF, previous * 2))


def describe_exit(returncode: int, lived: float) -> str:
    """``exited with status 1 after 0.4s`` or ``killed by SIGKILL after 3.0s``."""
    if returncode < 0:
        try:
            how = f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"killed by signal {-returncode}"
    else:
        how = f"exited with status {returncode}"
    return f"{how} after {lived:.1f}s"


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    with contextlib.suppress(OSError, AttributeError):
        return ctypes.CDLL(None, use_errno=True).prctl
    return None


# looked up once in the parent: the child, between fork and exec, only calls it
_PRCTL = _load_prctl()


def child_setup(parent: int) -> Callable[[], None]:
    """`preexec_fn` of every child: die with the control process (see above)."""

    def setup() -> None:  # runs in the child between fork and exec
        if _PRCTL is not None:
            _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return setup


def signal_group(pid: int, sig: int) -> None:
    """Signal the process group `pid` leads (each child leads its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


@dataclass(eq=False)
class Child:
    """A started process and the tasks that read its output."""

    proc: asyncio.subprocess.Process
    pumps: list[asyncio.Task] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid


async def spawn(
    argv: list[str], *, env: dict[str, str], on_line: Callable[[str, str], None]
) -> Child:
    """Start `argv`; every line it writes is passed to ``on_line(stream, text)`` with
    stream "stdout" or "stderr". OSError (or SubprocessError) when it cannot start."""
    fds = [*os.pipe(), *os.pipe()]  # out_r, out_w, err_r, err_w
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=fds[1],
            stderr=fds[3],
            env=env,
            start_new_session=True,
            preexec_fn=child_setup(os.getpid()),
        )
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    os.close(fds[1])  # the child has its own copies of the write ends
    os.close(fds[3])
    child = Child(proc)
    child.pumps = [
        asyncio.create_task(_pump(fds[0], "stdout", on_line)),
        asyncio.create_task(_pump(fds[2], "stderr", on_line)),
    ]
    return child


async def _pump(fd: int, stream: str, on_line: Callable[[str, str], None]) -> None:
    """Read `fd` to EOF, one callback per line; a line over MAX_LINE is cut there (and
    marked), the rest of it skipped, so memory stays bounded whatever the child writes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        pipe = os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)

    def emit(raw: bytes | bytearray, cut: bool = False) -> None:
        text = bytes(raw).decode(errors="replace").rstrip("\r")
        on_line(stream, text + (" [line cut at 8 KiB]" if cut else ""))

    buf = bytearray()
    skipping = False  # inside a line already cut: drop until its newline
    try:
        while chunk := await reader.read(65536):
            buf += chunk
            while (nl := buf.find(b"\n")) >= 0:
                if not skipping:
                    emit(buf[: min(nl, MAX_LINE)], nl > MAX_LINE)
                skipping = False
                del buf[: nl + 1]
            if len(buf) > MAX_LINE:
                if not skipping:
                    emit(buf[:MAX_LINE], True)
                skipping = True
                buf.clear()
        if buf and not skipping:
            emit(buf)
    finally:
        transport.close()


async def finish(child: Child, *, timeout: float = 1.0) -> None:
    """After the process exited and its group was killed: let the readers take what is
    left in the pipes, then drop them (a writer that escaped the group keeps no task)."""
    if child.pumps:
        _, pending = await asyncio.wait(child.pumps, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*child.pumps, return_exceptions=True)


async def stop(child: Child, *, grace: float = STOP_GRACE) -> int:
    """SIGTERM the child's process group, SIGKILL it after `grace`; always reaped."""
    proc = child.proc
    if proc.returncode is None:
        signal_group(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            signal_group(proc.pid, signal.SIGKILL)
            await proc.wait()
    signal_group(proc.pid, signal.SIGKILL)  # whatever the leader left behind in its group
    await finish(child)
    assert proc.returncode is not None
    return proc.returncode
