"""Request quotas ("N requests per period", per tenant and per tenant and backend) by GCRA.

Why this module: DESIGN.md "Identity, tenants, quotas" promises quotas such as 1000 requests
per hour per tenant, counted in the worker (one process) or in Redis (exact across workers and
gateway replicas). This is the building block: the rate arithmetic, the two stores and the
settings of `tenants.NAME.quota`, `backends.NAME.quota` and `quota_store`. It is **not wired
into the request path yet**: `mcp-gateway proxy` does not read these keys (its `Config` still
refuses them as unknown), so no quota can be configured and silently left unenforced.

The algorithm is the Generic Cell Rate Algorithm in its "virtual scheduling" form (ITU-T
I.371, Annex A; the ATM Forum TM 4.0 spec). With ``T = period / requests`` (the emission
interval) and ``tau = period - T`` (the burst tolerance), each key keeps one number, its
theoretical arrival time TAT. A request arriving at ``t``:

- is admitted iff ``max(TAT, t) - t <= tau``; then ``TAT = max(TAT, t) + T``;
- else is rejected and TAT does not move (a rejected request consumes nothing); it could be
  admitted at ``TAT - tau``, so its exact wait is ``TAT - tau - t`` (> 0).

So a fresh key (TAT absent, i.e. ``t``) admits a burst of exactly `requests` at once and then
one every T. All arithmetic is exact, so a burst is never off by one through rounding: ``T``
is rounded to a clock unit and ``tau = T * (requests - 1)``; locally the unit is 2^-20 s
(~0.95 µs) and every quantity a double holding an integer multiple of it below 2^33 s (272
years), where doubles add and subtract exactly; in Redis it is the µs of its TIME, as
integers. The long-run rate differs from the configured one by under a unit per request.

Invariants (both stores): ``TAT - t <= tau + T`` (= period) after every admission, so a TAT in
the past carries no information (it answers exactly like an absent key: that is why idle keys
may be swept or expire). Changing a key's quota at runtime keeps its TAT: the time already
"owed" carries over, so a tenant at its limit stays at it and is admitted at the new rate from
there. If the new quota's period is shorter than the owed time, the TAT is clamped to
``t + period`` (the most a constant quota could ever have produced), so lowering a quota costs
at most one new period of waiting, never the rest of the old one.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec

from gwfast import wire
from gwfast.config import Duration, _convert, _fail, _Strict

log = logging.getLogger("gwfast.quota")

REFUSED = -1.0  # `RedisQuotas.check`: the store failed and on_error is closed (answer 503)


def retry_after(wait: float) -> int:
    """The ``Retry-After`` delay-seconds (RFC 9110 §10.2.3) for an exact `wait` > 0: whole
    seconds, rounded up so a client that obeys it is admitted."""
    return max(1, math.ceil(wait))


def tenant_key(tenant: str) -> bytes:
    """The store key of a tenant's quota (`tenants.NAME.quota`). Build keys off the hot path
    (with the snapshot); every worker and replica must build them the same way."""
    return b"t:" + tenant.encode()


def backend_key(backend: str, tenant: str) -> bytes:
    """The store key of a tenant's quota on one backend (`backends.NAME.quota.TENANT`);
    unambiguous since a backend name (a DNS-1123 label) has no ``:``."""
    return b"b:" + backend.encode() + b":" + tenant.encode()


# ----------------------------------------------------------------------------- one process


class LocalQuotas:
    """Quotas counted in this process (one worker, one event loop: no lock needed).

    State is a plain dict of key -> TAT in seconds of the caller's clock (pass a monotonic one,
    e.g. ``loop.time()``). Memory is bounded: keys whose TAT is in the past
    answer like absent ones (module docstring), so when a *new* key would grow the dict past
    `sweep_at` entries those keys are dropped in one pass and the threshold becomes twice the
    survivors (at least `sweep_at`). Each sweep is paid for by as many insertions as it
    scans (amortised O(1)), and the dict never holds much more than twice the keys used
    within the longest period. A sweep never changes an answer.
    """

    def __init__(self, *, sweep_at: int = 4096) -> None:
        self._tat: dict[bytes, float] = {}
        self._sweep_min = sweep_at
        self._sweep_at = sweep_at

    def __len__(self) -> int:
        return len(self._tat)

    def check(self, key: bytes, requests: int, period: float, now: float) -> float:
        """0.0 if the request is admitted (and counted), else the exact seconds until one
        would be. `requests` >= 1 and `period` > 0 are the caller's to validate (settings
        do); `now` in seconds of a clock that does not go backwards, below 2^33."""
        # on the grid of 2^-20 s (module docstring): t <= now, T rounded down, at least 1
        t = now - now % 2.0**-20
        T = period / requests
        T = (T - T % 2.0**-20) or 2.0**-20
        tau = T * (requests - 1)
        d = self._tat
        tat = d.get(key)
        if tat is None:
            if len(d) >= self._sweep_at:
                self._sweep(t)
                d = self._tat
            tat = t
        elif tat < t:
            tat = t
        elif tat - t > tau:
            if tat - t > tau + T:  # only after a quota change: clamp (module docstring)
                d[key] = tat = t + tau + T
            return tat - tau - t
        d[key] = tat + T
        return 0.0

    def _sweep(self, t: float) -> None:
        # rebuild rather than delete in place: a dict never shrinks its table on deletes
        live = {k: v for k, v in self._tat.items() if v > t}
        self._tat = live
        self._sweep_at = max(self._sweep_min, 2 * len(live))


# ----------------------------------------------------------------------------- Redis

# KEYS[1]: the key; ARGV[1]: T, ARGV[2]: tau, in microseconds of the Redis server's clock
# (TIME), so gateway replicas with skewed clocks agree. Returns 0 (admitted, TAT stored with
# a TTL of TAT - now: once it passes the key carries nothing and expires) or the exact wait
# in µs. Lua numbers are doubles: µs since 1970 (~2^51) are exact integers in them; '%d'
# writes them in full (tostring would round to 14 digits).
SCRIPT = b"""
if redis.replicate_commands then redis.replicate_commands() end
local T = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - now > tau + T then
  tat = now + tau + T
  redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000))
