"""The control process's parts assembled in-process, for the admin tools and CLI tests.

`stack(data_dir)` builds the real registry (SQLite), local orchestrator, reconciler and
`Control`; `serve_app(app)` serves a Starlette app with granian's embedded server (as the
control process does) on a free loopback port. `admin_stdio_server.py` uses them as a
subprocess speaking MCP on stdio.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from granian.constants import Interfaces
from granian.server.embed import Server
from starlette.applications import Starlette

from control.local import LocalOrchestrator
from control.publish import Publisher
from control.reconcile import Reconciler
from control.service import Control
from control.store import Store
from gwfast._testbase.procs import free_port

# granian logs to stdout by default; a control process's stdout may be speaking MCP
GRANIAN_LOGGING = {
    "handlers": {
        "console": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
        "access": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
    },
}


def backend_command(replica: str | None = None) -> list[str]:
    """The project's test MCP backend as a registered local command. Without `replica` each
    process names itself at random, so `whoami` tells the replicas apart."""
    argv = [sys.executable, "-m", "gwfast._testbase.backend", "--port", "{port}"]
    return argv if replica is None else [*argv, "--replica", replica]


async def wait_gone(pids: list[int], timeout: float = 15.0) -> None:
    """Until every pid is reaped: a test must not end (closing the stack) while the
    reconciler is still stopping an unregistered backend's replicas."""
    async with asyncio.timeout(timeout):
        while any(Path(f"/proc/{pid}").exists() for pid in pids):
            await asyncio.sleep(0.05)


@dataclass
class Stack:
    store: Store
    orchestrator: LocalOrchestrator
    publisher: Publisher
    reconciler: Reconciler
    control: Control


@contextlib.asynccontextmanager
async def stack(data_dir: Path) -> AsyncIterator[Stack]:
    data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(data_dir / "state.db")
    orchestrator = LocalOrchestrator(stop_grace=2.0)
    publisher = Publisher(store)
    reconciler = Reconciler(store, orchestrator, publisher)
    control = Control(store, orchestrator, reconciler)
    await reconciler.start()
    try:
        yield Stack(store, orchestrator, publisher, reconciler, control)
    finally:
        await reconciler.close()
        store.close()


@contextlib.asynccontextmanager
async def serve_app(app: Starlette) -> AsyncIterator[str]:
    """`app` on a free loopback port; yields its base URL (http://127.0.0.1:P)."""
    port = free_port()
    server = Server(
        app,
        address="127.0.0.1",
        port=port,
        interface=Interfaces.ASGI,
        log_level="error",
        log_dictconfig=GRANIAN_LOGGING,
    )
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while True:
                if task.done():
                    task.result()
                    raise RuntimeError("granian stopped before listening")
                try:
                    _, w = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await asyncio.sleep(0.02)
                    continue
                w.close()
                break
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
