"""Prometheus metrics on the admin listener: exact counts, gauges, summing over workers.

The counts are checked as differences between two scrapes, so what the harness itself sent
before (the `/healthz` it waits on) does not matter, and every series that should not have
moved is checked to be unchanged. Every scrape is parsed with prometheus_client's parser.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gwfast import metrics
from gwfast._native import hist
from gwfast._testbase.backend import backend_config
from gwfast._testbase.procs import free_port, python_argv
from gwfast._testbase.scripted import ScriptedUpstream
from gwfast.config import parse_config
from gwfast.model import Snapshot

pytestmark = pytest.mark.timeout(60)

HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2025-06-18",
}
INIT = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
)
INITIALIZED = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
GATEWAY_CODES = [str(c) for c in metrics.CODES]

Samples = dict[tuple[str, frozenset], float]


# ----------------------------------------------------------------------------- helpers


def scrape(port: int) -> Samples:
    """GET /metrics on the admin port, parsed as Prometheus text (a parse error fails)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", "/metrics")
    r = c.getresponse()
    text = r.read().decode()
    c.close()
    assert r.status == 200
    assert r.getheader("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        assert family.documentation, f"{family.name} has no HELP"
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in out, f"duplicate sample {key}"
            out[key] = s.value
    return out


def val(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def delta(after: Samples, before: Samples) -> dict[tuple[str, frozenset], float]:
    """Samples that changed (counters only grow: new series count from zero)."""
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def wait_until(check, *, timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not reached within {timeout}s: {what}"
        time.sleep(0.02)


def req(name: str, backend: str, source: str, code: str) -> tuple[str, frozenset]:
    return (name, frozenset({"backend": backend, "source": source, "code": code}.items()))


def requests_key(backend: str, source: str, code: str) -> tuple[str, frozenset]:
    return req("gwfast_requests_total", backend, source, code)


def post(
    c: http.client.HTTPConnection, path: str, body: str, headers: dict | None = None
) -> tuple[int, bytes, http.client.HTTPResponse]:
    c.request("POST", path, body, {**HEADERS, **(headers or {})})
    r = c.getresponse()
    return r.status, r.read(), r


def raw_request(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
            if b"\r\n\r\n" in out:
                head, _, body = out.partition(b"\r\n\r\n")
                n = [
                    int(ln.split(b":")[1])
                    for ln in head.split(b"\r\n")
                    if ln.lower().startswith(b"content-length:")
                ]
                if n and len(body) >= n[0]:
                    break
        return out


def _check_histograms(s: Samples) -> None:
    """Buckets cumulative and ending at +Inf == _count, for every series."""
    series: dict[frozenset, list[tuple[float, float]]] = {}
    for (name, labels), v in s.items():
        if name == "gwfast_request_duration_seconds_bucket":
            d = dict(labels)
            le = float(d.pop("le"))
            series.setdefault(frozenset(d.items()), []).append((le, v))
    assert series
    for labels, buckets in series.items():
        buckets.sort()
        counts = [v for _, v in buckets]
        assert counts == sorted(counts)
        assert buckets[-1][0] == float("inf")
        assert counts[-1] == s[("gwfast_request_duration_seconds_count", labels)]
        assert [le for le, _ in buckets[:-1]] == list(metrics.BUCKETS)


# ----------------------------------------------------------------------------- real MCP calls


def test_exact_counts_after_mcp_calls_and_errors(backend_factory, gateway_factory):
    (b,) = backend_factory.start(1, prefix="metrics")
    gw = gateway_factory.start(
        {"m": backend_config([b.url], health_interval="60s")}, limits={"max_body_bytes": 4096}
    )
    before = scrape(gw.admin_port)
    calls = 4
    for _ in range(2):  # two sessions, each: initialize, initialized, `calls` tools/call
        c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        status, _, r = post(c, "/m/mcp", INIT)
        assert status == 200
        sid = {"Mcp-Session-Id": r.getheader("Mcp-Session-Id")}
        assert post(c, "/m/mcp", INITIALIZED, sid)[0] == 202
        for i in range(calls):
            call = json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": 2 + i,
                    "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"message": "hi"}},
                }
            )
            status, body, _ = post(c, "/m/mcp", call, sid)
            assert status == 200 and b"hi" in body
        c.close()
    # the gateway's own answers
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    assert post(c, "/nope/mcp", INIT)[0] == 404  # unknown backend
    assert post(c, "/m/mcp", INIT, {"Host": "evil.example"})[0] == 403  # DNS rebinding
    assert post(c, "/m/mcp", INIT, {"Mcp-Session-Id": "forged"})[0] == 404  # unknown session
    c.request("GET", "/metrics")  # not on the public listener
    r = c.getresponse()
    assert r.status == 404 and b"gwfast_" not in r.read()
    assert post(c, "/m/mcp", "x" * 5000)[0] == 413  # over max_body_bytes (closes)
    c.close()

    after = scrape(gw.admin_port)
    calls_ok = 2 * (2 + calls)
    d = delta(after, before)
    hist = {k: v for k, v in d.items() if k[0].startswith("gwfast_request_duration_seconds")}
    # one upstream connection carried everything, pooled until upstream_keepalive (4 s)
    assert d.pop(("gwfast_upstream_connections", frozenset({"backend": "m"}.items())), 0) <= 1
    assert {k: v for k, v in d.items() if k not in hist} == {
        requests_key("m", "endpoint", "2xx"): calls_ok,
        requests_key("", "gateway", "404"): 2,
        requests_key("", "gateway", "403"): 1,
        requests_key("m", "gateway", "404"): 1,
        requests_key("m", "gateway", "413"): 1,
        ("gwfast_sessions_created_total", frozenset({"backend": "m"}.items())): 2,
    }
    # the histogram moved only for m's 2xx, by one observation per relayed response
    m2xx = {"backend": "m", "code": "2xx"}
    assert {dict(k[1])["backend"] + dict(k[1])["code"] for k in hist} == {"m2xx"}
    assert d[("gwfast_request_duration_seconds_count", frozenset(m2xx.items()))] == calls_ok
    assert (
        d[("gwfast_request_duration_seconds_bucket", frozenset({**m2xx, "le": "+Inf"}.items()))]
        == calls_ok
    )
    assert d[("gwfast_request_duration_seconds_sum", frozenset(m2xx.items()))] > 0
    _check_histograms(after)
    # the series that exist from the start, at zero
    for cls in ("3xx", "4xx", "5xx"):
        assert val(after, "gwfast_requests_total", backend="m", source="endpoint", code=cls) == 0
    for code in GATEWAY_CODES:
        assert (
            "gwfast_requests_total",
            frozenset({"backend": "m", "source": "gateway", "code": code}.items()),
        ) in after
    assert val(after, "gwfast_endpoints", backend="m") == 1
    assert val(after, "gwfast_healthy_endpoints", backend="m") == 1
    assert val(after, "gwfast_upstream_connect_failures_total", backend="m") == 0
    assert val(after, "gwfast_workers") == 1


def test_admin_routes(gateway_factory):
    up = ScriptedUpstream(lambda conn, head: None)
    gw = gateway_factory.start({"a": {"endpoints": [up.url]}})
    c = http.client.HTTPConnection("127.0.0.1", gw.admin_port, timeout=5)
    for _ in range(2):  # keep-alive: two scrapes on one connection
        c.request("GET", "/metrics?x=1")
        r = c.getresponse()
        assert r.status == 200 and b"# TYPE gwfast_requests_total counter" in r.read()
    c.request("GET", "/healthz")
    r = c.getresponse()
    assert (r.status, r.read()) == (200, b'{"status":"ok"}')
    c.request("HEAD", "/metrics")
    r = c.getresponse()
    assert r.status == 200 and r.read() == b""
    c.request("POST", "/metrics", "x")
    r = c.getresponse()
    assert r.status == 405 and r.getheader("Allow") == "GET, HEAD"
    r.read()
    c.request("GET", "/a/mcp")  # the admin listener proxies nothing
    r = c.getresponse()
    assert r.status == 404
    r.read()
    c.close()
    assert b"400 Bad Request" in raw_request(gw.admin_port, b"NOT HTTP\r\n\r\n")
    up.close()


# ----------------------------------------------------------------------------- scripted endpoint


def _scripted() -> ScriptedUpstream:
    def handler(conn: socket.socket, head: bytes):
        if head.startswith(b"GET"):  # an SSE stream that lasts until the client leaves
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            ev = b"data: tick\n\n"
            try:
                while True:
                    conn.sendall(b"%x\r\n%s\r\n" % (len(ev), ev))
                    time.sleep(0.05)
            except OSError:
                return False
        status = 200
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"x-status:"):
                status = int(line.split(b":")[1])
        conn.sendall(
            b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\n\r\n{}" % status
        )
        return None

    return ScriptedUpstream(handler)


POST = b"POST /s/mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nX-Status: %d\r\n\r\n{}"


def _read_response(s: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"{}"):
        chunk = s.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data


def test_status_classes_streams_and_gauges_back_to_zero(gateway_factory):
    up = _scripted()
    gw = gateway_factory.start(
        {"s": {"endpoints": [up.url], "affinity": "none"}}, timeouts={"upstream_keepalive": "1s"}
    )
    port = gw.admin_port

    def gauge(name: str, **labels: str) -> float:
        return val(scrape(port), name, **labels)

    wait_until(lambda: gauge("gwfast_client_connections") == 0, what="no client connections")
    before = scrape(port)
    held = [socket.create_connection(("127.0.0.1", gw.port), timeout=5) for _ in range(3)]
    for s, status in zip(held, (200, 302, 404), strict=True):
        s.sendall(POST % status)
        assert _read_response(s).startswith(b"HTTP/1.1 %d" % status)
    for status in (500, 503, 201):
        held[0].sendall(POST % status)
        assert _read_response(held[0]).startswith(b"HTTP/1.1 %d" % status)
    stream = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    stream.sendall(b"GET /s/mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
    data = b""
    while b"data: tick" not in data:
        data += stream.recv(65536)
    mid = scrape(port)
    assert val(mid, "gwfast_client_connections") == 4
    assert val(mid, "gwfast_open_streams", backend="s") == 1
    # one upstream connection carried the requests one after another; the stream has it now
    assert val(mid, "gwfast_upstream_connections", backend="s") == 1
    stream.close()
    for s in held:
        s.close()
    wait_until(lambda: gauge("gwfast_client_connections") == 0, what="client connections 0")
    wait_until(lambda: gauge("gwfast_open_streams", backend="s") == 0, what="streams 0")
    wait_until(
        lambda: gauge("gwfast_upstream_connections", backend="s") == 0,
        what="upstream connections 0 (pooled ones closed after upstream_keepalive)",
    )
    after = scrape(port)
    d = delta(after, before)
    counts = {k[1]: v for k, v in d.items() if k[0] == "gwfast_requests_total"}
    assert counts == {
        frozenset({"backend": "s", "source": "endpoint", "code": "2xx"}.items()): 3,  # +stream
        frozenset({"backend": "s", "source": "endpoint", "code": "3xx"}.items()): 1,
        frozenset({"backend": "s", "source": "endpoint", "code": "4xx"}.items()): 1,
        frozenset({"backend": "s", "source": "endpoint", "code": "5xx"}.items()): 2,
    }
    # the stream lasted while the scrape above ran: its duration is not in the first bucket
    first = (
        "gwfast_request_duration_seconds_bucket",
        frozenset({"backend": "s", "code": "2xx", "le": "0.001"}.items()),
    )
    assert d.get(first, 0) <= 2
    _check_histograms(after)
    up.close()


# ----------------------------------------------------------------------------- two workers


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _owner_of(conns: list[socket.socket], port: int, pids: list[int]) -> list[int]:
    """The process holding the gateway's end of each client connection (from /proc)."""
    inode_of: dict[int, str] = {}  # client port -> inode of the gateway's socket
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        local, remote = f[1].split(":"), f[2].split(":")
        if int(local[1], 16) == port:
            inode_of[int(remote[1], 16)] = f[9]
    sockets: dict[str, int] = {}
    for pid in pids:
        with os.scandir(f"/proc/{pid}/fd") as it:
            for fd in it:
                try:
                    target = os.readlink(fd.path)
                except OSError:
                    continue
                if target.startswith("socket:["):
                    sockets[target[8:-1]] = pid
    return [sockets.get(inode_of.get(s.getsockname()[1], ""), 0) for s in conns]


def test_two_workers_counts_are_summed(gateway_factory):
    up = _scripted()
    gw = gateway_factory.start({"s": {"endpoints": [up.url], "affinity": "none"}}, workers=2)
    assert gw.proc is not None
    port = gw.admin_port
    wait_until(lambda: val(scrape(port), "gwfast_client_connections") == 0, what="no clients")
    before = scrape(port)
    assert val(before, "gwfast_workers") == 2
    children = _children(gw.proc.pid)
    conns: list[socket.socket] = []
    owners: list[int] = []
    while len(set(owners)) < 2:  # new connections until both workers hold some
        assert len(conns) < 200, "every connection went to one worker"
        conns += [socket.create_connection(("127.0.0.1", gw.port), timeout=5) for _ in range(8)]
        for s in conns[len(owners) :]:
            s.sendall(POST % 200)  # a first request: the worker has accepted it
            _read_response(s)
        owners = _owner_of(conns, gw.port, children)
        assert 0 not in owners
    per_conn = 3
    for s in conns:
        for _ in range(per_conn - 1):
            s.sendall(POST % 200)
            _read_response(s)
        s.sendall(b"PUT /s/mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
        assert b" 405 " in s.recv(65536)
    n = len(conns)
    key_2xx = requests_key("s", "endpoint", "2xx")
    wait_until(
        lambda: scrape(port)[key_2xx] - before[key_2xx] >= n * per_conn,
        what=f"{n * per_conn} requests counted",
    )
    after = scrape(port)
    assert after[key_2xx] - before[key_2xx] == n * per_conn  # exact: none lost, none twice
    assert (
        after[requests_key("s", "gateway", "405")] - before[requests_key("s", "gateway", "405")]
        == n
    )
    assert val(after, "gwfast_client_connections") == n  # the gauge summed over workers
    assert val(after, "gwfast_endpoints", backend="s") == 1
    assert val(after, "gwfast_healthy_endpoints", backend="s") == 1  # not 2: the fewest
    _check_histograms(after)
    for s in conns:
        s.close()
    wait_until(lambda: val(scrape(port), "gwfast_client_connections") == 0, what="clients 0")
    up.close()


# ----------------------------------------------------------------------------- the block itself


def _snapshot(*names: str) -> Snapshot:
    cfg, backends = parse_config(
        {
            "backends": {
                n: {"endpoints": ["http://127.0.0.1:9/mcp", "http://127.0.0.1:10/mcp"]}
                for n in names
            }
        }
    )
    return Snapshot.build(cfg, backends)


def test_block_regions_sum_restart_and_reload():
    block = metrics.SharedBlock(2, capacity=2)
    r0, r1 = block.region(0), block.region(1)
    s0, s1 = _snapshot("a", "b"), _snapshot("b", "a")  # each worker binds in its own order
    r0.bind(s0)
    r1.bind(s1)
    for snap in (s0, s1):
        a = snap.backends["a"]
        a.m[a.m_base + metrics.SESSIONS] += 1
        a.m[a.m_base + metrics.STREAMS] += 1
        a.hist.observe(200, hist.now() - 3_000_000)  # the 5 ms bucket
    s1.backends["a"].set_health(s1.backends["a"].endpoints[0], False)
    r0.slots[metrics.CONNECTIONS] += 2
    t = block.read()
    a = t.backends["a"]
    assert a.slots[metrics.SESSIONS] == 2 and a.slots[metrics.STREAMS] == 2
    assert (a.endpoints, a.healthy) == (2, 1)  # the fewest healthy any worker sees
    assert t.connections == 2
    text = metrics.render(t).decode()
    assert 'gwfast_request_duration_seconds_bucket{backend="a",code="2xx",le="0.0025"} 0' in text
    assert 'gwfast_request_duration_seconds_bucket{backend="a",code="2xx",le="0.005"} 2' in text
    assert re.search(
        r"gwfast_request_duration_seconds_sum{backend=\"a\",code=\"2xx\"} 0\.006\d*\n", text
    )
    list(text_string_to_metric_families(text))  # parses
    # worker 1 dies and a new process takes its slot: counters stay, gauges restart
    r1 = block.region(1)
    t = block.read()
    assert t.backends["a"].slots[metrics.SESSIONS] == 2
    assert t.backends["a"].slots[metrics.STREAMS] == 1
    r1.bind(_snapshot("a", "b"))
    # a reload removes b and adds c: the capacity of 2 names is used up, c is not exported
    r0.bind(_snapshot("a", "c"))
    r1.bind(_snapshot("a", "c"))
    t = block.read()
    assert sorted(t.backends) == ["a"]
    # b comes back: its counters continue
    r0.bind(_snapshot("a", "b"))
    assert "b" in block.read().backends


# ----------------------------------------------------------------------------- start and reload


def test_reload_adds_and_removes_backends_in_metrics(gateway_factory):
    up = _scripted()
    gw = gateway_factory.start({"a": {"endpoints": [up.url]}})
    assert gw.proc is not None
    keys = lambda: {dict(k[1]).get("backend") for k in scrape(gw.admin_port)}  # noqa: E731
    assert keys() == {None, "", "a"}
    cfg = {**gw.config, "backends": {"b": {"endpoints": [up.url]}}}
    gw.config_path.write_text(yaml.safe_dump(cfg))
    os.kill(gw.proc.pid, signal.SIGHUP)
    wait_until(lambda: keys() == {None, "", "b"}, what="b exported instead of a")
    up.close()


def test_admin_port_in_use_stops_the_start(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        cfg = tmp_path / "gw.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {"listen": f"127.0.0.1:{free_port()}", "admin_listen": f"127.0.0.1:{port}"}
            )
        )
        res = subprocess.run(
            python_argv("-m", "gwfast", "proxy", "--config", str(cfg)),
            capture_output=True,
            text=True,
            timeout=20,
        )
    assert res.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in res.stderr and "admin_listen" in res.stderr


@pytest.mark.parametrize("compiled", [False, True], ids=["pure", "compiled"])
def test_histogram_twins_agree(compiled):
    twin, now = (hist.HistogramsC, hist.now_c) if compiled else (hist.HistogramsPy, hist.now_py)
    if twin is None or now is None:  # GWFAST_NO_EXTENSIONS (test_native_loaded checks it)
        twin, now = hist.HistogramsPy, hist.now_py
    m = memoryview(bytearray(8 * 200)).cast("q")
    h, h100 = twin(m, 10), twin(m, 110)
    # a duration inside each bucket (the call itself adds microseconds), then statuses
    inside = [0.0005, 0.002, 0.004, 0.007, 0.02, 0.04, 0.07, 0.2, 0.6, 2.0, 5.0, 20.0]
    for i, seconds in enumerate(inside):
        h100.observe(200, now() - round(seconds * 1e9))
        assert m[110 + i] == 1, f"{seconds}s not in bucket {i}"
    assert m[110 + hist.HSUM] >= round(sum(inside) * 1e9)
    for status, cls in ((204, 0), (302, 1), (404, 2), (503, 3), (600, 3), (999, 3)):
        h.observe(status, now())
        assert m[10 + cls * hist.HSTRIDE] >= 1
    sums = sum(m[10 + c * hist.HSTRIDE + hist.HSUM] for c in range(4))
    assert sum(m.tolist()[:100]) - sums == 6
    for at in (-1, 200 - 4 * hist.HSTRIDE + 1):  # the histograms must fit in the slots
        with pytest.raises(IndexError):
            twin(m, at)
    # clock() is the twin's now(), the t0 the relay takes (monotonic, same base)
    a = now()
    b = h.clock()
    assert a <= b <= now()
    h.observe(200, h.clock() - 3_000_000)  # the 5 ms bucket of 2xx
    assert m[10 + 2] == 1
