"""`mcp-gateway serve` and its parts as real processes, for the end-to-end tests.

`Serve` starts the real command on free loopback ports with its own data directory and stops
it (and so every backend it runs) at the end; `Api` is a small JSON client of its REST API.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from gwfast._testbase.procs import Proc, free_ports, wait_port

MCP_GATEWAY = str(Path(sys.executable).parent / "mcp-gateway")


class Api:
    def __init__(self, base: str) -> None:
        self.base = base

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, json.loads(raw) if raw else None

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, out = self.call(method, path, body)
        assert 200 <= status < 300, (status, out)
        return out

    def wait_ready(self, name: str, replicas: int, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            st = self.ok("GET", f"/v1/backends/{name}/status")
            if st["ready_replicas"] >= replicas:
                return st
            assert time.monotonic() < deadline, f"{name} not ready: {st}"
            time.sleep(0.1)


class Serve:
    """`mcp-gateway serve` (or `control`, with `command`) on free ports."""

    def __init__(
        self, data_dir: Path, *, command: str = "serve", workers: int = 1, log: Path | None = None
    ) -> None:
        self.data_dir = data_dir
        self.command = command
        self.workers = workers
        self.port, self.control_port, self.admin_port = free_ports(3)
        self.log = log or data_dir.parent / f"{data_dir.name}-{command}.log"
        self.proc: Proc | None = None

    def argv(self) -> list[str]:
        argv = [
            MCP_GATEWAY,
            self.command,
            "--data-dir",
            str(self.data_dir),
            "--control-listen",
            f"127.0.0.1:{self.control_port}",
            "--stdio",
            "off",
        ]
        if self.command == "serve":
            argv += [
                "--listen",
                f"127.0.0.1:{self.port}",
                "--admin-listen",
                f"127.0.0.1:{self.admin_port}",
                "--workers",
                str(self.workers),
            ]
        return argv

    def start(self) -> Serve:
        self.proc = Proc(self.argv(), env={"PYTHONUNBUFFERED": "1"}, log=self.log)
        wait_port(self.control_port, timeout=30, proc=self.proc.popen)
        if self.command == "serve":
            wait_port(self.port, timeout=30, proc=self.proc.popen)
        return self

    def stop(self) -> int | None:
        return self.proc.stop(timeout=20) if self.proc else None

    @property
    def api(self) -> Api:
        return Api(f"http://127.0.0.1:{self.control_port}")

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    def url(self, backend: str) -> str:
        return f"http://127.0.0.1:{self.port}/{backend}/mcp"

    def output(self) -> str:
        return self.proc.output() if self.proc else ""

    def __enter__(self) -> Serve:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def http_status(url: str, method: str = "POST", body: bytes = b"{}") -> tuple[int, bytes]:
    """Status and body of one request; 0 when nothing answers."""
    req = urllib.request.Request(
        url,
        data=body if method == "POST" else None,
        method=method,
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, ConnectionError):
        return 0, b""  # nothing listening (yet)
