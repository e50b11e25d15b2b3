"""Prometheus metrics of the data plane: counted without locks, summed over workers.

Why this shape: the request path must pay a few integer stores per request, no dict lookup,
no string, no lock (STYLE.md "Hot-path hygiene"). So every number is an int64 slot in one
`mmap` block (MAP_SHARED | MAP_ANONYMOUS) that the supervisor creates before it forks the
workers, and the code that counts holds precomputed slot numbers: a `Backend` carries `m`
(its worker's slots, a `memoryview` cast to ``q``) and `m_base` (its block in them), so
counting is ``b.m[b.m_base + SESSIONS] += 1``. The request-duration histogram, the one cost
paid on every request, is observed by a compiled twin (`gwfast._native.hist`): one call.
The admin listener (`gwfast.admin`) reads the block when scraped and renders Prometheus text
format 0.0.4.

Layout: one *region* per worker slot; a region is a header (directory length, open client
connections, answers to requests routed to no backend) and `capacity` *blocks*, one per
backend name the worker has bound, each starting with the name itself (a directory entry, so
the reader needs no snapshot) followed by that backend's counters, gauges and histogram.

Invariants:
- **single writer**: a region is written only by the worker process that owns its slot (one
  event loop, so no two writers ever); the admin listener only reads. Slots are aligned
  int64s, written whole (one machine store on the 64-bit targets we run on), so a reader
  never sees a torn number; it may see one response's histogram bucket before its sum;
- the directory is append-only: a block keeps its name for the life of the block, a new one
  is filled in before the directory length that publishes it is stored (x86-64 keeps stores
  in order; where stores may be reordered a scrape racing the store may read the name still
  empty, and skips that block for that scrape);
- counters only grow, also over a worker restart: the new process keeps its slot's counters
  and resets only its gauges (what they counted died with the old process), so a sum over
  workers never goes backwards;
- a backend removed by a reload keeps its block (marked inactive, not exported); if it comes
  back it continues its counters. More backend names than `capacity` over a block's life are
  counted in private blocks that are not exported (logged once);
- a scrape sums every slot over the regions but three gauges: healthy endpoints (the fewest
  any worker routes to), configured endpoints and panic (the most);
- the layout lives as long as the block, made at each start of the supervisor (a worker
  restart keeps it): slot numbers may change between versions, never within one run.
"""

from __future__ import annotations

import logging
import mmap
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gwfast._native import hist

if TYPE_CHECKING:
    from gwfast.model import Snapshot

log = logging.getLogger("gwfast")

# request duration, head complete to response complete: the one per-request cost, observed
# by a compiled twin (gwfast._native.hist, which has the buckets and the layout)
BUCKETS = hist.BUCKETS
NBUCKETS = hist.NBUCKETS
HSUM = hist.HSUM
HSTRIDE = hist.HSTRIDE
CLASSES = hist.CLASSES  # of responses relayed from endpoints
# statuses the gateway answers itself, counted by code; any other code counts as "other"
CODES = (200, 400, 401, 403, 404, 405, 408, 413, 429, 431, 500, 502, 503, 504)
NCODES = len(CODES) + 1
CODE_INDEX = [len(CODES)] * 1000
for _i, _c in enumerate(CODES):
    CODE_INDEX[_c] = _i

# region header (int64 slot numbers)
NBLOCKS = 0  # directory length: blocks [0, NBLOCKS) have a name; stored last
CONNECTIONS = 1  # gauge: open client connections
UNROUTED = 2  # NCODES slots: gateway answers to requests routed to no backend
HEADER = UNROUTED + NCODES

