"""The control process and the data plane together, as users run them: real `mcp-gateway`
processes, real MCP backends started by the local orchestrator, the official MCP client.

Covered: scaling 2 -> 3 under 20 live sessions, a killed backend restarted, a killed control
process (the data plane keeps its last snapshot) restarted with its state intact, and a clean
stop leaving no backend process behind.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from control_stack import backend_command
from mcp import Client
from serving import MCP_GATEWAY, Serve, http_status

from gwfast._testbase.backend import BackendFactory
from gwfast._testbase.procs import Proc, free_port, wait_port


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    s = Serve(tmp_path / "data")
    s.start()
    try:
        yield s
    finally:
        s.stop()


async def _routable(url: str, timeout: float = 10.0) -> None:
    """Until the data plane has the backend (the snapshot reached the worker)."""
    deadline = time.monotonic() + timeout
    while (await asyncio.to_thread(http_status, url))[0] in (0, 404, 503):
        assert time.monotonic() < deadline, f"{url} never became routable"
        await asyncio.sleep(0.05)


async def _whoami(c: Client) -> str:
    return (await c.call_tool("whoami", {})).content[0].text


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_scale_up_under_live_sessions(serve: Serve) -> None:
    api = serve.api
    api.ok("POST", "/v1/backends", {"name": "tools", "command": backend_command(), "replicas": 2})
    await asyncio.to_thread(api.wait_ready, "tools", 2)
    url = serve.url("tools")
    await _routable(url)

    stop = asyncio.Event()
    seen: list[set[str]] = [set() for _ in range(20)]
    calls = [0] * 20

    async def session(i: int) -> None:
        async with Client(url, mode="legacy") as c:
            while not stop.is_set():
                seen[i].add(await _whoami(c))
                calls[i] += 1
                await asyncio.sleep(0.02)

    async def until(what: str, done) -> None:
        deadline = time.monotonic() + 60
        while not done():
            assert time.monotonic() < deadline, what
            assert not any(t.done() for t in tasks), [t for t in tasks if t.done()]
            await asyncio.sleep(0.05)

    tasks = [asyncio.create_task(session(i)) for i in range(20)]
    try:
        await until("every session calling", lambda: all(calls))
        before = set().union(*seen)
        assert len(before) == 2, before
        status, _ = await asyncio.to_thread(
            api.call, "PATCH", "/v1/backends/tools", {"replicas": 3}
        )
        assert status == 200
        await asyncio.to_thread(api.wait_ready, "tools", 3)
        counted = list(calls)
        # every one of the 20 sessions keeps calling across the new snapshot
        await until(
            "calls after the scale",
            lambda: all(n >= c + 5 for n, c in zip(calls, counted, strict=True)),
        )
    finally:
        stop.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    assert not [r for r in results if r is not None], results  # no session broke
    assert all(len(s) == 1 for s in seen), seen  # every session stayed on its replica

    # new sessions reach the new replica (bounded loads favour the empty one)
    new: set[str] = set()
    for _ in range(30):
        async with Client(url, mode="legacy") as c:
            new.add(await _whoami(c))
        if new - before:
            break
    assert new - before, f"no new session reached the third replica: {new} vs {before}"


async def test_killed_backend_is_restarted(serve: Serve) -> None:
    api = serve.api
    api.ok("POST", "/v1/backends", {"name": "tools", "command": backend_command()})
    st = await asyncio.to_thread(api.wait_ready, "tools", 1)
    [replica] = st["replica_status"]
    pid, endpoint = replica["pid"], replica["endpoint"]
    url = serve.url("tools")
    await _routable(url)
    async with Client(url, mode="legacy") as c:
        first = await _whoami(c)

    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:
        st = api.ok("GET", "/v1/backends/tools/status")
        [r] = st["replica_status"]
        if r["restarts"] >= 1 and r["state"] == "ready" and r["pid"] != pid:
            break
        assert time.monotonic() < deadline, st
        await asyncio.sleep(0.1)
    assert "SIGKILL" in r["last_exit"], r
    assert r["endpoint"] == endpoint  # same port: the route did not change
    await _routable(url)
    async with Client(url, mode="legacy") as c:
        assert await _whoami(c) != first  # a new process answers


async def test_control_away_and_back(tmp_path: Path, backend_factory: BackendFactory) -> None:
    """The control process and a data plane run apart (as on Kubernetes): the data plane
    keeps serving its last snapshot while the control process is dead, and the restarted
    control process has its registry intact and is followed again."""
    [backend] = backend_factory.start(1, prefix="away")
    control = Serve(tmp_path / "data", command="control").start()
    port = free_port()
    proxy = Proc(
        [
            MCP_GATEWAY,
            "proxy",
            "--control",
            control.control_url,
            "--snapshot-cache",
            str(tmp_path / "snapshot.json"),
            "--config",
            str(_proxy_config(tmp_path, port)),
        ],
        env={"PYTHONUNBUFFERED": "1"},
        log=tmp_path / "proxy.log",
    )
    try:
        wait_port(port, proc=proxy.popen)
        control.api.ok("POST", "/v1/backends", {"name": "remote", "url": backend.url})
        url = f"http://127.0.0.1:{port}/remote/mcp"
        await _routable(url)

        control.proc.kill()  # SIGKILL: no goodbye
        async with Client(url, mode="legacy") as c:
            for _ in range(10):
                assert await _whoami(c) == "away-0"
            await asyncio.sleep(1.0)  # a few failed polls later, still serving
            assert await _whoami(c) == "away-0"

        again = Serve(tmp_path / "data", command="control")
        again.control_port = control.control_port  # the address the data plane follows
        control = again.start()
        assert [b["name"] for b in control.api.ok("GET", "/v1/backends")] == ["remote"]
        control.api.ok("POST", "/v1/backends", {"name": "second", "url": backend.url})
        await _routable(f"http://127.0.0.1:{port}/second/mcp")
        log = proxy.output()
        assert log.count("unreachable") == 1, log[-3000:]
    finally:
        proxy.stop()
        control.stop()


def _proxy_config(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "proxy.yaml"
    path.write_text(f"listen: 127.0.0.1:{port}\nadmin_listen: null\n")
    return path


async def test_stop_leaves_no_backend_process(tmp_path: Path) -> None:
    serve = Serve(tmp_path / "data").start()
    try:
        serve.api.ok(
            "POST", "/v1/backends", {"name": "tools", "command": backend_command(), "replicas": 2}
        )
        st = await asyncio.to_thread(serve.api.wait_ready, "tools", 2)
        pids = [r["pid"] for r in st["replica_status"]]
        assert all(_alive(p) for p in pids)
    finally:
        code = serve.stop()
    assert code == 0, serve.output()[-3000:]
    assert not [p for p in pids if _alive(p)]
    # and started again on the same data directory, it runs the registry as it was
    again = Serve(tmp_path / "data").start()
    try:
        st = await asyncio.to_thread(again.api.wait_ready, "tools", 2)
        assert {r["pid"] for r in st["replica_status"]}.isdisjoint(pids)
    finally:
        again.stop()


async def test_readme_quick_start(serve: Serve) -> None:
    """The README's steps after `mcp-gateway serve`: register with the CLI, list, call."""
    import subprocess
    import sys

    def cli(*args: str) -> str:
        out = subprocess.run(
            [MCP_GATEWAY, "--control", serve.control_url, *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    cli(
        "backends",
        "register",
        "tools",
        "--replicas",
        "2",
        "--",
        sys.executable,
        "-m",
        "gwfast._testbase.backend",
        "--port",
        "{port}",
    )
    await asyncio.to_thread(serve.api.wait_ready, "tools", 2)
    listed = cli("backends", "list")
    assert "tools" in listed and "2/2" in listed, listed
    url = serve.url("tools")
    await _routable(url)
    async with Client(url, mode="legacy") as c:
        assert (await c.call_tool("echo", {"message": "hi"})).content[0].text == "hi"
    status = cli("backends", "status", "tools")
    assert status.count("ready") >= 2, status


async def test_a_registration_reaches_every_worker_within_a_second(
    tmp_path: Path, backend_factory: BackendFactory
) -> None:
    """With 2 data plane workers, each applies a registration within a second of its answer
    (each worker holds its own long-poll: no polling interval). Judged by the workers' own
    log times, so the test's HTTP round trips do not count; then 20 new connections in a
    row, spread over both workers by the kernel, all route."""
    [backend] = backend_factory.start(1, prefix="fast")
    serve = Serve(tmp_path / "data", workers=2).start()
    try:
        url = serve.url("quick")
        assert (await asyncio.to_thread(http_status, url))[0] == 404
        await asyncio.to_thread(
            serve.api.ok, "POST", "/v1/backends", {"name": "quick", "url": backend.url}
        )
        registered = time.time()
        routed, deadline = 0, time.monotonic() + 10
        while routed < 20:
            status = (await asyncio.to_thread(http_status, url))[0]
            routed = routed + 1 if status not in (404, 503) else 0
            assert time.monotonic() < deadline, f"not routed everywhere: {status}"
    finally:
        serve.stop()
    applied = {}
    for line in serve.output().splitlines():
        m = re.match(r"(\S+ \S+),(\d+) .* worker (\d+) applied control snapshot .*'quick'", line)
        if m and "added" in line and "added none" not in line:
            stamp = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"))
            applied[m.group(3)] = stamp + int(m.group(2)) / 1000
    assert len(applied) == 2, serve.output()[-3000:]  # both workers
    # log times have millisecond resolution; the answer was read just before `registered`
    assert all(t - registered < 1.0 for t in applied.values()), (applied, registered)


def test_control_api_refuses_a_public_address(tmp_path: Path) -> None:
    import subprocess

    out = subprocess.run(
        [MCP_GATEWAY, "serve", "--data-dir", str(tmp_path), "--control-listen", "0.0.0.0:9"],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 2
    assert "loopback only" in out.stderr and "0.0.0.0:9" in out.stderr, out.stderr
    assert out.stdout == ""