end
if tat - now > tau then return tat - tau - now end
tat = tat + T
redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000))
return 0
"""
SCRIPT_SHA = hashlib.sha1(SCRIPT).hexdigest()


def redact(url: str) -> str:
    """`url` without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + host))


class RedisQuotas:
    """Quotas counted in Redis: exact across workers and gateway replicas.

    One atomic round trip per request: `SCRIPT` by EVALSHA (EVAL once when the server says
    NOSCRIPT, e.g. after a restart or SCRIPT FLUSH; EVAL caches it again). `check` never
    raises: when Redis is unreachable, slow (over `timeout`) or answers an error, the request
    gets `on_error`'s answer, ``"open"`` admits (0.0), ``"closed"`` refuses (`REFUSED`, for a
    503), and is counted in `store_errors`. The first failure logs one warning and marks the
    store down; while down, requests get that answer at once without waiting on Redis, and
    one request per `retry_interval` tries it again; its first success logs one line and
    quotas apply again. So a stalled Redis costs a request at most the pool wait, a connect
    and a reply (each bounded by `timeout`), and only while the outage is not yet known.

    Counters for /metrics (plain ints; one event loop writes them): `admitted`, `rejected`
    (over quota), `store_errors` (requests Redis did not decide), `outages`; `up` is a gauge.
    """

    def __init__(
        self,
        url: str,
        *,
        on_error: str = "open",
        timeout: float = 0.1,
        retry_interval: float = 1.0,
        max_connections: int = 64,
        prefix: bytes = b"gwfast:quota:",
    ) -> None:
        # imported here: the redis package takes ~0.2 s to import, paid only with a store
        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import NoScriptError

        if on_error not in ("open", "closed"):
            raise ValueError(f"on_error must be open or closed, not {on_error!r}")
        self.url = redact(url)
        self.on_error = on_error
        self.retry_interval = retry_interval
        self.prefix = prefix
        # no retries inside the client: one bounded attempt, then on_error
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self.client = redis.asyncio.Redis.from_pool(pool)
        self._evalsha = self.client.evalsha
        self._eval = self.client.eval
        self._noscript = NoScriptError
        self._fallback = 0.0 if on_error == "open" else REFUSED
        self._retry_at = 0.0
        self.up = True
        self.admitted = 0
        self.rejected = 0
        self.store_errors = 0
        self.outages = 0

    @classmethod
    def from_settings(cls, s: QuotaStoreSettings, **kwargs: Any) -> RedisQuotas:
        return cls(s.redis, on_error=s.on_error, timeout=s.timeout, **kwargs)

    async def check(self, key: bytes, requests: int, period: float) -> float:
        """0.0 if admitted, the exact seconds to wait if over quota, or, when Redis could not
        decide, 0.0 (on_error open) or `REFUSED` (closed)."""
        if not self.up:
            now = time.monotonic()
            if now < self._retry_at:
                self.store_errors += 1
                return self._fallback
            self._retry_at = now + self.retry_interval  # this request probes; others wait
        T = round(period * 1e6 / requests) or 1
        k = self.prefix + key
        try:
            try:
                wait = await self._evalsha(SCRIPT_SHA, 1, k, T, T * (requests - 1))
            except self._noscript:
                wait = await self._eval(SCRIPT, 1, k, T, T * (requests - 1))
        except Exception as e:  # never into the caller: any failure is on_error's
            self._failed(e)
            return self._fallback
        if not self.up:
            self.up = True
            log.warning("quota store %s reachable again: quotas are enforced", self.url)
        if wait:
            self.rejected += 1
            return wait / 1e6
        self.admitted += 1
        return 0.0

    def _failed(self, e: Exception) -> None:
        self.store_errors += 1
        self._retry_at = time.monotonic() + self.retry_interval
        if self.up:
            self.up = False
            self.outages += 1
            what = "admitting requests unchecked" if self.on_error == "open" else "answering 503"
            log.warning(
                "quota store %s failed (%s: %s): %s (on_error: %s) until it answers again",
                *(self.url, type(e).__name__, e, what, self.on_error),
            )

    async def aclose(self) -> None:
        await self.client.aclose()


