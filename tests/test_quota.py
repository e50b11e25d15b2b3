"""Quotas (gwfast.quota): GCRA on both stores, against a real Redis.

The local store is driven with explicit clock values, so its answers are checked exactly.
Redis uses its own clock (TIME), so those tests use periods long enough that the test's own
run time only shortens a wait (checked as bounds), or sleep the returned wait. Every Redis
test has its own keys; the outage tests start their own server so they can stop it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from gwfast import wire
from gwfast._testbase.procs import REPO
from gwfast._testbase.redis import RedisServer
from gwfast.config import ConfigError, parse_config
from gwfast.quota import (
    REFUSED,
    SCRIPT_SHA,
    LocalQuotas,
    QuotaStoreSettings,
    RedisQuotas,
    backend_key,
    parse_quotas,
    redact,
    retry_after,
    tenant_key,
)

pytestmark = pytest.mark.timeout(120)


def key() -> bytes:
    return tenant_key(f"tenant-{uuid.uuid4().hex}")


# ----------------------------------------------------------------------------- local store


def test_local_burst_then_one_per_interval() -> None:
    q = LocalQuotas()
    k = tenant_key("engineering")
    assert [q.check(k, 5, 10.0, 1000.0) for _ in range(5)] == [0.0] * 5
    assert q.check(k, 5, 10.0, 1000.0) == 2.0  # T = 10 / 5
    # rejected requests consume nothing: the wait only shrinks as time passes
    assert [q.check(k, 5, 10.0, 1000.5) for _ in range(50)] == [1.5] * 50
    assert q.check(k, 5, 10.0, 1001.999) == pytest.approx(0.001, abs=1e-6)
    assert q.check(k, 5, 10.0, 1002.0) == 0.0
    assert q.check(k, 5, 10.0, 1002.0) == 2.0
    assert q.check(k, 5, 10.0, 1004.0) == 0.0
    # idle for a period: a full burst again
    assert [q.check(k, 5, 10.0, 1014.0) for _ in range(6)] == [0.0] * 5 + [2.0]
    assert q.check(tenant_key("other"), 5, 10.0, 1014.0) == 0.0  # keys are independent


@pytest.mark.parametrize("now", [0.0, 12345.678901, 9.87654321e6, 1.8e9])
@pytest.mark.parametrize(
    ("requests", "period"), [(1, 1.0), (2, 0.1), (7, 60.0), (1000, 3600.0), (100_000, 1.0)]
)
def test_local_burst_is_exact(requests: int, period: float, now: float) -> None:
    """Exactly `requests` at one instant, whatever the clock's magnitude (no float drift)."""
    q = LocalQuotas()
    answers = [q.check(b"k", requests, period, now) for _ in range(requests + 3)]
    assert answers[:requests] == [0.0] * requests
    assert all(w > 0 for w in answers[requests:])
    assert answers[requests] == pytest.approx(period / requests, rel=1e-5, abs=2e-6)


def test_local_steady_rate() -> None:
    """A request every ms for 10.05 s against 10 per second: the burst, then one per 100 ms."""
    q = LocalQuotas()
    admitted = sum(q.check(b"k", 10, 1.0, 500.0 + i / 1000) == 0.0 for i in range(10_051))
    assert admitted == 10 + 100


def test_retry_after_rounds_up() -> None:
    assert [retry_after(w) for w in (2.0, 1.5, 0.001, 720.0, 719.0001)] == [2, 2, 1, 720, 720]


def test_local_retry_after_is_enough() -> None:
    """A client that waits `retry_after` whole seconds (or the exact wait) is admitted."""
    q = LocalQuotas()
    t = 77.25
    for _ in range(3):
        q.check(b"k", 3, 7.0, t)
    wait = q.check(b"k", 3, 7.0, t)
    assert wait > 0 and retry_after(wait) == 3  # T = 7/3 s
    assert q.check(b"k", 3, 7.0, t + wait) == 0.0
    assert q.check(b"k", 3, 7.0, t + wait) > 0


def test_local_quota_change_keeps_the_owed_time() -> None:
    q = LocalQuotas()
    for _ in range(100):
        assert q.check(b"raise", 100, 60.0, 0.0) == 0.0
    # 100/min used up, raised to 1000/min: the tenant stays at its limit, admitted at the new
    # rate (one per 60 ms) rather than given 900 more at once
    assert q.check(b"raise", 1000, 60.0, 0.0) == pytest.approx(0.06, abs=2e-6)
    assert q.check(b"raise", 1000, 60.0, 0.07) == 0.0
    for _ in range(1000):
        assert q.check(b"lower", 1000, 3600.0, 0.0) == 0.0
    # 1000/h used up, lowered to 10/min: clamped to one new period owed (wait T = 6 s), not
    # the rest of the hour
    assert q.check(b"lower", 10, 60.0, 0.0) == pytest.approx(6.0, abs=2e-6)
    assert q.check(b"lower", 10, 60.0, 5.0) == pytest.approx(1.0, abs=2e-6)
    assert q.check(b"lower", 10, 60.0, 6.0) == 0.0


