"""A real Redis server for tests: ``redis-server`` on a free loopback port, nothing on disk.

Debian's ``redis-server`` (TESTING.md "Other real parts"), installed with apt-get on first
use when it is missing and we are root, as the npm tools are (`gwfast._testbase.npm`): the
README's test command must pass on a fresh machine. A server can be stopped and started again
on the same port, to test what clients do in an outage.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

from gwfast._testbase.procs import Proc, free_port, wait_port


def ensure_redis_server() -> str:
    """The path of redis-server, installing Debian's package first when it is missing."""
    exe = shutil.which("redis-server")
    if exe is None and os.geteuid() == 0 and shutil.which("apt-get"):
        for argv in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "redis-server"],
        ):
            subprocess.run(
                argv,
                check=True,
                stdout=subprocess.DEVNULL,
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                timeout=600,
            )
        exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed: apt-get install -y redis-server")
    return exe


class RedisServer:
    def __init__(self, workdir: Path, *, port: int | None = None) -> None:
        self.exe = ensure_redis_server()
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        argv = [self.exe, "--bind", "127.0.0.1", "--port", str(self.port)]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        self.proc = Proc(argv, cwd=self.workdir, log=self.workdir / f"redis-{self.port}.log")
        wait_port(self.port, proc=self.proc.popen)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def command(self, *args: str) -> bytes:
        """One command in RESP over a plain socket (no client library): its raw reply."""
        out = b"*%d\r\n" % len(args) + b"".join(
            b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args
        )
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(out)
            return s.recv(65536)

    def output(self) -> str:
        return self.proc.output() if self.proc else ""
