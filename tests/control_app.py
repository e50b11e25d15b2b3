"""The control API for tests, built for real: SQLite store, local orchestrator, reconciler
(`control_stack.stack`), the Starlette app served by granian's embedded server on a free
port (`control_stack.serve_app`), driven over HTTP with httpx2.

Used by tests/test_control_api.py and tests/test_adapters.py. The app is assembled the way
`control.server` does it (REST routes, then the `/adapters` alias), plus
`control.web.error_handlers()` for the paths no route matches.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from control_stack import serve_app, stack

from control.publish import Publisher
from control.reconcile import Reconciler
from control.server import build_app
from control.service import Control

JSON = {"Content-Type": "application/json"}  # what every client of the API sends


def quick_command(tag: str = "") -> list[str]:
    """A replica that starts in a blink and says so on stdout: an HTTP file server."""
    code = (
        f"print('replica up {tag}', flush=True); import http.server as h, sys; "
        "h.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), h.BaseHTTPRequestHandler)"
        ".serve_forever()"
    )
    return [sys.executable, "-u", "-c", code, "{port}"]


@dataclass
class App:
    http: httpx2.AsyncClient
    control: Control
    publisher: Publisher
    reconciler: Reconciler
    base: str

    async def call(self, method: str, path: str, body: Any = None, **kw: Any) -> httpx2.Response:
        if body is not None:
            kw["json"] = body
        return await self.http.request(method, path, **kw)

    async def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        r = await self.call(method, path, body, **kw)
        assert 200 <= r.status_code < 300, (r.status_code, r.text)
        return r.json() if r.content else None

    async def version(self) -> int:
        """The published snapshot's version, after a reconcile pass settles it."""
        await self.reconciler.run_once()
        r = await self.http.get("/v1/snapshot")
        assert r.status_code == 200, r.text
        return r.json()["version"]

    async def wait_ready(self, name: str, replicas: int, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            st = await self.ok("GET", f"/v1/backends/{name}/status")
            if st["ready_replicas"] >= replicas and not st["message"]:
                return st
            assert time.monotonic() < deadline, f"{name} not ready: {st}"
            await asyncio.sleep(0.05)


@asynccontextmanager
async def control_app(data_dir: Path) -> AsyncIterator[App]:
    async with stack(data_dir) as st:
        app = build_app(st.control, st.publisher, host="127.0.0.1")
        async with (
            serve_app(app) as base,
            httpx2.AsyncClient(base_url=base, timeout=30, headers=JSON) as http,
        ):
            yield App(http, st.control, st.publisher, st.reconciler, base)


def error_of(r: Any, status: int, field: str | None = None, words: str = "") -> dict:
    """The API's JSON error of response `r`: its status, the field it names, and `words` in
    its message (case-insensitive)."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert err["status"] == status and err["message"]
    if field is not None:
        assert err.get("field", "") == field, err
    assert words.lower() in err["message"].lower(), err
    return err
