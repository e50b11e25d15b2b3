"""The runtime snapshot: backends, endpoints and balancer tables, built off the hot path.

STYLE.md "Snapshot and swap": configuration (the static YAML, or the control process's
snapshots followed by `gwfast.follow`) maps into these objects once; the request path only
reads them. The per-endpoint counters (health, outstanding requests) are the only mutable
parts, owned by one worker.
"""

from __future__ import annotations

import array
import hashlib
import random
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from gwfast._native.ring import HashRing, capacity, key_hash
from gwfast.config import BackendConfig, Config, parse_listen
from gwfast.metrics import EJECTIONS, HEALTHY, PANIC, PANICS, unbound_block
from gwfast.sessions import IDENT_LEN

# what a health check changed (`Backend.record_check`), for the health checker's log
CHECK_FAILING = 1  # the endpoint's check result turned failing (unhealthy_threshold reached)
CHECK_PASSING = 2  # ... turned passing again (healthy_threshold reached)
PANIC_ENTERED = 4  # the backend entered panic routing
PANIC_LEFT = 8  # ... and left it
SHOWN_ENDPOINTS = 5  # endpoints a 503 message explains; the rest are counted


def endpoint_ident(url: str) -> bytes:
    """The endpoint's stable identity sealed into session ids: the same on every replica."""
    return hashlib.blake2b(url.encode(), digest_size=IDENT_LEN, person=b"gwfast-ep").digest()


class Endpoint:
    """One upstream MCP endpoint and this worker's view of it."""

    __slots__ = (
        "url",
        "host",
        "port",
        "path",
        "authority",
        "ident",
        "index",
        "backend",
        "healthy",
        "outstanding",
        "fails",
        "oks",
        "checked",
        "carried",
        "last_check",
        "reachable",
        "passing",
    )

    def __init__(self, url: str, index: int, backend: Backend) -> None:
        parts = urlsplit(url)
        self.url = url
        self.host: str = parts.hostname or ""
        self.port: int = parts.port or 80
        self.path: bytes = (parts.path or "/").encode()
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.authority: bytes = (host if self.port == 80 else f"{host}:{self.port}").encode()
        self.ident = endpoint_ident(url)
        self.index = index
        self.backend = backend
        self.healthy = True  # optimistic until the first check: routing starts at once
        self.checked = False
        self.outstanding = 0  # requests in flight and open streams
        self.fails = 0
        self.oks = 0
        # the objects this one replaced at reloads (same URL) while they still had requests
        # in flight: those requests end on the old object, so its count is added to ours
        self.carried: tuple[Endpoint, ...] = ()
        # why the last active check failed ("" when it passed or has not run), for the 503
        # body and the logs; and whether that check could connect (TCP) at all
        self.last_check = ""
        self.reachable = True
        # the active check's verdict (thresholds applied), kept apart from `healthy`, which
        # says whether the relay routes here: in panic mode an endpoint that fails its check
        # is routed to all the same, and a failed connect in the relay ejects one that passes
        self.passing = True

    def inherit(self, old: Endpoint) -> None:
        """Take over from the endpoint this one replaces at a reload (same URL, same backend):
        health, its counters and the load still in flight on the old object."""
        self.backend.set_health(self, old.healthy)
        self.checked, self.fails, self.oks = old.checked, old.fails, old.oks
        self.last_check, self.reachable, self.passing = old.last_check, old.reachable, old.passing
        self.backend.panic = old.backend.panic  # the next check decides again
        self.carried = tuple(p for p in (old, *old.carried) if p.outstanding > 0)

    def load(self) -> int:
        """Requests in flight and open streams, including those begun before a reload."""
        n = self.outstanding
        for p in self.carried:
            n += p.outstanding
        return n

    def __repr__(self) -> str:
        return f"<Endpoint {self.url} healthy={self.healthy} outstanding={self.outstanding}>"