# block (one backend) offsets from `Backend.m_base`
NAME_SLOTS = 8  # 64 bytes: the name's length, then the name (a DNS-1123 label, <= 52)
ACTIVE = 8  # 1 while the backend is in the worker's snapshot
ENDPOINTS = 9  # gauge: configured endpoints
HEALTHY = 10  # gauge: endpoints this worker routes new sessions to
STREAMS = 11  # gauge: responses still being relayed after their head (SSE streams...)
UPSTREAM = 12  # gauge: open connections to endpoints (pooled idle or carrying a request)
SESSIONS = 13  # sessions created: responses whose Mcp-Session-Id the gateway sealed anew
CONNECT_FAILURES = 14
EJECTIONS = 15  # endpoints this worker took out of placement (passive or active checks)
PANICS = 16  # times the backend entered panic routing (gwfast.health)
PANIC = 17  # gauge: 1 while this worker routes the backend in panic mode
CODES_AT = 18  # NCODES slots: gateway answers by code
HIST = CODES_AT + NCODES  # len(CLASSES) x (NBUCKETS buckets, then the sum)
BLOCK = HIST + len(CLASSES) * HSTRIDE
_GAUGES = (ACTIVE, ENDPOINTS, HEALTHY, STREAMS, UPSTREAM, PANIC)


def unbound_block() -> tuple[memoryview, int, hist.Histograms]:
    """Slots for a backend not bound to a region (never exported): `(m, m_base, hist)`."""
    m = memoryview(bytearray(8 * BLOCK)).cast("q")
    return m, 0, hist.Histograms(m, HIST)


class SharedBlock:
    """The one block of all regions, made before fork so workers and admin share it."""

    def __init__(self, regions: int, *, capacity: int = 256) -> None:
        self.regions = regions
        self.capacity = capacity
        self.region_slots = HEADER + capacity * BLOCK
        # MAP_SHARED | MAP_ANONYMOUS: zero-filled, shared with every child forked later;
        # pages are only backed once touched
        self.mm = mmap.mmap(-1, 8 * regions * self.region_slots)
        self.raw = memoryview(self.mm)
        self.slots = self.raw.cast("q")

    def region(self, index: int) -> Region:
        """The region of worker slot `index`; call it in the process that writes it."""
        return Region(self, index)

    def reset_gauges(self, index: int) -> None:
        """Zero the gauges of region `index` (what they counted died with its writer). Only
        while no live process writes the region: a new worker taking over the slot, or the
        supervisor once it has reaped the old one."""
        lo = index * self.region_slots
        m = self.slots
        m[lo + CONNECTIONS] = 0
        for k in range(min(m[lo + NBLOCKS], self.capacity)):
            base = lo + HEADER + k * BLOCK
            for g in _GAUGES:
                m[base + g] = 0

    def read(self) -> Totals:
        """Sum the regions (the admin listener's scrape); takes no lock."""
        t = Totals(regions=self.regions)
        rs = self.region_slots
        unrouted = [0] * NCODES
        for r in range(self.regions):
            lo = r * rs
            n = min(self.slots[lo + NBLOCKS], self.capacity)
            vals = self.slots[lo : lo + HEADER + n * BLOCK].tolist()  # the blocks in use
            t.connections += vals[CONNECTIONS]
            for i in range(NCODES):
                unrouted[i] += vals[UNROUTED + i]
            for k in range(n):
                base = HEADER + k * BLOCK
                o = 8 * (lo + base)
                name = bytes(self.raw[o + 1 : o + 1 + self.raw[o]]).decode("ascii", "replace")
                if not name:  # being published (module docstring)
                    continue
                blk = vals[base : base + BLOCK]
                acc = t.backends.get(name)
                if acc is None:
                    acc = t.backends[name] = BackendTotals()
                acc.add(blk)
        t.unrouted = unrouted
        for name in [n for n, a in t.backends.items() if not a.active]:
            del t.backends[name]
        return t


@dataclass
class BackendTotals:
    slots: list[int] = field(default_factory=lambda: [0] * BLOCK)
    active: bool = False
    healthy: int = 0  # the fewest any worker routes to: an endpoint is down if any says so
    endpoints: int = 0
    panic: int = 0  # 1 if any worker routes the backend in panic mode (not a sum)

    def add(self, blk: list[int]) -> None:
        s = self.slots
        for i in range(NAME_SLOTS, BLOCK):
            s[i] += blk[i]
        if blk[ACTIVE]:
            self.healthy = blk[HEALTHY] if not self.active else min(self.healthy, blk[HEALTHY])
            self.endpoints = max(self.endpoints, blk[ENDPOINTS])
            self.panic = max(self.panic, blk[PANIC])
            self.active = True


