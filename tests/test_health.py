"""Health checks that say why, and panic routing, with real processes and on both twins.

A new user's first setup: server-everything (npm) has no /healthz, so the default check
fails. With `health_check.panic` on (the default) the gateway still routes to it, since it
accepts connections, and says so once in the log and in /metrics; with `panic: false` every
call gets a 503 whose message names the failed check and the fix. The decision itself
(`Backend.record_check`) and the wording (`wire.health_advice`) are tested without a network
on the pure and the compiled model.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import time
import urllib.request

import pytest
from mcp import Client
from prometheus_client.parser import text_string_to_metric_families

from gwfast import metrics, model, model_py
from gwfast._testbase.backend import backend_config
from gwfast._testbase.procs import free_port
from gwfast._testbase.rawhttp import initialize_body
from gwfast.config import parse_config
from gwfast.health import probe
from gwfast.wire import health_advice

pytestmark = pytest.mark.timeout(120)

INTERVAL = "200ms"
INIT = initialize_body()
HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
NOT_FOUND = (
    "GET /healthz answered 404: implement it or set health_check.path (null checks TCP only)"
)
ENTERS = "enters panic mode"
LEAVES = "leaves panic mode"


# ----------------------------------------------------------------------------- helpers


def wait_until(check, *, timeout: float = 15.0, what: str = ""):
    """Poll `check` until it returns something true (returned), or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while not (got := check()):
        assert time.monotonic() < deadline, f"not reached within {timeout}s: {what}"
        time.sleep(0.05)
    return got


