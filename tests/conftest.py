"""Shared fixtures: real MCP backends, real gateways, pinned npm tools, server-everything.

Everything runs as real processes on free loopback ports (see gwfast/_testbase). Factories
are module-scoped so a test module starts its backends and gateways once; what a factory
started is stopped when the module ends, and its logs are printed when a test fails.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from control_app import App, control_app

from gwfast._testbase.backend import BackendFactory, wait_http_ok
from gwfast._testbase.gateway import Gateway, pure_env
from gwfast._testbase.npm import ensure_npm_tools, node_env
from gwfast._testbase.procs import REPO, Proc, free_port, wait_port
from gwfast._testbase.redis import RedisServer

LOOPBACK_PRELOAD = REPO / "gwfast" / "_testbase" / "loopback.cjs"


@pytest.fixture(scope="module")
def backend_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackendFactory]:
    factory = BackendFactory(tmp_path_factory.mktemp("backends"))
    try:
        yield factory
    finally:
        factory.stop_all()


# ----------------------------------------------------------------------------- gateways


@dataclass
class GatewayFactory:
    workdir: Path
    started: list[Gateway] = field(default_factory=list)

    def start(
        self, backends: dict[str, dict[str, Any]], *, name: str = "gateway", **config: Any
    ) -> Gateway:
        """A gateway in front of `backends` ({name: backend_config(...)}), waited until alive.

        `config` adds top-level keys (e.g. ``timeouts={"upstream_keepalive": "1s"}``).
        """
        cfg = {"backends": backends, **config}
        gw = Gateway(cfg, workdir=self.workdir, name=f"{name}-{len(self.started)}", env=pure_env())
        self.started.append(gw)
        gw.start()
        wait_http_ok(f"{gw.base}/healthz", proc=gw.proc)
        return gw

    def stop_all(self) -> None:
        for gw in self.started:
            gw.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {g.log.name} ---\n{g.output()[-4000:]}" for g in self.started)


@pytest.fixture(scope="module")
def gateway_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayFactory]:
    factory = GatewayFactory(tmp_path_factory.mktemp("gateways"))
    try:
        yield factory
    finally:
        factory.stop_all()


# ----------------------------------------------------------------------------- npm tools


@dataclass
class NpmTools:
    bin: Path
    home: Path

    def env(self) -> dict[str, str]:
        return node_env(self.home)

    def exe(self, name: str) -> str:
        return str(self.bin / name)


@pytest.fixture(scope="session")
def npm_tools(tmp_path_factory: pytest.TempPathFactory) -> NpmTools:
    """Node 22, conformance, server-everything and the Inspector at their pinned versions.

    Installed on first use (a failed install fails the test: nothing is skipped).
    """
    return NpmTools(ensure_npm_tools(), tmp_path_factory.mktemp("node-home"))


@dataclass
class EverythingServer:
    port: int
    proc: Proc

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"


@pytest.fixture(scope="module")
def everything_server(
    npm_tools: NpmTools, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EverythingServer]:
    """server-everything (streamable HTTP) kept on 127.0.0.1 by the loopback preload."""
    port = free_port()
    env = npm_tools.env()
    env["PORT"] = str(port)
    env["NODE_OPTIONS"] = f"{env.get('NODE_OPTIONS', '')} --require {LOOPBACK_PRELOAD}".strip()
    log = tmp_path_factory.mktemp("everything") / "server-everything.log"
    proc = Proc([npm_tools.exe("mcp-server-everything"), "streamableHttp"], env=env, log=log)
    try:
        wait_port(port, timeout=30, proc=proc.popen)
        yield EverythingServer(port, proc)
    finally:
        proc.stop()


# ----------------------------------------------------------------------------- Redis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server on a free loopback port for the session (nothing on disk).
    Tests share it: give each its own keys. A test that stops Redis starts its own."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


# ----------------------------------------------------------------------------- control API


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    """The control API (REST and /adapters) over a real store and local orchestrator, served
    by granian on a free port (tests/control_app.py)."""
    async with control_app(tmp_path) as a:
        yield a


# ----------------------------------------------------------------------------- failure logs


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed and call.when in ("setup", "call"):
        funcargs = getattr(item, "funcargs", {})
        for name in ("backend_factory", "gateway_factory"):
            factory = funcargs.get(name)
            if factory is not None:
                with contextlib.suppress(Exception):
                    report.sections.append((f"{name} logs", factory.logs()))
    return report