@dataclass
class Totals:
    regions: int
    connections: int = 0
    unrouted: list[int] = field(default_factory=lambda: [0] * NCODES)
    backends: dict[str, BackendTotals] = field(default_factory=dict)


class Region:
    """One worker's slots; only that worker writes them (see the module docstring)."""

    def __init__(self, block: SharedBlock, index: int) -> None:
        if not 0 <= index < block.regions:
            raise ValueError(f"region {index} of {block.regions}")
        self.block = block
        self.lo = index * block.region_slots
        self.slots = block.slots[self.lo : self.lo + block.region_slots]
        self.blocks: dict[str, int] = {}  # name -> its block's offset in `slots`
        self.hists: dict[int, hist.Histograms] = {}  # block offset -> its histograms
        self._full_logged = False
        # a restarted worker takes over its slot: counters stay, its gauges start again
        block.reset_gauges(index)
        raw = block.raw
        for k in range(min(self.slots[NBLOCKS], block.capacity)):
            base = HEADER + k * BLOCK
            o = 8 * (self.lo + base)
            self.blocks[bytes(raw[o + 1 : o + 1 + raw[o]]).decode("ascii")] = base

    @classmethod
    def private(cls, capacity: int = 64) -> Region:
        """A region of its own (one process, e.g. a gateway built in a test)."""
        return SharedBlock(1, capacity=capacity).region(0)

    def bind(self, snapshot: Snapshot) -> None:
        """Give the snapshot's backends their slots (at start and at every swap, before the
        snapshot is published); backends no longer in it are marked inactive."""
        m = self.slots
        live = set()
        for name, b in snapshot.backends.items():
            base = self.blocks.get(name)
            if base is None:
                base = self._new_block(name)
            if base is None:
                b.m, b.m_base, b.hist = unbound_block()
                continue
            live.add(base)
            h = self.hists.get(base)
            if h is None:
                h = self.hists[base] = hist.Histograms(m, base + HIST)
            b.m, b.m_base, b.hist = m, base, h
            m[base + ENDPOINTS] = len(b.endpoints)
            m[base + HEALTHY] = sum(b.eligible)
            m[base + PANIC] = 1 if b.panic else 0  # carried over a reload (Endpoint.inherit)
            m[base + ACTIVE] = 1
        for base in self.blocks.values():
            if base not in live and m[base + ACTIVE]:
                m[base + ACTIVE] = m[base + HEALTHY] = m[base + ENDPOINTS] = m[base + PANIC] = 0

    def _new_block(self, name: str) -> int | None:
        m = self.slots
        k = m[NBLOCKS]
        if k >= self.block.capacity:
            if not self._full_logged:
                self._full_logged = True
                log.warning(
                    "metrics: more than %d backend names since start; %r and later "
                    "ones are not in /metrics until a restart",
                    k,
                    name,
                )
            return None
        data = name.encode("ascii")[: 8 * NAME_SLOTS - 1]
        base = HEADER + k * BLOCK
        o = 8 * (self.lo + base)
        raw = self.block.raw
        raw[o + 1 : o + 1 + len(data)] = data
        raw[o] = len(data)
        m[NBLOCKS] = k + 1  # publish: the name is in place (module docstring)
        self.blocks[name] = base
        return base


# ----------------------------------------------------------------------------- rendering


def _metric(out: list[str], name: str, kind: str, help_: str) -> None:
    out.append(f"# HELP {name} {help_}")
    out.append(f"# TYPE {name} {kind}")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _code(i: int) -> str:
    return str(CODES[i]) if i < len(CODES) else "other"


def _per_backend(out: list[str], t: Totals, name: str, slot: int) -> None:
    for b, acc in t.backends.items():
        if slot == HEALTHY:
            v = acc.healthy
        elif slot == ENDPOINTS:
            v = acc.endpoints
        elif slot == PANIC:
            v = acc.panic
        else:
            v = acc.slots[slot]
        out.append(f'{name}{{backend="{_label(b)}"}} {v}')