def scrape(gw) -> dict[tuple[str, str], float]:
    """Per-backend samples of /metrics: (name, backend label) -> value."""
    with urllib.request.urlopen(f"{gw.admin_base}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if set(s.labels) == {"backend"}:
                out[(s.name, s.labels["backend"])] = s.value
    return out


def panic_state(gw, backend: str) -> tuple[float, float]:
    """(gwfast_backend_panic, gwfast_health_panics_total) of `backend`."""
    s = scrape(gw)
    return s[("gwfast_backend_panic", backend)], s[("gwfast_health_panics_total", backend)]


def healthy(gw, backend: str) -> float:
    return scrape(gw)[("gwfast_healthy_endpoints", backend)]


def post(port: int, path: str, body: bytes = INIT) -> tuple[int, bytes, http.client.HTTPResponse]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("POST", path, body, HEADERS)
        r = c.getresponse()
        return r.status, r.read(), r
    finally:
        c.close()


def readyz(port: int) -> int:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", "/readyz")
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def set_health(backend, status: int) -> None:
    """Make the SDK test backend's GET /healthz answer `status`."""
    req = urllib.request.Request(f"{backend.base}/healthz?status={status}", method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200


def everything_config(url: str, **health: object) -> dict:
    """The default health check (GET /healthz), checked every 200 ms."""
    return {"endpoints": [url], "health_check": {"interval": INTERVAL, **health}}


# ----------------------------------------------------------------------------- real processes


async def test_panic_routes_to_a_server_without_healthz(everything_server, gateway_factory):
    gw = gateway_factory.start({"everything": everything_config(everything_server.url)})
    assert wait_until(lambda: panic_state(gw, "everything") == (1, 1), what="panic in /metrics")
    assert healthy(gw, "everything") == 1  # routed: panic
    assert readyz(gw.port) == 200  # there is a routable endpoint
    async with Client(gw.url("everything"), mode="legacy") as c:
        result = await c.call_tool("echo", {"message": "through panic"})
    assert "through panic" in result.content[0].text
    log = wait_until(lambda: ENTERS in gw.output() and gw.output(), what="the panic warning")
    assert f"endpoint {everything_server.url} fails its health check: {NOT_FOUND}" in log
    assert "health_check.panic: false" in log
    # checks go on every 200 ms; the call above took several of them: still one panic
    assert panic_state(gw, "everything") == (1, 1)
    log = gw.output()
    assert log.count(ENTERS) == 1 and LEAVES not in log and "ejected" not in log


async def test_without_panic_the_503_says_why(everything_server, gateway_factory):
    cfg = everything_config(everything_server.url, panic=False)
    gw = gateway_factory.start({"everything": cfg})
    wait_until(lambda: healthy(gw, "everything") == 0, what="the endpoint ejected")
    assert readyz(gw.port) == 503
    status, body, _ = post(gw.port, "/everything/mcp")
    assert status == 503
    message = json.loads(body)["error"]["message"]
    assert message == (
        f"backend 'everything' has no healthy endpoint; retry later. "
        f"{everything_server.url}: {NOT_FOUND}"
    )
    assert "GET /healthz answered 404" in message and "health_check.path" in message
    assert panic_state(gw, "everything") == (0, 0)
    log = gw.output()
    assert f"endpoint {everything_server.url} ejected: {NOT_FOUND}" in log
    assert "panic mode" not in log


def test_a_closed_port_is_named_and_no_panic(gateway_factory):
    dead = f"http://127.0.0.1:{free_port()}/mcp"  # nothing listens there
    gw = gateway_factory.start({"gone": backend_config([dead], health_interval=INTERVAL)})
    wait_until(lambda: healthy(gw, "gone") == 0, what="the endpoint ejected")
    assert readyz(gw.port) == 503
    status, body, _ = post(gw.port, "/gone/mcp")
    assert status == 503
    message = json.loads(body)["error"]["message"]
    assert message == (
        f"backend 'gone' has no healthy endpoint; retry later. {dead}: TCP connect failed "
        "(Connection refused): is the server running on that port?"
    )
    assert panic_state(gw, "gone") == (0, 0)  # nothing accepts connections: no panic
    assert "panic mode" not in gw.output()


def test_leaving_panic_resumes_normal_routing(backend_factory, gateway_factory):
    a, b = backend_factory.start(2, prefix="hc")
    gw = gateway_factory.start({"p": backend_config([a.url, b.url], health_interval=INTERVAL)})
    wait_until(lambda: readyz(gw.port) == 200, what="ready")
    set_health(a, 500)
    set_health(b, 500)
    assert wait_until(lambda: panic_state(gw, "p") == (1, 1), what="panic")
    seen = set()
    for _ in range(16):  # both fail their check, both accept connections: both routed
        status, _, r = post(gw.port, "/p/mcp")
        assert status == 200
        seen.add(r.getheader("X-Replica"))
    assert seen == {a.name, b.name}
    set_health(a, 200)
    assert wait_until(lambda: panic_state(gw, "p") == (0, 1), what="out of panic")
    for _ in range(10):  # normal routing: b still fails its check, so only a
        status, _, r = post(gw.port, "/p/mcp")
        assert status == 200 and r.getheader("X-Replica") == a.name
    assert healthy(gw, "p") == 1
    log = wait_until(lambda: LEAVES in gw.output() and gw.output(), what="the log")
    assert log.count(ENTERS) == 1 and log.count(LEAVES) == 1
    assert f"{a.url} passes its health check again; normal routing resumes" in log
    assert "the endpoint reports itself unhealthy" in log
    set_health(b, 200)
    assert wait_until(lambda: healthy(gw, "p") == 2, what="b back")


# ----------------------------------------------------------------------------- wording


def test_health_advice_wording():
    assert health_advice("/healthz", 404, None) == NOT_FOUND
    assert health_advice("/healthz", 500, None) == (
        "GET /healthz answered 500: the endpoint reports itself unhealthy"
    )
    assert health_advice("/live", 503, None).startswith("GET /live answered 503: the endpoint")
    assert "without authentication" in health_advice("/healthz", 401, None)
    assert "redirect" in health_advice("/healthz", 302, None)
    assert health_advice("/healthz", 418, None).endswith(
        "only 2xx is healthy; fix the endpoint or set health_check.path (null checks TCP only)"
    )
    assert health_advice("/healthz", 204, None) == ""
    assert health_advice(None, None, None) == ""
    refused = "TCP connect failed (Connection refused): is the server running on that port?"
    assert health_advice("/healthz", None, "Connection refused") == refused
    assert health_advice(None, None, "Connection refused") == refused
    assert health_advice("/healthz", None, "no answer within 2s") == "no answer within 2s"
    assert len(health_advice("/healthz", None, "x" * 10_000)) < 200  # bounded


async def test_probe_reports_reason_and_reachability():
    handlers: list[asyncio.Task] = []

    async def serve(answer: bytes | None) -> asyncio.Server:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            handlers.append(asyncio.current_task())
            try:
                await reader.readuntil(b"\r\n\r\n")
                if answer is None:  # never answers; ends when the prober hangs up
                    await reader.read()
                else:
                    writer.write(answer)
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()

        return await asyncio.start_server(handle, "127.0.0.1", 0)

    servers = [
        await serve(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
        await serve(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        await serve(None),
    ]
    urls = [f"http://127.0.0.1:{s.sockets[0].getsockname()[1]}/mcp" for s in servers]
    closed = f"http://127.0.0.1:{free_port()}/mcp"  # nothing listens there
    eps = _backend(model_py.Backend, [*urls, closed]).endpoints
    try:
        assert await probe(eps[0], "/healthz", 2.0) == (NOT_FOUND, True)
        assert await probe(eps[1], "/healthz", 2.0) == (None, True)
        assert await probe(eps[2], "/healthz", 0.2) == ("no answer within 0.2s", True)
        assert await probe(eps[2], None, 0.2) == (None, True)  # TCP only
        why, reachable = await probe(eps[3], "/healthz", 2.0)
        assert not reachable and why.startswith("TCP connect failed (Connection refused)")
    finally:
        for s in servers:
            s.close()
            await s.wait_closed()
        async with asyncio.timeout(5):
            await asyncio.gather(*handlers, return_exceptions=True)


# ----------------------------------------------------------------------------- the decision


def twins() -> list[type]:
    return [model_py.Backend] + ([model.Backend] if model.COMPILED else [])


def _backend(cls: type, urls: list[str], **health: object):
    _, backends = parse_config({"backends": {"b": {"endpoints": urls, "health_check": health}}})
    return cls("b", backends["b"])


def _urls(n: int) -> list[str]:
    return [f"http://127.0.0.1:{9000 + i}/mcp" for i in range(n)]


def _slot(b, offset: int) -> int:
    return b.m[b.m_base + offset]


REFUSED = health_advice("/healthz", None, "Connection refused")


@pytest.mark.parametrize("cls", twins())
def test_panic_is_entered_when_none_passes_and_left_when_one_does(cls: type) -> None:
    b = _backend(cls, _urls(2))
    e0, e1 = b.endpoints
    assert b.record_check(e0, NOT_FOUND, True) == 0  # below unhealthy_threshold (2)
    assert e0.healthy and e0.passing and e0.last_check == NOT_FOUND
    assert b.record_check(e0, NOT_FOUND, True) == model.CHECK_FAILING
    assert not e0.healthy and not e0.passing and list(b.eligible) == [0, 1]
    assert _slot(b, metrics.EJECTIONS) == 1 and not b.panic
    b.record_check(e1, NOT_FOUND, True)
    assert b.record_check(e1, NOT_FOUND, True) == model.CHECK_FAILING | model.PANIC_ENTERED
    assert b.panic and e0.healthy and e1.healthy and list(b.eligible) == [1, 1]
    assert (_slot(b, metrics.PANIC), _slot(b, metrics.PANICS)) == (1, 1)
    assert _slot(b, metrics.HEALTHY) == 2 and b.any_healthy()
    for e in (e0, e1, e0):  # more failing checks change nothing: entered once
        assert b.record_check(e, NOT_FOUND, True) == 0
    assert _slot(b, metrics.PANICS) == 1
    # one stops accepting connections: it is out, the other still routed in panic
    assert b.record_check(e0, REFUSED, False) == 0
    assert not e0.healthy and e1.healthy and b.panic
    # it passes again: panic ends, and only what passes is routed
    assert b.record_check(e0, None, True) == model.CHECK_PASSING | model.PANIC_LEFT
    assert not b.panic and e0.healthy and not e1.healthy and list(b.eligible) == [1, 0]
    assert (_slot(b, metrics.PANIC), _slot(b, metrics.PANICS)) == (0, 1)
    assert b.record_check(e1, NOT_FOUND, True) == 0 and not e1.healthy


@pytest.mark.parametrize("cls", twins())
def test_no_panic_when_nothing_accepts_connections(cls: type) -> None:
    b = _backend(cls, _urls(2))
    e0, e1 = b.endpoints
    b.record_check(e0, NOT_FOUND, True)
    b.record_check(e0, NOT_FOUND, True)
    b.record_check(e1, NOT_FOUND, True)
    assert b.record_check(e1, NOT_FOUND, True) & model.PANIC_ENTERED
    b.record_check(e0, REFUSED, False)
    # the last reachable one stops accepting connections: panic ends, nothing is routed
    assert b.record_check(e1, REFUSED, False) == model.PANIC_LEFT
    assert not b.panic and not b.any_healthy() and _slot(b, metrics.PANIC) == 0
    # one accepts connections again (its check still fails): panic again, counted again
    assert b.record_check(e1, NOT_FOUND, True) == model.PANIC_ENTERED
    assert list(b.eligible) == [0, 1] and _slot(b, metrics.PANICS) == 2


@pytest.mark.parametrize("cls", twins())
def test_panic_false_answers_503_with_the_reason(cls: type) -> None:
    b = _backend(cls, _urls(2), panic=False)
    e0, e1 = b.endpoints
    for e in (e0, e0, e1):
        b.record_check(e, NOT_FOUND, True)
    assert b.record_check(e1, REFUSED, False) == model.CHECK_FAILING
    assert not b.panic and not b.any_healthy() and _slot(b, metrics.PANICS) == 0
    assert b.place(None) is None
    assert b.unavailable_message() == (
        f"backend 'b' has no healthy endpoint; retry later. {e0.url}: {NOT_FOUND}; "
        f"{e1.url}: {REFUSED}"
    )
    b.note = "1 of 2 replicas ready: replica 1 exited with status 1 (see backend_logs)"
    assert b.unavailable_message().endswith(f"{REFUSED}. {b.note}")


@pytest.mark.parametrize("cls", twins())
def test_passive_ejection_holds_until_the_endpoints_own_check(cls: type) -> None:
    b = _backend(cls, _urls(2))
    e0, e1 = b.endpoints
    for e in (e0, e0, e1, e1):
        b.record_check(e, NOT_FOUND, True)
    assert b.panic and b.any_healthy()
    b.set_health(e1, False)  # what the relay does when a connect to e1 fails
    assert b.record_check(e0, NOT_FOUND, True) == 0
    assert not e1.healthy  # another endpoint's check does not bring it back
    assert b.record_check(e1, NOT_FOUND, True) == 0
    assert e1.healthy  # its own check connected: routed again (still panic)
    # outside panic: a failure below unhealthy_threshold restores nothing either
    b = _backend(cls, _urls(2))
    e0, e1 = b.endpoints
    b.set_health(e0, False)  # passive ejection
    assert b.record_check(e0, REFUSED, False) == 0 and not e0.healthy and e0.passing
    assert b.record_check(e0, None, True) == 0 and e0.healthy  # a passing check does


@pytest.mark.parametrize("cls", twins())
def test_unavailable_message_is_bounded(cls: type) -> None:
    b = _backend(cls, _urls(8), panic=False)
    for e in b.endpoints:
        b.record_check(e, REFUSED, False)
        b.record_check(e, REFUSED, False)
    msg = b.unavailable_message()
    assert msg.count("TCP connect failed") == model_py.SHOWN_ENDPOINTS
    assert msg.endswith("; and 3 more") and b.endpoints[5].url not in msg
    fresh = _backend(cls, _urls(1))
    fresh.set_health(fresh.endpoints[0], False)  # a failed connect before any check
    assert fresh.unavailable_message().endswith("not health-checked yet")


@pytest.mark.parametrize("cls", twins())
def test_healthy_threshold_counts_before_panic_ends(cls: type) -> None:
    b = _backend(cls, _urls(1), healthy_threshold=2)
    (e0,) = b.endpoints
    b.record_check(e0, NOT_FOUND, True)
    assert b.record_check(e0, NOT_FOUND, True) == model.CHECK_FAILING | model.PANIC_ENTERED
    assert b.record_check(e0, None, True) == 0 and b.panic and e0.healthy  # 1 of 2
    assert b.record_check(e0, None, True) == model.CHECK_PASSING | model.PANIC_LEFT


async def test_reload_carries_panic_over():
    from gwfast.gateway import Gateway
    from gwfast.model import Snapshot
    from gwfast.sessions import SessionSealer

    def snap(**health: object) -> Snapshot:
        cfg, backends = parse_config(
            {"backends": {"b": {"endpoints": _urls(1), "health_check": health}}}
        )
        return Snapshot.build(cfg, backends)

    gw = Gateway(snap(), SessionSealer([os.urandom(32)]), asyncio.get_running_loop())
    try:
        b = gw.snapshot.backends["b"]
        b.record_check(b.endpoints[0], NOT_FOUND, True)
        b.record_check(b.endpoints[0], NOT_FOUND, True)
        assert b.panic and _slot(b, metrics.PANICS) == 1
        gw.swap(snap())
        new = gw.snapshot.backends["b"]
        assert new.panic and new.endpoints[0].healthy and _slot(new, metrics.PANIC) == 1
        assert new.record_check(new.endpoints[0], NOT_FOUND, True) == 0  # not entered again
        assert _slot(new, metrics.PANICS) == 1
        gw.swap(snap(panic=False))  # turned off: the next check leaves panic
        new = gw.snapshot.backends["b"]
        assert new.record_check(new.endpoints[0], NOT_FOUND, True) == model.PANIC_LEFT
        assert not new.any_healthy() and _slot(new, metrics.PANIC) == 0
    finally:
        gw.pool.close()


def test_panic_gauge_is_the_max_over_workers_and_the_counter_a_sum():
    block = metrics.SharedBlock(2, capacity=2)
    snaps = []
    for i in range(2):
        cfg, backends = parse_config({"backends": {"b": {"endpoints": _urls(1)}}})
        snap = model.Snapshot.build(cfg, backends)
        block.region(i).bind(snap)
        snaps.append(snap.backends["b"])
    for b in snaps:  # both workers enter panic; one of them leaves it
        b.record_check(b.endpoints[0], NOT_FOUND, True)
        b.record_check(b.endpoints[0], NOT_FOUND, True)
    snaps[1].record_check(snaps[1].endpoints[0], None, True)
    text = metrics.render(block.read()).decode()
    assert 'gwfast_backend_panic{backend="b"} 1\n' in text
    assert 'gwfast_health_panics_total{backend="b"} 2\n' in text
    list(text_string_to_metric_families(text))  # parses