def test_local_memory_is_bounded() -> None:
    q = LocalQuotas(sweep_at=1000)
    hot = b"hot"
    biggest = 0
    for i in range(200_000):
        now = i / 1000  # a new key every ms, each live for 100 ms (T of 10/s)
        q.check(b"k%d" % i, 10, 1.0, now)
        if i % 100 == 0:  # one key kept over its quota throughout, across many sweeps
            q.check(hot, 1, 3600.0, now)
            assert i == 0 or q.check(hot, 1, 3600.0, now) > 0
        biggest = max(biggest, len(q))
    assert biggest <= 1000
    assert len(q) <= 1000


def test_local_sweeping_never_changes_an_answer() -> None:
    rng = random.Random(14)
    small, large = LocalQuotas(sweep_at=8), LocalQuotas(sweep_at=10**9)
    now = 0.0
    for _ in range(50_000):
        now += rng.expovariate(200.0)
        k = b"k%d" % rng.randrange(300)
        requests, period = rng.choice([(3, 1.0), (10, 5.0), (1, 0.5)])
        assert small.check(k, requests, period, now) == large.check(k, requests, period, now)
    assert len(small) < len(large)


# ----------------------------------------------------------------------------- Redis


@pytest.fixture
async def rq(redis_server: RedisServer):
    q = RedisQuotas(redis_server.url, timeout=2.0)
    try:
        yield q
    finally:
        await q.aclose()


async def test_redis_burst_then_waits(rq: RedisQuotas, redis_server: RedisServer) -> None:
    k = key()
    assert [await rq.check(k, 5, 3600.0) for _ in range(5)] == [0.0] * 5
    stored = redis_server.command("GET", (rq.prefix + k).decode())
    waits = [await rq.check(k, 5, 3600.0) for _ in range(20)]
    # T = 720 s; the test's own run time (well under a minute) only shortens the wait, and
    # rejected requests do not move the TAT: the waits never grow
    assert all(660 < w <= 720 for w in waits)
    assert waits == sorted(waits, reverse=True)
    assert {retry_after(w) for w in waits} <= set(range(661, 721))
    assert redis_server.command("GET", (rq.prefix + k).decode()) == stored
    assert (rq.admitted, rq.rejected, rq.store_errors) == (5, 20, 0)


async def test_redis_one_per_interval(rq: RedisQuotas) -> None:
    k = key()
    assert [await rq.check(k, 2, 0.5) for _ in range(2)] == [0.0, 0.0]
    for _ in range(3):
        wait = await rq.check(k, 2, 0.5)
        assert 0 < wait <= 0.25
        await asyncio.sleep(wait + 0.005)  # sleeps at least that long: Redis's clock moved too
        assert await rq.check(k, 2, 0.5) == 0.0


async def test_redis_quota_change_is_clamped(rq: RedisQuotas) -> None:
    k = key()
    for _ in range(3):
        assert await rq.check(k, 3, 3600.0) == 0.0
    assert 1100 < await rq.check(k, 3, 3600.0) <= 1200  # T = 1200 s
    # lowered to 2 per minute: one new period owed at most, so the wait is T = 30 s
    assert 0 < await rq.check(k, 2, 60.0) <= 30.0


async def test_redis_keys_expire(rq: RedisQuotas, redis_server: RedisServer) -> None:
    k = key()
    name = (rq.prefix + k).decode()
    assert await rq.check(k, 10, 3600.0) == 0.0
    ttl = int(redis_server.command("PTTL", name)[1:-2])
    assert 0 < ttl <= 360_000  # TAT - now = T
    k2 = key()
    assert await rq.check(k2, 1, 0.2) == 0.0
    deadline = time.monotonic() + 10
    while redis_server.command("EXISTS", (rq.prefix + k2).decode()) != b":0\r\n":
        assert time.monotonic() < deadline, "an idle quota key never expired"
        await asyncio.sleep(0.05)


