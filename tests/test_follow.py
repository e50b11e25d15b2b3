"""The data plane follows the control process (`mcp-gateway proxy --control URL`): the
long-poll client against a real HTTP control server, and real gateways in front of real MCP
SDK backends that route from its snapshots, survive its outages and start from the cache."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from mcp import Client

from gwfast import follow, model, model_py, wire
from gwfast._testbase.backend import Backend, wait_http_ok
from gwfast._testbase.gateway import Gateway, pure_env
from gwfast._testbase.procs import REPO
from gwfast._testbase.rawhttp import (
    RawSession,
    Response,
    build_request,
    exchange,
    get,
    initialize_body,
)
from gwfast._testbase.snapshots import ControlServer
from gwfast.config import ConfigError, backends_from_wire, parse_config
from gwfast.follow import Follower, parse_control_url

pytestmark = pytest.mark.timeout(60)

HOST = "127.0.0.1"
BOUND = 15.0  # upper bound of any wait: reached only when something is broken
HC = wire.HealthCheck(interval=1.0, timeout=1.0)


def wb(*urls: str, **fields: Any) -> wire.Backend:
    return wire.Backend(endpoints=list(urls), **{"health_check": HC, **fields})


async def await_for(pred: Callable[[], Any], what: str, timeout: float = BOUND) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := pred()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
    return value


async def cancel(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.fixture(scope="module")
def reps(backend_factory) -> list[Backend]:
    return backend_factory.start(3, prefix="fl")


@pytest.fixture
def control():
    with ControlServer() as server:
        yield server


def start_gateway(
    gateway_factory, control: ControlServer, *, cache: Path | None = None, **config: Any
) -> Gateway:
    """A gateway following `control` (its file has no backends), alive on /healthz."""
    args = ["--control", control.url]
    if cache is not None:
        args += ["--snapshot-cache", str(cache)]
    gw = Gateway(
        config,
        workdir=gateway_factory.workdir,
        name=f"follow-{len(gateway_factory.started)}",
        env=pure_env(),
        args=args,
    )
    gateway_factory.started.append(gw)  # stopped, and its log shown on failure, by conftest
    gw.start()
    wait_http_ok(f"{gw.base}/healthz", proc=gw.proc)
    return gw


async def initialize(gw: Gateway, backend: str) -> Response:
    """initialize on a new connection (so SO_REUSEPORT may pick any worker)."""
    data = build_request(
        "POST",
        f"/{backend}/mcp",
        host=f"{HOST}:{gw.port}",
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "Connection": "close",
        },
        body=initialize_body(),
    )
    resp, _ = await exchange(HOST, gw.port, data, close_timeout=None)
    return resp


async def routable(gw: Gateway, backend: str) -> Response:
    """Poll initialize until the backend is known (not 404); the answer."""
    deadline = time.monotonic() + BOUND
    while (resp := await initialize(gw, backend)).status == 404:
        assert time.monotonic() < deadline, f"{backend} never became routable: {resp!r}"
        await asyncio.sleep(0.02)
    return resp


async def whoami(gw: Gateway, backend: str) -> str:
    """A real MCP SDK session: initialize, tools/call whoami."""
    async with Client(gw.url(backend), mode="legacy") as c:
        return (await c.call_tool("whoami", {})).content[0].text


# ----------------------------------------------------------------------------- conversion


def test_wire_backends_get_the_static_checks_and_may_have_no_endpoint():
    no_panic = wire.HealthCheck(panic=False)
    ok = backends_from_wire({"x": wb(), "y": wb("http://127.0.0.1:1/mcp", health_check=no_panic)})
    assert ok["x"].endpoints == [] and ok["x"].health_check.interval == 1.0
    assert ok["y"].health_check.panic is False
    assert parse_config({})[0].workers == 1  # defaults for everything else
    _, static = parse_config({"backends": {"x": {"endpoints": ["http://a/mcp"]}}})
    assert static["x"].health_check.panic is True  # the static struct carries it too
    for backends, path, words in [
        ({"x": wb("ftp://a/mcp")}, "$.backends.x.endpoints[0]", "http://"),
        ({"x": wb("http://a/mcp", affinity="sticky")}, "$.backends.x.affinity", "session"),
        ({"x": wb(placement="rr")}, "$.backends.x.placement", "header:NAME"),
        ({"Bad_Name": wb()}, "$.backends.Bad_Name", "DNS-1123"),
        ({"x": wb("http://a/mcp", "http://a/mcp")}, "$.backends.x.endpoints", "twice"),
    ]:
        with pytest.raises(ConfigError) as e:
            backends_from_wire(backends)
        assert f"`{path}`" in str(e.value) and words in str(e.value)


@pytest.mark.parametrize("impl", [model_py, model] if model.COMPILED else [model_py])
def test_a_backend_without_endpoints_places_nothing_and_carries_its_note(impl):
    cfg, _ = parse_config({})
    backends = backends_from_wire({"x": wb(), "y": wb("http://127.0.0.1:1/mcp")})
    snap = impl.Snapshot.build(cfg, backends, notes={"x": "0 of 1 replicas ready"})
    x = snap.backends["x"]
    assert x.place(None) is None and x.place(b"k") is None and x.pick_least_loaded() is None
    assert not x.any_healthy() and x.note == "0 of 1 replicas ready"
    assert snap.backends["y"].note == "" and snap.backends["y"].place(None) is not None


def test_control_urls():
    assert parse_control_url("http://127.0.0.1:8081") == ("127.0.0.1", 8081)
    assert parse_control_url("http://[::1]:8081/") == ("::1", 8081)
    for bad in ("https://a:1", "http://a", "http://a:1/v1", "a:1", "http://a:x", "http://u@a:1"):
        with pytest.raises(ValueError, match="http://host:port"):
            parse_control_url(bad)


# ----------------------------------------------------------------------------- the client


class Got:
    def __init__(self) -> None:
        self.versions: list[int] = []

    def __call__(self, snapshot: wire.Snapshot, backends: dict) -> None:
        self.versions.append(snapshot.version)


async def test_follower_long_polls_on_one_kept_alive_connection(control):
    got = Got()
    task = asyncio.create_task(Follower(control.url, got, wait=0.2).run())
    try:
        await await_for(lambda: got.versions == [1], "the first snapshot")
        await await_for(lambda: len(control.requests) >= 4, "304s and new polls")
        assert all("have=1&wait=0.2" in r for r in control.requests[1:])
        control.publish({"a": wb("http://127.0.0.1:1/mcp")})
        await await_for(lambda: got.versions == [1, 2], "the second snapshot")
        assert control.connections == 1
    finally:
        await cancel(task)


async def test_follower_logs_an_outage_once_and_a_bad_snapshot_once(control, caplog, monkeypatch):
    monkeypatch.setattr(follow, "MIN_BACKOFF", 0.01)
    monkeypatch.setattr(follow, "MAX_BACKOFF", 0.05)
    got = Got()
    follower = Follower(control.url, got, wait=0.2)
    task = asyncio.create_task(follower.run())
    try:
        await await_for(lambda: got.versions == [1], "the first snapshot")
        control.stop()
        # accepts and closes at once: each retry is one connection, so retries are counted
        attempts = []

        def slam(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            attempts.append(time.monotonic())
            writer.close()

        server = await asyncio.start_server(slam, HOST, control.port)
        await await_for(lambda: len(attempts) >= 5, "retries")
        server.close()
        await server.wait_closed()
        down = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(down) == 1 and "still serving snapshot version 1" in down[0], down
        control.start()
        control.publish({"x": wb("ftp://bad/mcp")})  # invalid: refused, asked for again
        await await_for(lambda: "reachable again" in caplog.text, "back")
        await await_for(lambda: "invalid snapshot version 2" in caplog.text, "the refusal")
        await await_for(lambda: any("have=2&" in r for r in control.requests), "have=2")
        assert caplog.text.count("invalid snapshot") == 1
        assert "`$.backends.x.endpoints[0]`" in caplog.text and follower.version == 1
        control.publish({"x": wb("http://127.0.0.1:1/mcp")})
        await await_for(lambda: got.versions == [1, 3], "the next valid one")
        assert caplog.text.count("reachable again") == 1
    finally:
        await cancel(task)


async def test_follower_refuses_oversize_undecodable_and_silent_answers(
    control, caplog, monkeypatch
):
    monkeypatch.setattr(follow, "MIN_BACKOFF", 0.01)
    monkeypatch.setattr(follow, "MAX_BACKOFF", 0.05)
    monkeypatch.setattr(follow, "MAX_RESPONSE", 1000)
    monkeypatch.setattr(follow, "SLACK", 0.3)
    got = Got()
    follower = Follower(control.url, got, wait=0.2)
    task = asyncio.create_task(follower.run())
    try:
        await await_for(lambda: got.versions == [1], "the first snapshot")
        for body, words in [(b"x" * 2000, "larger than 1000 bytes"), (b"{no", "undecodable")]:
            control.set(wire.Snapshot(version=9), body=body)
            await await_for(lambda w=words: w in caplog.text, words)
            n = len(got.versions)
            control.set(wire.Snapshot(version=9 + n))
            await await_for(lambda n=n: len(got.versions) > n, "recovery")
        assert follower.down is None and caplog.text.count("reachable again") == 2
    finally:
        await cancel(task)
    # a control process that accepts and never answers: the exchange times out
    held: list[asyncio.StreamWriter] = []
    silent = await asyncio.start_server(lambda r, w: held.append(w), HOST, 0)
    port = silent.sockets[0].getsockname()[1]
    task = asyncio.create_task(Follower(f"http://{HOST}:{port}", got, wait=0.1).run())
    try:
        await await_for(lambda: "no answer within 0.4s" in caplog.text, "the timeout")
        assert "serving no backends until it answers" in caplog.text
    finally:
        await cancel(task)
        for w in held:
            w.close()
        silent.close()
        await silent.wait_closed()


# ----------------------------------------------------------------------------- gateways


def test_backends_in_the_file_or_a_bad_url_refuse_the_start(tmp_path):
    f = tmp_path / "gw.yaml"
    f.write_text(yaml.safe_dump({"backends": {"a": {"endpoints": ["http://a:1/mcp"]}}}))
    removed = f"with --control the backends come from the control process; remove them from {f}"
    for args, words in [
        (["--control", "http://127.0.0.1:1", "--config", str(f)], (removed, "`$.backends`")),
        (["--control", "https://127.0.0.1:1"], ("http://host:port",)),
    ]:
        r = subprocess.run(
            [sys.executable, "-m", "gwfast", "proxy", *args],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=REPO,
        )
        assert r.returncode == 2 and "Traceback" not in r.stderr, r
        assert all(w in r.stderr for w in words), r.stderr


async def test_snapshots_route_at_once_and_open_sessions_survive(reps, control, gateway_factory):
    r0, r1, r2 = reps
    control.publish({"a": wb(r0.url)})
    gw = start_gateway(gateway_factory, control)
    assert (await routable(gw, "a")).status == 200
    s = await RawSession.open(HOST, gw.port, "/a/mcp")
    assert (await s.call_tool("whoami", {}))["content"][0]["text"] == r0.name

    # a new backend, an endpoint added to the open session's backend, one with none yet
    control.publish(
        {"a": wb(r0.url, r1.url), "b": wb(r2.url), "c": wb(status="0 of 1 replicas ready")}
    )
    t0 = time.monotonic()
    resp = await routable(gw, "b")
    assert time.monotonic() - t0 < 1.0 and resp.status == 200
    assert resp.header("x-replica") == r2.name
    assert (await s.call_tool("whoami", {}))["content"][0]["text"] == r0.name
    resp = await initialize(gw, "c")
    assert resp.status == 503 and resp.jsonrpc_error()["message"], resp
    seen = {(await initialize(gw, "a")).header("x-replica") for _ in range(20)}
    assert seen == {r0.name, r1.name}

    # invalid: logged with the key path, the previous snapshot keeps serving
    bad = control.publish({"a": wb(r0.url, "https://127.0.0.1:1/mcp")})
    await await_for(lambda: f"invalid snapshot version {bad.version}" in gw.output(), "refusal")
    assert "must be an http:// URL" in gw.output() and "`$.backends.a.endpoints[1]`" in gw.output()
    assert (await s.call_tool("whoami", {}))["content"][0]["text"] == r0.name
    assert (await initialize(gw, "b")).status == 200

    # a reload of the file keeps the followed backends
    gw.config["timeouts"] = {"idle": "60s"}
    gw.config_path.write_text(yaml.safe_dump(gw.config))
    os.kill(gw.proc.pid, signal.SIGHUP)
    await await_for(lambda: "applied configuration generation 1 " in gw.output(), "reload")
    assert (await initialize(gw, "b")).status == 200
    await s.close()


async def test_an_outage_keeps_the_last_snapshot_and_is_logged_once(reps, control, gateway_factory):
    r0, r1, _ = reps
    control.publish({"a": wb(r0.url)})
    gw = start_gateway(gateway_factory, control)
    await routable(gw, "a")
    control.stop()
    stopped = time.monotonic()
    await await_for(lambda: "unreachable" in gw.output(), "the outage in the log")
    # real MCP sessions throughout >= 1.5 s of outage: retries at 0.25, 0.75 s have happened
    while time.monotonic() - stopped < 1.5:
        assert await whoami(gw, "a") == r0.name
    out = gw.output()
    assert out.count("unreachable") == 1, out
    assert "unreachable (" in out and "); still serving snapshot version 2" in out

    control.start()
    control.publish({"a": wb(r0.url), "b": wb(r1.url)})
    assert (await routable(gw, "b")).status == 200
    assert await whoami(gw, "b") == r1.name
    assert gw.output().count("reachable again") == 1 and gw.output().count("unreachable") == 1


async def test_the_cache_lets_a_restarted_gateway_route_while_control_is_down(
    reps, control, gateway_factory, tmp_path
):
    r0 = reps[0]
    cache = tmp_path / "cache" / "snapshot.json"
    cache.parent.mkdir()
    snap = control.publish({"a": wb(r0.url, status="1 of 1 replicas ready")})
    gw = start_gateway(gateway_factory, control, cache=cache)
    await routable(gw, "a")
    await await_for(cache.exists, "the cache file")
    assert wire.decode(cache.read_bytes()) == snap
    gw.stop()
    control.stop()

    cold = start_gateway(gateway_factory, control)  # no cache: nothing to route yet
    assert (await initialize(cold, "a")).status == 404
    assert (await get(HOST, cold.port, "/readyz")).status == 503
    await await_for(lambda: "serving no backends until it answers" in cold.output(), "log")
    cold.stop()

    warm = start_gateway(gateway_factory, control, cache=cache)
    assert await whoami(warm, "a") == r0.name
    line = f"serving cached snapshot version {snap.version} from {cache} until the control"
    assert line in warm.output()
    await await_for(lambda: "unreachable" in warm.output(), "the outage in the log")
    assert [p.name for p in cache.parent.iterdir()] == ["snapshot.json"]  # no temp files


async def test_every_worker_follows(reps, control, gateway_factory):
    r0, r1, _ = reps
    key = base64.b64encode(os.urandom(32)).decode()
    first = control.publish({"a": wb(r0.url)})
    gw = start_gateway(gateway_factory, control, workers=2, session_keys=[key])
    applied = "applied control snapshot version {} "
    await await_for(lambda: gw.output().count(applied.format(first.version)) == 2, "2 workers")
    nxt = control.publish({"a": wb(r0.url), "b": wb(r1.url)})
    await await_for(lambda: gw.output().count(applied.format(nxt.version)) == 2, "both apply")
    for _ in range(16):  # new connections, spread over both workers by SO_REUSEPORT
        resp = await initialize(gw, "b")
        assert resp.status == 200 and resp.header("x-replica") == r1.name, resp

    # a reload through the supervisor keeps each worker's followed backends
    gw.config["timeouts"] = {"idle": "60s"}
    gw.config_path.write_text(yaml.safe_dump(gw.config))
    os.kill(gw.proc.pid, signal.SIGHUP)
    gen = "applied configuration generation 1 "
    await await_for(lambda: gw.output().count(gen) == 2, "both workers reload")
    for _ in range(16):
        assert (await initialize(gw, "b")).status == 200
    assert "unreachable" not in gw.output()
