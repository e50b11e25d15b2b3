"""Processes: SIGHUP reload, SIGTERM drain and the supervisor of `workers: N`, on real
processes (gateway, MCP SDK backends) with real signals."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gwfast._testbase.backend import Backend, backend_config
from gwfast._testbase.gateway import Gateway
from gwfast._testbase.procs import REPO, free_port
from gwfast._testbase.rawhttp import (
    RawConnection,
    RawSession,
    Response,
    build_request,
    exchange,
    initialize_body,
)
from gwfast.sessions import key_id
from gwfast.supervisor import describe_exit, restart_delay

pytestmark = pytest.mark.timeout(60)

HOST = "127.0.0.1"
BOUND = 15.0  # upper bound of any wait: reached only when something is broken


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def reps(backend_factory) -> list[Backend]:
    return backend_factory.start(3, prefix="wk")


def wait_for(pred: Callable[[], Any], what: str, timeout: float = BOUND) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := pred()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


async def await_for(pred: Callable[[], Any], what: str, timeout: float = BOUND) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := pred()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return value


def worker_pids(gw: Gateway) -> list[int]:
    return [int(p) for p in re.findall(r"worker (\d+) serving on", gw.output())]


def wait_workers(gw: Gateway, n: int) -> list[int]:
    wait_for(lambda: len(worker_pids(gw)) >= n, f"{n} workers serving")
    return worker_pids(gw)


def rewrite(gw: Gateway, **changes: Any) -> None:
    gw.config.update(changes)
    gw.config_path.write_text(yaml.safe_dump(gw.config))


async def reload(gw: Gateway, *, generation: int, workers: int) -> None:
    """SIGHUP to the main process (as `kill -HUP $MAINPID`); wait until every worker
    applied the configuration."""
    assert gw.proc is not None
    os.kill(gw.proc.pid, signal.SIGHUP)
    line = f"applied configuration generation {generation} "
    await await_for(lambda: gw.output().count(line) >= workers, f"{workers} x {line!r}")


async def post(
    gw: Gateway, path: str, body: bytes, headers: dict[str, str] | None = None
) -> Response:
    """One POST on a new connection (so SO_REUSEPORT may pick any worker)."""
    h = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "Connection": "close",
        **(headers or {}),
    }
    data = build_request("POST", path, host=f"{HOST}:{gw.port}", headers=h, body=body)
    resp, _ = await exchange(HOST, gw.port, data, close_timeout=None)
    return resp


async def initialize(gw: Gateway, backend: str) -> Response:
    return await post(gw, f"/{backend}/mcp", initialize_body())


async def whoami(gw: Gateway, backend: str, sid: str) -> Response:
    """tools/call whoami in session `sid` on a new connection."""
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "tools/call",
            "params": {"name": "whoami", "arguments": {}},
        }
    ).encode()
    return await post(
        gw, f"/{backend}/mcp", body, {"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18"}
    )


async def sessions_on(gw: Gateway, backend: str, replicas: set[str]) -> dict[str, str]:
    """New sessions until every replica in `replicas` owns one: session id -> replica."""
    owners: dict[str, str] = {}
    for _ in range(40):
        if replicas <= set(owners.values()):
            break
        resp = await initialize(gw, backend)
        assert resp.status == 200, resp
        owners[resp.header("mcp-session-id")] = resp.header("x-replica")
    assert replicas <= set(owners.values()), owners
    return owners


def replica_said(resp: Response) -> str:
    (result,) = [m["result"] for m in resp.messages() if "result" in m]
    return result["content"][0]["text"]


class SlowCall:
    """`slow` in its own session, read as a stream: progress events, then the result."""

    def __init__(self, gw: Gateway, backend: str, seconds: float) -> None:
        self.gw, self.backend, self.seconds = gw, backend, seconds
        self.started = asyncio.Event()
        self.progress = 0
        self.resp: Response | None = None
        self.conn: RawConnection | None = None
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> dict[str, Any] | None:
        s = await RawSession.open(HOST, self.gw.port, f"/{self.backend}/mcp")
        self.conn = s.conn
        try:
            token = f"tok-{uuid.uuid4().hex}"
            await s.conn.send(
                s.request_bytes(
                    s.tool_call_body("slow", {"seconds": self.seconds}, progress_token=token)
                )
            )
            resp = self.resp = await s.conn.read_head(method="POST")
            assert resp.status == 200 and resp.content_type == "text/event-stream", resp
            result = None
            async for event in s.conn.sse_events(resp, timeout=BOUND):
                msg = json.loads(event.get("data") or "{}")
                if msg.get("method") == "notifications/progress":
                    self.progress += 1
                    self.started.set()
                elif "result" in msg:
                    result = msg["result"]
            return result  # the stream has ended: resp.complete says how
        except BaseException:
            await s.close()
            raise
        finally:
            self.started.set()

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()

    async def in_flight(self) -> None:
        async with asyncio.timeout(BOUND):
            await self.started.wait()
        assert not self.task.done(), self.task

    async def result(self) -> dict[str, Any] | None:
        async with asyncio.timeout(BOUND + self.seconds):
            return await self.task


async def refused(port: int) -> bool:
    try:
        conn = await RawConnection.open(HOST, port, timeout=2)
    except (ConnectionRefusedError, OSError):
        return True
    await conn.close()
    return False


async def wait_refused(port: int) -> None:
    deadline = time.monotonic() + BOUND
    while not await refused(port):
        assert time.monotonic() < deadline, f"port {port} still accepts connections"
        await asyncio.sleep(0.05)


def gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaped counts: it runs nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


# ----------------------------------------------------------------------------- reload


async def test_reload_adds_and_removes_backends_in_place(reps, gateway_factory):
    gw = gateway_factory.start({"a": backend_config([reps[0].url])}, workers=2)
    pids = wait_workers(gw, 2)
    assert (await initialize(gw, "a")).status == 200
    resp = await initialize(gw, "b")
    assert resp.status == 404 and "unknown backend" in resp.jsonrpc_error()["message"]

    # b added; listen and workers changed too: those need a restart and keep their values
    rewrite(
        gw,
        backends={"a": backend_config([reps[0].url]), "b": backend_config([reps[1].url])},
        workers=3,
        listen=f"{HOST}:{free_port()}",
    )
    await reload(gw, generation=1, workers=2)
    for _ in range(12):  # new connections: spread over both workers
        resp = await initialize(gw, "b")
        assert resp.status == 200 and resp.header("x-replica") == reps[1].name, resp
        assert (await initialize(gw, "a")).status == 200
    out = gw.output()
    assert "listen changed" in out and "workers changed" in out and "restart" in out
    assert worker_pids(gw) == pids and gw.proc.alive()  # the same processes serve it

    # a removed: 404 for new requests
    rewrite(gw, backends={"b": backend_config([reps[1].url])})
    await reload(gw, generation=2, workers=2)
    for _ in range(6):
        resp = await initialize(gw, "a")
        assert resp.status == 404 and "unknown backend" in resp.jsonrpc_error()["message"]
        assert (await initialize(gw, "b")).status == 200
    assert worker_pids(gw) == pids and gw.proc.alive()


async def test_invalid_reload_is_logged_and_the_old_configuration_serves(reps, gateway_factory):
    gw = gateway_factory.start({"a": backend_config([reps[0].url])})  # one worker: in-process
    bad = {**backend_config([reps[0].url]), "placement": "sticky"}
    rewrite(gw, backends={"a": bad, "b": backend_config([reps[1].url])})
    check = subprocess.run(
        [sys.executable, "-m", "gwfast", "check", "--config", str(gw.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert check.returncode == 2, check
    message = check.stderr.strip().removeprefix("mcp-gateway: ")
    assert "sticky" in message and "$.backends.a.placement" in message

    os.kill(gw.proc.pid, signal.SIGHUP)
    await await_for(lambda: message in gw.output(), "the check message in the log")
    assert (await initialize(gw, "a")).status == 200
    assert (await initialize(gw, "b")).status == 404  # nothing of the bad file applied

    rewrite(gw, backends={"a": backend_config([reps[0].url]), "b": backend_config([reps[1].url])})
    await reload(gw, generation=1, workers=1)  # the bad one did not count as a generation
    assert (await initialize(gw, "b")).status == 200
    assert gw.proc.alive()


async def test_sessions_and_streams_survive_a_reload(reps, gateway_factory):
    r0, r1, r2 = reps
    k1, k2 = _key(), _key()
    gw = gateway_factory.start(
        {"s": backend_config([r0.url, r1.url])}, workers=2, session_keys=[k1]
    )
    wait_workers(gw, 2)
    owners = await sessions_on(gw, "s", {r0.name, r1.name})
    calls = [SlowCall(gw, "s", 3) for _ in range(2)]
    for c in calls:
        await c.in_flight()

    # r0 removed, r2 added; a new key seals, the old one still opens
    rewrite(gw, backends={"s": backend_config([r1.url, r2.url])}, session_keys=[k2, k1])
    await reload(gw, generation=1, workers=2)

    for c in calls:  # the calls in flight stream on and complete, wherever they were
        result = await c.result()
        assert result is not None and "slept 3" in result["content"][0]["text"], c.resp
        assert c.progress >= 2
        await c.close()
    for sid, owner in owners.items():
        resp = await whoami(gw, "s", sid)
        if owner == r0.name:
            assert resp.status == 404, resp
            assert "no longer configured" in resp.jsonrpc_error()["message"]
        else:  # still configured: still routed to its endpoint, by any worker
            assert resp.status == 200 and replica_said(resp) == owner, resp
    new_kid = key_id(base64.b64decode(k2))
    for _ in range(6):
        resp = await initialize(gw, "s")
        assert resp.status == 200 and resp.header("x-replica") in (r1.name, r2.name), resp
        raw = base64.urlsafe_b64decode(resp.header("mcp-session-id") + "==")
        assert raw[1:5] == new_kid


async def test_a_reload_forgets_opened_sessions_of_removed_endpoints_and_retired_keys(
    reps, gateway_factory
):
    """The relay keeps opened session ids per backend; a reload must not serve from what it
    kept: a removed endpoint's sessions and a retired key's sessions get 404 at once."""
    r0, r1, _ = reps
    k1, k2 = _key(), _key()
    gw = gateway_factory.start({"s": backend_config([r0.url, r1.url])}, session_keys=[k1])
    owners = await sessions_on(gw, "s", {r0.name, r1.name})
    for sid, owner in owners.items():  # opened and kept by the (single) worker
        resp = await whoami(gw, "s", sid)
        assert resp.status == 200 and replica_said(resp) == owner, resp

    rewrite(gw, backends={"s": backend_config([r1.url])}, session_keys=[k2, k1])
    await reload(gw, generation=1, workers=1)
    for sid, owner in owners.items():
        resp = await whoami(gw, "s", sid)
        if owner == r0.name:
            assert resp.status == 404, resp
            assert "no longer configured" in resp.jsonrpc_error()["message"]
        else:
            assert resp.status == 200 and replica_said(resp) == owner, resp

    rewrite(gw, backends={"s": backend_config([r1.url])}, session_keys=[k2])  # k1 retired
    await reload(gw, generation=2, workers=1)
    for sid in owners:
        resp = await whoami(gw, "s", sid)
        assert resp.status == 404, resp
        assert "key was retired" in resp.jsonrpc_error()["message"]


# ----------------------------------------------------------------------------- drain


@pytest.mark.parametrize(("workers", "target"), [(1, "group"), (2, "group"), (2, "supervisor")])
async def test_sigterm_drains_requests_in_flight_and_closes_idle_connections(
    reps, gateway_factory, workers, target
):
    gw = gateway_factory.start(
        {"a": backend_config([reps[0].url])}, workers=workers, timeouts={"drain": "30s"}
    )
    wait_workers(gw, workers)
    call = SlowCall(gw, "a", 3)
    await call.in_flight()
    idle = await RawConnection.open(HOST, gw.port)
    await idle.send(build_request("GET", "/healthz", host=f"{HOST}:{gw.port}"))
    assert (await idle.read_response()).status == 200  # kept alive, now idle

    if target == "group":  # every process gets it, as with Ctrl-C or systemd
        gw.proc.signal(signal.SIGTERM)
    else:
        os.kill(gw.proc.pid, signal.SIGTERM)
    assert await idle.wait_closed(timeout=BOUND), "the idle connection was kept open"
    assert not call.task.done() and gw.proc.alive()  # still draining
    await wait_refused(gw.port)  # the listeners are closed

    result = await call.result()
    assert result is not None and "slept 3" in result["content"][0]["text"], call.resp
    assert call.resp is not None and call.resp.complete
    assert call.conn is not None and await call.conn.wait_closed(timeout=BOUND)
    assert gw.proc.popen.wait(BOUND) == 0
    await idle.close()
    await call.close()


async def test_drain_timeout_closes_open_streams(reps, gateway_factory):
    gw = gateway_factory.start({"a": backend_config([reps[0].url])}, timeouts={"drain": "1s"})
    s = await RawSession.open(HOST, gw.port, "/a/mcp")
    stream = await RawConnection.open(HOST, gw.port)
    await stream.send(
        build_request(
            "GET",
            "/a/mcp",
            host=f"{HOST}:{gw.port}",
            headers={
                "Accept": "text/event-stream",
                "Mcp-Session-Id": s.session_id,
                "MCP-Protocol-Version": "2025-06-18",
            },
        )
    )
    head = await stream.read_head()
    assert head.status == 200 and head.content_type == "text/event-stream", head
    gw.proc.signal(signal.SIGTERM)
    assert gw.proc.popen.wait(BOUND) == 0
    assert "still open after 1s" in gw.output()
    with contextlib.suppress(Exception):
        async for _ in stream.body_pieces(head, timeout=BOUND):
            pass
    assert stream.eof and not head.complete
    await stream.close()
    await s.close()


async def test_a_second_signal_stops_at_once(reps, gateway_factory):
    gw = gateway_factory.start(
        {"a": backend_config([reps[0].url])}, workers=2, timeouts={"drain": "60s"}
    )
    wait_workers(gw, 2)
    call = SlowCall(gw, "a", 30)
    await call.in_flight()
    gw.proc.signal(signal.SIGTERM)
    await await_for(lambda: gw.output().count("draining (") >= 2, "both workers draining")
    assert gw.proc.alive() and not call.task.done()
    gw.proc.signal(signal.SIGTERM)
    assert gw.proc.popen.wait(BOUND) == 0
    assert await call.result() is None  # the stream was cut, no result
    assert call.resp is not None and not call.resp.complete
    await call.close()


# ----------------------------------------------------------------------------- supervisor


async def test_a_killed_worker_is_replaced_and_the_port_keeps_answering(reps, gateway_factory):
    gw = gateway_factory.start({"a": backend_config([reps[0].url])}, workers=2)
    first, second = wait_workers(gw, 2)
    os.kill(first, signal.SIGKILL)
    await await_for(
        lambda: f"worker {first} was killed by SIGKILL" in gw.output(),
        "the supervisor to report the dead worker",
    )
    for _ in range(10):  # one worker left: it answers every new connection
        assert (await initialize(gw, "a")).status == 200
    new = await await_for(
        lambda: [p for p in worker_pids(gw) if p not in (first, second)], "a replacement worker"
    )
    assert gone(first) and not gone(second) and not gone(new[0])
    for _ in range(10):
        assert (await initialize(gw, "a")).status == 200
    assert gw.proc.alive()


def test_workers_exit_when_the_supervisor_dies(reps, gateway_factory):
    gw = gateway_factory.start({"a": backend_config([reps[0].url])}, workers=2)
    pids = wait_workers(gw, 2)
    os.kill(gw.proc.pid, signal.SIGKILL)  # the supervisor only: no handler runs
    gw.proc.popen.wait(BOUND)
    wait_for(lambda: all(gone(p) for p in pids), "the orphaned workers to exit")


def test_restart_backoff_and_exit_reasons():
    delays, d = [], 0.0
    for _ in range(8):  # a worker that crashes at start: 1 s doubling to 30 s
        d = restart_delay(0.2, d)
        delays.append(d)
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert restart_delay(3600, 30) == 0  # after a stable run: at once, and the doubling resets
    assert restart_delay(0.2, 0) == 1
    assert describe_exit(9) == "was killed by SIGKILL"
    assert describe_exit(3 << 8) == "exited with status 3"


async def test_swap_carries_health_and_load_over():
    from gwfast.config import parse_config
    from gwfast.gateway import Gateway as Gw
    from gwfast.model import Snapshot
    from gwfast.sessions import SessionSealer

    def snap(*urls: str) -> Snapshot:
        cfg, backends = parse_config({"backends": {"b": {"endpoints": list(urls)}}})
        return Snapshot.build(cfg, backends)

    u1, u2, u3 = (f"http://127.0.0.1:{p}/mcp" for p in (1, 2, 3))
    gw = Gw(snap(u1, u2), SessionSealer([os.urandom(32)]), asyncio.get_running_loop())
    old1, old2 = gw.snapshot.backends["b"].endpoints
    old2.backend.set_health(old2, False)
    old2.fails, old2.checked = 2, True
    old1.outstanding = 3  # requests in flight on the old objects

    gw.swap(snap(u3, u2, u1))
    b = gw.snapshot.backends["b"]
    new3, new2, new1 = b.endpoints
    assert gw.routes[b"/b/mcp"] is b
    assert not new2.healthy and new2.fails == 2 and new2.checked and b.eligible[new2.index] == 0
    assert new1.healthy and new3.healthy and not new3.checked
    assert new1.load() == 3 and new1.outstanding == 0  # counted until they end
    old1.outstanding = 0
    assert new1.load() == 0
    assert b.place(None) in (new1, new3)  # the unhealthy one takes no new session
    gw.pool.close()