async def test_redis_noscript_falls_back_to_eval_once(
    rq: RedisQuotas, redis_server: RedisServer
) -> None:
    k = key()
    assert await rq.check(k, 100, 60.0) == 0.0
    assert redis_server.command("SCRIPT", "FLUSH") == b"+OK\r\n"
    assert redis_server.command("SCRIPT", "EXISTS", SCRIPT_SHA) == b"*1\r\n:0\r\n"
    assert redis_server.command("CONFIG", "RESETSTAT") == b"+OK\r\n"
    assert [await rq.check(k, 100, 60.0) for _ in range(5)] == [0.0] * 5
    assert redis_server.command("SCRIPT", "EXISTS", SCRIPT_SHA) == b"*1\r\n:1\r\n"
    stats = redis_server.command("INFO", "commandstats").decode()
    assert "cmdstat_eval:calls=1," in stats
    assert "cmdstat_evalsha:calls=5," in stats  # the failed one, then four
    assert rq.store_errors == 0 and rq.up


def test_redis_exact_across_two_processes(redis_server: RedisServer) -> None:
    """Two processes, 500 concurrent checks each, against 100 per hour: exactly 100 pass."""
    k = key().decode()
    argv = [sys.executable, str(REPO / "tests" / "quota_client.py"), redis_server.url, k]
    procs = [
        subprocess.Popen(
            [*argv, "500", "100", "3600"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for _ in range(2)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        counts = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
        assert [p.returncode for p in procs] == [0, 0]
    finally:
        for p in procs:
            p.kill()  # nothing if it exited
            p.wait()
    assert sum(c["admitted"] for c in counts) == 100
    assert sum(c["zero_waits"] for c in counts) == 100
    assert sum(c["rejected"] for c in counts) == 900
    assert [c["store_errors"] for c in counts] == [0, 0]


# ----------------------------------------------------------------------------- outages


@pytest.fixture
def own_redis(tmp_path: Path):
    server = RedisServer(tmp_path).start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.alive():
            server.proc.signal(signal.SIGCONT)
        server.stop()


def _records(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


@pytest.mark.parametrize("on_error", ["open", "closed"])
async def test_redis_down_then_back(
    own_redis: RedisServer, on_error: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gwfast.quota")
    q = RedisQuotas(own_redis.url, on_error=on_error, timeout=0.5, retry_interval=0.05)
    fallback = 0.0 if on_error == "open" else REFUSED
    try:
        assert await q.check(b"a", 1, 3600.0) == 0.0
        own_redis.stop()
        answers = []
        for _ in range(40):
            answers.append(await q.check(b"a", 1, 3600.0))
            await asyncio.sleep(0.005)  # so some are retries of a Redis still down
        assert answers == [fallback] * 40  # never raises; open admits, closed refuses
        assert (q.store_errors, q.outages, q.up, q.admitted) == (40, 1, False, 1)
        assert len(_records(caplog, "failed")) == 1
        assert f"on_error: {on_error}" in _records(caplog, "failed")[0]
        own_redis.start()
        deadline = time.monotonic() + 20
        while not q.up:
            assert time.monotonic() < deadline, "the store never came back"
            answer = await q.check(b"b", 1000, 3600.0)
            assert answer in (0.0, fallback)
            await asyncio.sleep(0.02)
        errors = q.store_errors
        # back to normal (a new server: empty, no script cached: NOSCRIPT then EVAL)
        assert [await q.check(b"c", 2, 3600.0) for _ in range(3)][:2] == [0.0, 0.0]
        assert await q.check(b"c", 2, 3600.0) > 1700
        assert q.store_errors == errors and q.outages == 1
        assert len(_records(caplog, "reachable again")) == 1
        assert len(_records(caplog, "failed")) == 1
    finally:
        await q.aclose()


async def test_redis_stalled_is_bounded(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis that accepts but never answers (SIGSTOP): requests in flight get on_error's
    answer after the timeout; while it is known down, requests do not go to Redis at all."""
    caplog.set_level(logging.INFO, logger="gwfast.quota")
    q = RedisQuotas(own_redis.url, on_error="closed", timeout=0.2, retry_interval=60.0)
    try:
        assert await q.check(b"a", 5, 3600.0) == 0.0
        assert own_redis.proc is not None
        own_redis.proc.signal(signal.SIGSTOP)
        first = asyncio.gather(*(q.check(b"a", 5, 3600.0) for _ in range(10)))
        assert await asyncio.wait_for(first, 10) == [REFUSED] * 10
        assert q.outages == 1 and not q.up
        sent = []
        evalsha = q._evalsha
        q._evalsha = lambda *args: sent.append(args) or evalsha(*args)
        later = [await q.check(b"a", 5, 3600.0) for _ in range(100)]
        assert later == [REFUSED] * 100 and sent == []  # answered without asking Redis
        assert q.store_errors == 110
        assert len(_records(caplog, "failed")) == 1
        own_redis.proc.signal(signal.SIGCONT)
    finally:
        await q.aclose()


# ----------------------------------------------------------------------------- settings


DOC = {
    "tenants": {
        "engineering": {"quota": {"requests": 1000, "period": "1h"}},
        "sales": {},
    },
    "quota_store": {"redis": "redis://:secret@127.0.0.1:6379/0", "on_error": "closed"},
    "backends": {
        "github": {
            "endpoints": ["http://x/mcp"],
            "quota": {"engineering": {"requests": 100, "period": "1m"}},
        },
        "jira": {"endpoints": ["http://y/mcp"]},
    },
}


def test_settings_parse() -> None:
    cfg = parse_quotas(DOC)
    eng = cfg.tenants["engineering"].quota
    assert eng is not None and (eng.requests, eng.period) == (1000, 3600.0)
    assert cfg.tenants["sales"].quota is None
    assert cfg.backend_quotas["github"]["engineering"].period == 60.0
    assert cfg.store == QuotaStoreSettings(
        redis="redis://:secret@127.0.0.1:6379/0", on_error="closed"
    )
    assert cfg.store.timeout == 0.1
    assert cfg.wire_tenants() == {
        "engineering": wire.Tenant(
            quota=wire.Quota(requests=1000, period=3600.0),
            backend_quotas={"github": wire.Quota(requests=100, period=60.0)},
        ),
        "sales": wire.Tenant(),
    }
    assert parse_quotas({}).store is None and parse_quotas({}).tenants == {}
    assert backend_key("github", "engineering") == b"b:github:engineering"
    assert redact("redis://:secret@h:1/0") == "redis://:***@h:1/0"
    assert redact("redis://u:secret@h:1/0") == "redis://u:***@h:1/0"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            {"tenants": {"engineering": {"quota": {"requests": 10, "period": "1x"}}}},
            "- at `$.tenants.engineering.quota.period`",
        ),
        (
            {"tenants": {"engineering": {"quota": {"requests": 0, "period": "1h"}}}},
            "requests must be at least 1 - at `$.tenants.engineering.quota.requests`",
        ),
        (
            {"tenants": {"engineering": {"quota": {"requests": 1, "period": 0}}}},
            "a period must be above zero, e.g. 60s or 1h - at `$.tenants.engineering.quota.period`",
        ),
        (
            {"tenants": {"engineering": {"quota": {"requests": 1}}}},
            "missing required field `period` - at `$.tenants.engineering.quota`",
        ),
        (
            {"tenants": {"engineering": {"quota": {"requests": True, "period": "1h"}}}},
            "- at `$.tenants.engineering.quota.requests`",
        ),
        (
            {"tenants": {"engineering": {"qouta": {}}}},
            "unknown field `qouta` - at `$.tenants.engineering`",
        ),
        ({"tenants": ["engineering"]}, "- at `$.tenants`"),
        (
            {"tenants": {"": {}}},
            "invalid tenant name '': write a non-empty string - at `$.tenants.`",
        ),
        (
            {"quota_store": {"redis": "http://:secret@h:6379", "on_error": "open"}},
            "invalid Redis URL 'http://:***@h:6379': write redis://host:6379/0, "
            "rediss://host:6380/0 (TLS) or unix:///path/to/redis.sock - at `$.quota_store.redis`",
        ),
        (
            {"quota_store": {"redis": "redis://h", "on_error": "maybe"}},
            "invalid on_error 'maybe': use open (admit while Redis is down) or closed (answer 503) - at `$.quota_store.on_error`",
        ),
        (
            {"quota_store": {"on_error": "open"}},
            "missing required field `redis` - at `$.quota_store`",
        ),
        ({"quota_store": {"redis": "redis://h", "timeout": "1h"}}, "- at `$.quota_store.timeout`"),
        (
            {"backends": {"github": {"quota": {"engineering": {"requests": 5, "period": "soon"}}}}},
            "- at `$.backends.github.quota.engineering.period`",
        ),
        ({"backends": {"github": {"quota": [1]}}}, "- at `$.backends.github.quota`"),
    ],
)
def test_settings_errors_name_the_key(doc: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_quotas(doc)
    assert message in str(e.value)
    assert "secret" not in str(e.value)


def test_proxy_does_not_read_quota_keys_yet() -> None:
    """Until quotas are enforced on the request path, configuring one must fail at start."""
    for doc in (
        {"tenants": {"engineering": {"quota": {"requests": 1, "period": "1h"}}}},
        {"quota_store": {"redis": "redis://127.0.0.1:6379/0"}},
        {"backends": {"github": {"endpoints": ["http://127.0.0.1:9/mcp"], "quota": {}}}},
    ):
        with pytest.raises(ConfigError, match="unknown field"):
            parse_config(doc)