# ----------------------------------------------------------------------------- settings


class QuotaSettings(_Strict):
    """``quota: {requests: 1000, period: 1h}``: `requests` per `period`, a burst of up to
    `requests` admitted at once (GCRA). Both required."""

    requests: int  # at least 1
    period: Duration  # above zero: seconds, or 250ms, 60s, 1m, 1h


class TenantSettings(_Strict):
    """``tenants.NAME``."""

    quota: QuotaSettings | None = None  # absent: no quota of the tenant's own


class QuotaStoreSettings(_Strict):
    """``quota_store: {redis: URL, on_error: open}``; absent: counters in each worker."""

    redis: str  # redis://[[user]:password@]host[:port][/db], rediss://... (TLS) or unix://path
    on_error: str = "open"  # Redis down or failing: open admits, closed answers 503
    # each wait on Redis (pool, connect, reply); not in DESIGN.md's keys yet
    timeout: Duration = Duration(0.1)


class QuotaConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The quota part of a configuration document (see `parse_quotas`)."""

    tenants: dict[str, TenantSettings] = {}
    backend_quotas: dict[str, dict[str, QuotaSettings]] = {}  # backend -> tenant -> quota
    store: QuotaStoreSettings | None = None

    def wire_tenants(self) -> dict[str, wire.Tenant]:
        """As the snapshot carries them (`gwfast.wire.Tenant`), tenant by tenant."""
        out: dict[str, wire.Tenant] = {}
        names = set(self.tenants)
        for per in self.backend_quotas.values():
            names.update(per)
        for name in sorted(names):
            t = self.tenants.get(name)
            out[name] = wire.Tenant(
                quota=_wire_quota(t.quota) if t and t.quota else None,
                backend_quotas={
                    b: _wire_quota(per[name])
                    for b, per in sorted(self.backend_quotas.items())
                    if name in per
                },
            )
        return out


def _wire_quota(q: QuotaSettings) -> wire.Quota:
    return wire.Quota(requests=q.requests, period=float(q.period))


def parse_quota(obj: Any, path: str) -> QuotaSettings:
    q: QuotaSettings = _convert(obj, QuotaSettings, path)
    _check_quota(q, path)
    return q


def _check_quota(q: QuotaSettings, path: str) -> None:
    if q.requests < 1:
        _fail(f"{path}.requests", "requests must be at least 1")
    if q.period <= 0:
        _fail(f"{path}.period", "a period must be above zero, e.g. 60s or 1h")


def parse_quota_store(obj: Any, path: str = "$.quota_store") -> QuotaStoreSettings:
    s: QuotaStoreSettings = _convert(obj, QuotaStoreSettings, path)
    parts = urlsplit(s.redis)
    if parts.scheme not in ("redis", "rediss", "unix"):
        _fail(
            f"{path}.redis",
            f"invalid Redis URL {redact(s.redis)!r}: write redis://host:6379/0, "
            "rediss://host:6380/0 (TLS) or unix:///path/to/redis.sock",
        )
    if s.on_error not in ("open", "closed"):
        _fail(
            f"{path}.on_error",
            f"invalid on_error {s.on_error!r}: use open (admit while Redis is down) or "
            "closed (answer 503)",
        )
    if not 0 < s.timeout <= 10:
        _fail(f"{path}.timeout", "timeout must be above zero and at most 10s, e.g. 100ms")
    return s


def parse_quotas(doc: Mapping[str, Any]) -> QuotaConfig:
    """The quota keys of a whole configuration document (`tenants`, `quota_store`,
    `backends.NAME.quota`); other keys are not looked at. ConfigError names the key path."""
    tenants: dict[str, TenantSettings] = {}
    for name, raw, path in _entries(doc.get("tenants"), "$.tenants"):
        tenants[name] = t = _convert(raw or {}, TenantSettings, path)
        if t.quota is not None:
            _check_quota(t.quota, f"{path}.quota")
    per_backend: dict[str, dict[str, QuotaSettings]] = {}
    backends = doc.get("backends")
    for b, cfg in backends.items() if isinstance(backends, dict) else ():  # shape: config's
        if isinstance(cfg, dict) and cfg.get("quota") is not None:
            entries = _entries(cfg["quota"], f"$.backends.{b}.quota")
            per_backend[b] = {name: parse_quota(q, path) for name, q, path in entries}
    store = doc.get("quota_store")
    return QuotaConfig(
        tenants=tenants,
        backend_quotas=per_backend,
        store=None if store is None else parse_quota_store(store),
    )


def _entries(obj: Any, path: str) -> list[tuple[str, Any, str]]:
    """(tenant name, value, its key path) of a mapping keyed by tenant name."""
    if obj is None:
        return []
    if not isinstance(obj, dict):
        _fail(path, "expected a mapping of tenant names")
    for name in obj:
        if not isinstance(name, str) or not name:
            _fail(f"{path}.{name}", f"invalid tenant name {name!r}: write a non-empty string")
    return [(name, v, f"{path}.{name}") for name, v in obj.items()]
