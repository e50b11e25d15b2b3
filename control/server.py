"""The control process: registry, orchestrator, reconciler and the HTTP API, in one event loop.

One Starlette app served by granian's embedded server on the control listener carries the
REST API (`/v1/`), the Microsoft-compatible `/adapters` alias, the snapshot long-poll the data
plane follows, and the MCP admin tools over Streamable HTTP (`/mcp`). Until the governance
issue adds admin authentication the listener must be loopback: anyone who reaches it can run
commands on this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from granian.constants import Interfaces
from granian.server.embed import Server
from mcp.server.mcpserver import MCPServer
from starlette.applications import Starlette

from control.adapters import adapter_routes
from control.api import rest_routes
from control.local import LocalOrchestrator
from control.publish import Publisher
from control.reconcile import Reconciler
from control.service import Control
from control.store import Store
from control.tools import admin_server, streamable_http_routes
from control.web import LoopbackOnly, error_handlers

log = logging.getLogger("gwfast.control")

DEFAULT_LISTEN = "127.0.0.1:9091"


class StartError(Exception):
    """The control process cannot start; the message says why and what to do."""


def default_data_dir() -> Path:
    if os.environ.get("GWFAST_DATA_DIR"):
        return Path(os.environ["GWFAST_DATA_DIR"])
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "gwfast"


def parse_address(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise StartError(f"invalid {what} address {value!r}: write host:port, e.g. 127.0.0.1:9091")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Settings:
    """The control process's settings; every field has its default."""

    data_dir: Path = field(default_factory=default_data_dir)  # SQLite state, keys, logs
    listen: str = DEFAULT_LISTEN  # the control API; loopback only (no admin auth yet)
    orchestrator: str = "local"  # local (processes on this machine); kubernetes comes later


_GRANIAN_LOGGING = {  # granian logs to stdout by default: stdout may be speaking MCP
    "handlers": {
        "console": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
        "access": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
    },
}


def build_app(
    control: Control, publisher: Publisher, *, host: str, mcp: MCPServer | None = None
) -> LoopbackOnly:
    """The control API as one ASGI app: REST, `/adapters`, and the MCP tools when given."""
    routes = [*rest_routes(control, publisher), *adapter_routes(control)]
    lifespan = None
    if mcp is not None:
        mcp_routes, lifespan = streamable_http_routes(mcp, host=host)
        routes += mcp_routes
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=error_handlers())
    return LoopbackOnly(app, host=host)


class ControlProcess:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.host, self.port = parse_address(settings.listen, "control listen")
        if not is_loopback(self.host):
            raise StartError(
                f"the control API cannot listen on {settings.listen}: it has no "
                "authentication yet, so it listens on loopback only (127.0.0.1 or ::1); "
                "reach it from elsewhere through an SSH tunnel"
            )
        if settings.orchestrator != "local":
            raise StartError(
                f"orchestrator {settings.orchestrator!r} is not available yet: use local"
            )
        self._lock_fd: int | None = None
        self._task: asyncio.Task | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _lock(self, data_dir: Path) -> None:
        """One control process per data directory: two would run every backend twice."""
        fd = os.open(data_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StartError(
                f"another control process (pid {other}) is using {data_dir}: stop it, or "
                "give this one its own --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _check_port(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((self.host, self.port))
            except OSError as e:
                raise StartError(
                    f"cannot listen on {self.settings.listen} ({e.strerror}): free the port "
                    "or choose another with --control-listen"
                ) from None

    async def start(self) -> None:
        data_dir = self.settings.data_dir
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock(data_dir)
        self._check_port()
        self.store = Store(data_dir / "state.db")
        self.orchestrator = LocalOrchestrator()
        self.publisher = Publisher(self.store)
        self.reconciler = Reconciler(self.store, self.orchestrator, self.publisher)
        self.control = Control(self.store, self.orchestrator, self.reconciler)
        self.mcp = admin_server(self.control)
        app = build_app(self.control, self.publisher, host=self.host, mcp=self.mcp)
        await self.reconciler.start()
        self.server = Server(
            app,
            address=self.host,
            port=self.port,
            interface=Interfaces.ASGI,
            log_level="error",
            log_dictconfig=_GRANIAN_LOGGING,
            log_access=False,
        )
        self._task = asyncio.create_task(self.server.serve())
        await self._wait_listening()
        log.info(
            "control process %d serving on %s (REST /v1/, MCP /mcp, data dir %s, %d "
            "backends registered)",
            os.getpid(),
            self.url,
            data_dir,
            len(self.store.backends()),
        )

    async def _wait_listening(self, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while True:
                if self._task is not None and self._task.done():
                    self._task.result()  # raises what stopped it
                    raise StartError(f"the control API stopped before listening on {self.url}")
                with contextlib.suppress(OSError):
                    _, w = await asyncio.open_connection(self.host, self.port)
                    w.close()
                    return
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        """Stop serving, stop every backend process, close the store."""
        if self._task is not None:
            self.publisher.close()
            self.server.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 10)
        await self.reconciler.close()
        self.store.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        log.info("control process %d stopped", os.getpid())
