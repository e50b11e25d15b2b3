"""The data plane as a child of `mcp-gateway serve`: started, restarted, stopped.

It runs as its own process (`python -m gwfast proxy --control URL`), never imported: the
layers stay apart and the data plane keeps its own uvloop loop, workers and signal handling.
It follows the control process's snapshots like any other data plane, and keeps serving the
last one when this process is away. Its stdout goes to our stderr (stdout may be speaking
MCP); a parent-death signal ends it if `serve` is killed outright.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import secrets
import signal
import sys
import time
from pathlib import Path

import yaml

from control.procs import child_setup, describe_exit, restart_delay

log = logging.getLogger("gwfast.control")

STOP_GRACE = 15.0  # the data plane drains (timeouts.drain, 10 s) before it exits


def session_key_file(data_dir: Path) -> Path:
    """The data plane's session key, made once and kept: sessions survive restarts."""
    path = data_dir / "session.key"
    if not path.exists():
        key = base64.b64encode(secrets.token_bytes(32)).decode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
        log.info("made a new session key in %s", path)
    return path


def write_config(data_dir: Path, *, listen: str, admin_listen: str | None, workers: int) -> Path:
    """The data plane's configuration for `serve`, rewritten at every start from the flags
    (keys of DESIGN.md "Static configuration"); --gateway-config replaces it."""
    path = data_dir / "gateway.yaml"
    cfg = {
        "listen": listen,
        "admin_listen": admin_listen,
        "workers": workers,
        "session_key_file": str(session_key_file(data_dir)),
    }
    path.write_text(
        "# written by mcp-gateway serve at each start; pass --gateway-config to use your own\n"
        + yaml.safe_dump(cfg, sort_keys=False)
    )
    return path


class DataPlane:
    def __init__(self, control_url: str, config: Path, cache: Path) -> None:
        self.argv = [
            sys.executable,
            "-m",
            "gwfast",
            "proxy",
            "--control",
            control_url,
            "--config",
            str(config),
            "--snapshot-cache",
            str(cache),
        ]
        self.proc: asyncio.subprocess.Process | None = None
        self.stopping = False
        self._task: asyncio.Task | None = None
        self.exited = asyncio.Event()  # set when it stopped for good (crash loop or stop)

    async def start(self) -> None:
        await self._spawn()
        self._task = asyncio.create_task(self._watch())

    async def _spawn(self) -> None:
        self.started = time.monotonic()
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=sys.stderr.fileno(),
            preexec_fn=child_setup(os.getpid()),
        )
        log.info("data plane started (pid %d): %s", self.proc.pid, " ".join(self.argv[1:]))

    async def _watch(self) -> None:
        delay = 0.0
        while True:
            assert self.proc is not None
            code = await self.proc.wait()
            if self.stopping:
                break
            lived = time.monotonic() - self.started
            delay = restart_delay(lived, delay)
            log.error(
                "data plane (pid %d) %s; restarting in %gs",
                self.proc.pid,
                describe_exit(code, lived),
                delay,
            )
            await asyncio.sleep(delay)
            if self.stopping:
                break
            await self._spawn()
        self.exited.set()

    async def stop(self) -> None:
        self.stopping = True
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE)
            except TimeoutError:
                log.error(
                    "data plane (pid %d) did not stop in %gs: killing it", proc.pid, STOP_GRACE
                )
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