class Backend:
    """A named MCP server behind the gateway, with its placement tables. It may have no
    endpoint (a backend of the control process whose replicas are starting): `place` and
    `pick_least_loaded` then return None and the request gets 503."""

    def __init__(self, name: str, cfg: BackendConfig) -> None:
        self.name = name
        self.name_b = name.encode()
        self.cfg = cfg
        self.session_affinity = cfg.affinity == "session"
        self.placement = cfg.placement
        self.placement_header: bytes | None = (
            cfg.placement[7:].lower().encode() if cfg.placement.startswith("header:") else None
        )
        self.endpoints = tuple(Endpoint(u, i, self) for i, u in enumerate(cfg.endpoints))
        self.by_ident = {e.ident: e for e in self.endpoints}
        # session ids opened for this backend: token -> (endpoint, backend session id),
        # filled by the relay (a new snapshot starts empty: keys and endpoints may change)
        self.sessions: dict[bytes, tuple[Endpoint, bytes]] = {}
        self.ring = HashRing([e.ident for e in self.endpoints])
        self.loads = array.array("q", bytes(8 * len(self.endpoints)))
        self.eligible = bytearray(b"\x01" * len(self.endpoints))
        self._rand = random.Random()
        # this worker's metrics slots (gwfast.metrics): `m[m_base + OFFSET]`; a private
        # block until the gateway binds the snapshot to its region
        self.m, self.m_base, self.hist = unbound_block()
        # the control process's word on this backend's replicas ("" from a static file),
        # and whether every endpoint fails its check and routing is in panic mode
        self.note = ""
        self.panic = False

    def set_health(self, ep: Endpoint, healthy: bool) -> None:
        ep.healthy = healthy
        self.eligible[ep.index] = 1 if healthy else 0
        self.m[self.m_base + HEALTHY] = sum(self.eligible)

    def any_healthy(self) -> bool:
        return any(self.eligible)

    # ------------------------------------------------------------ health (off the hot path)
    def record_check(self, ep: Endpoint, why: str | None, reachable: bool) -> int:
        """Take in one active health check of `ep` and set which endpoints the relay routes
        to (`Endpoint.healthy`); returns what changed (CHECK_* and PANIC_* bits) for the log.

        `why` is None when the check passed, else what failed (`wire.health_advice`);
        `reachable` says whether its TCP connect succeeded. `unhealthy_threshold` failures in
        a row make `ep.passing` false, `healthy_threshold` successes true again. Routed: the
        endpoints that pass. When none passes but some accept connections and
        `health_check.panic` is on, the backend is in panic mode (Envoy's panic threshold)
        and those are routed to anyway: a wrong health path then means no health checking,
        not an outage. Outside a change of mode only `ep` itself changes, so an endpoint the
        relay ejected after a failed connect stays out until its own next check.
        """
        hc = self.cfg.health_check
        ep.checked = True
        ep.last_check = why or ""
        ep.reachable = reachable
        was = ep.passing
        if why is None:
            ep.fails = 0
            ep.oks += 1
            passing = was or ep.oks >= hc.healthy_threshold
        else:
            ep.oks = 0
            ep.fails += 1
            passing = was and ep.fails < hc.unhealthy_threshold
        ep.passing = passing
        changed = 0 if passing == was else (CHECK_PASSING if passing else CHECK_FAILING)
        panic = False  # panic: none passes, some accept connections, and it is allowed
        if hc.panic:
            for e in self.endpoints:
                if e.passing:
                    panic = False
                    break
                if e.reachable:
                    panic = True
        if panic != self.panic:
            self.panic = panic
            self.m[self.m_base + PANIC] = 1 if panic else 0
            if panic:
                self.m[self.m_base + PANICS] += 1
            for e in self.endpoints:
                self._route(e, e.passing or (panic and e.reachable))
            return changed | (PANIC_ENTERED if panic else PANIC_LEFT)
        if (passing and why is None) or (panic and reachable):
            self._route(ep, True)
        elif not passing:
            self._route(ep, False)
        # else: a failure below unhealthy_threshold leaves it routed or not, as it was
        return changed

    def _route(self, ep: Endpoint, routable: bool) -> None:
        if ep.healthy != routable:
            if ep.healthy:
                self.m[self.m_base + EJECTIONS] += 1
            self.set_health(ep, routable)

    def unavailable_message(self) -> str:
        """The 503 message when no endpoint is routable: what each endpoint's last health
        check said and the fix (the first few; the rest counted), then the control process's
        note on the replicas, if any. Built on the error path only."""
        msg = f"backend {self.name!r} has no healthy endpoint; retry later"
        found = []
        for e in self.endpoints[:SHOWN_ENDPOINTS]:
            if e.last_check:
                why = e.last_check
            elif not e.checked:
                why = "ejected after a failed connect; not health-checked yet"
            elif not e.passing:
                why = "recovering: it needs health_check.healthy_threshold passing checks in a row"
            else:
                why = "ejected after a failed connect; its next passing health check restores it"
            found.append(f"{e.url}: {why}")
        if len(self.endpoints) > SHOWN_ENDPOINTS:
            found.append(f"and {len(self.endpoints) - SHOWN_ENDPOINTS} more")
        if found:
            msg += ". " + "; ".join(found)
        if self.note:
            msg += ". " + self.note
        elif not self.endpoints:
            msg += ": it has no endpoints yet"
        return msg

    def place(self, key: bytes | None, exclude: set[int] | None = None) -> Endpoint | None:
        """Endpoint for a new session: consistent hashing with bounded loads over healthy
        endpoints. `key` None means a random key (placement: random)."""
        eligible = self.eligible
        if exclude:
            eligible = bytearray(eligible)
            for i in exclude:
                eligible[i] = 0
        n = sum(eligible)
        if n == 0:
            return None
        loads = self.loads
        total = 0
        for e in self.endpoints:
            load = e.load() if e.carried else e.outstanding
            loads[e.index] = load
            total += load
        h = self._rand.getrandbits(64) if key is None else key_hash(key)
        i = self.ring.lookup_bounded(h, loads, eligible, capacity(total, n, self.cfg.load_factor))
        return self.endpoints[i] if i >= 0 else None

    def pick_least_loaded(self, exclude: set[int] | None = None) -> Endpoint | None:
        """affinity: none — power of two random choices by outstanding requests. Runs per
        request: two passes over the endpoints instead of a list of the candidates."""
        n = 0
        for e in self.endpoints:
            if e.healthy and not (exclude and e.index in exclude):
                n += 1
        if n == 0:
            return None
        i = self._rand.randrange(n)
        j = i
        if n > 1:  # a second candidate, distinct from the first
            j = self._rand.randrange(n - 1)
            j += j >= i
        a = b = None
        k = 0
        for e in self.endpoints:
            if e.healthy and not (exclude and e.index in exclude):
                if k == i:
                    a = e
                if k == j:
                    b = e
                k += 1
        if a.carried or b.carried:
            return a if a.load() <= b.load() else b
        return a if a.outstanding <= b.outstanding else b


@dataclass(frozen=True)
class Snapshot:
    config: Config
    host: str
    port: int
    backends: dict[str, Backend] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        cfg: Config,
        backends: dict[str, BackendConfig],
        *,
        notes: dict[str, str] | None = None,
    ) -> Snapshot:
        """`notes`: the control process's word on each backend (`Backend.note`)."""
        host, port = parse_listen(cfg.listen)
        snapshot = cls(cfg, host, port, {n: Backend(n, b) for n, b in backends.items()})
        if notes:
            for name, note in notes.items():
                b = snapshot.backends.get(name)
                if b is not None:
                    b.note = note
        return snapshot
