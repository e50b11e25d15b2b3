"""Micro benchmarks of quotas: `LocalQuotas.check` (the per-request cost with counters in the
worker) and one `RedisQuotas.check` round trip to a local redis-server (loopback, EVALSHA).

    python3 -m pytest bench/micro/test_quota_bench.py -q --benchmark-group-by=group

The Redis figure is measured as 100 sequential checks per round inside one event loop run
(so the loop's own start-up is not counted) and reported per check in ``extra_info``.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from gwfast._testbase.redis import RedisServer
from gwfast.quota import LocalQuotas, RedisQuotas, tenant_key

KEY = tenant_key("engineering")


@pytest.mark.benchmark(group="quota-local")
def test_local_admitted(benchmark) -> None:
    q = LocalQuotas()
    # a quota that is never reached: every call admits and stores a new TAT
    assert benchmark(q.check, KEY, 10**9, 3600.0, 12345.678) == 0.0


@pytest.mark.benchmark(group="quota-local")
def test_local_rejected(benchmark) -> None:
    q = LocalQuotas()
    for _ in range(1000):
        q.check(KEY, 1000, 3600.0, 12345.678)
    assert benchmark(q.check, KEY, 1000, 3600.0, 12345.678) > 0


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.mark.benchmark(group="quota-redis")
def test_redis_round_trip(benchmark, redis_url: str) -> None:
    loop = asyncio.new_event_loop()
    q = RedisQuotas(redis_url, timeout=1.0)
    key = tenant_key(uuid.uuid4().hex)
    n = 100

    async def checks() -> float:
        w = 0.0
        for _ in range(n):
            w = await q.check(key, 10**9, 3600.0)
        return w

    try:
        assert benchmark(lambda: loop.run_until_complete(checks())) == 0.0
        assert q.store_errors == 0
        benchmark.extra_info["us_per_check"] = benchmark.stats.stats.mean / n * 1e6
        print(f"\none RedisQuotas.check round trip: {benchmark.extra_info['us_per_check']:.1f} µs")
    finally:
        loop.run_until_complete(q.aclose())
        loop.close()