def render(t: Totals) -> bytes:
    """Prometheus text exposition format 0.0.4."""
    out: list[str] = []
    backends = dict(sorted(t.backends.items()))
    t.backends = backends

    _metric(
        out,
        "gwfast_requests_total",
        "counter",
        "Requests answered: by an endpoint (code is the status class) or by the gateway "
        "itself (code is the status; backend is empty when no backend was routed to).",
    )
    for b, acc in backends.items():
        lb = _label(b)
        for c, cls in enumerate(CLASSES):
            off = HIST + c * HSTRIDE
            n = sum(acc.slots[off : off + NBUCKETS])
            out.append(
                f'gwfast_requests_total{{backend="{lb}",source="endpoint",code="{cls}"}} {n}'
            )
    for b, slots in [("", t.unrouted)] + [(b, a.slots[CODES_AT:]) for b, a in backends.items()]:
        lb = _label(b)
        for i in range(NCODES):
            if i < len(CODES) or slots[i]:
                out.append(
                    f'gwfast_requests_total{{backend="{lb}",source="gateway",'
                    f'code="{_code(i)}"}} {slots[i]}'
                )

    _metric(
        out,
        "gwfast_request_duration_seconds",
        "histogram",
        "Time from a request's complete head to the end of the response relayed from an "
        "endpoint (a stream ends when the endpoint or the client ends it).",
    )
    for b, acc in backends.items():
        lb = _label(b)
        for c, cls in enumerate(CLASSES):
            off = HIST + c * HSTRIDE
            cum = 0
            labels = f'backend="{lb}",code="{cls}"'
            for i in range(NBUCKETS):
                cum += acc.slots[off + i]
                le = repr(BUCKETS[i]) if i < len(BUCKETS) else "+Inf"
                out.append(f'gwfast_request_duration_seconds_bucket{{{labels},le="{le}"}} {cum}')
            out.append(
                f"gwfast_request_duration_seconds_sum{{{labels}}} {acc.slots[off + HSUM] / 1e9!r}"
            )
            out.append(f"gwfast_request_duration_seconds_count{{{labels}}} {cum}")

    for name, kind, slot, help_ in _PER_BACKEND:
        _metric(out, name, kind, help_)
        _per_backend(out, t, name, slot)

    _metric(out, "gwfast_client_connections", "gauge", "Open client connections.")
    out.append(f"gwfast_client_connections {t.connections}")
    _metric(out, "gwfast_workers", "gauge", "Worker processes whose counts are summed here.")
    out.append(f"gwfast_workers {t.regions}")
    out.append("")
    return "\n".join(out).encode()


_PER_BACKEND: Iterable[tuple[str, str, int, str]] = (
    (
        "gwfast_sessions_created_total",
        "counter",
        SESSIONS,
        "Sessions created: responses whose Mcp-Session-Id the gateway sealed anew.",
    ),
    (
        "gwfast_upstream_connect_failures_total",
        "counter",
        CONNECT_FAILURES,
        "Failed TCP connects to endpoints (refused or timed out).",
    ),
    (
        "gwfast_endpoint_ejections_total",
        "counter",
        EJECTIONS,
        "Endpoints taken out of placement by failed connects or health checks (each worker "
        "ejects on its own, so each counts).",
    ),
    (
        "gwfast_health_panics_total",
        "counter",
        PANICS,
        "Times the backend entered panic routing: every endpoint failed its health check, so "
        "those that accept connections were routed to anyway (each worker counts its own).",
    ),
    (
        "gwfast_backend_panic",
        "gauge",
        PANIC,
        "1 while the backend is routed in panic mode (by any worker), else 0.",
    ),
    (
        "gwfast_open_streams",
        "gauge",
        STREAMS,
        "Responses still being relayed after their head: SSE streams and bodies still arriving.",
    ),
    (
        "gwfast_upstream_connections",
        "gauge",
        UPSTREAM,
        "Open keep-alive connections to endpoints, idle in the pool or carrying a request.",
    ),
    (
        "gwfast_healthy_endpoints",
        "gauge",
        HEALTHY,
        "Endpoints that take new sessions, in panic mode too (the fewest any worker sees).",
    ),
    ("gwfast_endpoints", "gauge", ENDPOINTS, "Configured endpoints."),
)
