"""The runtime snapshot: backends, endpoints and balancer tables, built off the hot path.

STYLE.md "Snapshot and swap": configuration (static YAML today, the control process's stream
later) maps into these objects once; the request path only reads them. The per-endpoint
counters (health, outstanding requests) are the only mutable parts, owned by one worker.
"""

from __future__ import annotations

import array
import hashlib
import random
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from gwfast._native.ring import HashRing, capacity, key_hash
from gwfast.config import BackendConfig, Config, parse_listen
from gwfast.metrics import HEALTHY, unbound_block
from gwfast.sessions import IDENT_LEN


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

    def inherit(self, old: Endpoint) -> None:
        """Take over from the endpoint this one replaces at a reload (same URL, same backend):
        health, its counters and the load still in flight on the old object."""
        self.backend.set_health(self, old.healthy)
        self.checked, self.fails, self.oks = old.checked, old.fails, old.oks
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
    """A named MCP server behind the gateway, with its placement tables."""

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

    def set_health(self, ep: Endpoint, healthy: bool) -> None:
        ep.healthy = healthy
        self.eligible[ep.index] = 1 if healthy else 0
        self.m[self.m_base + HEALTHY] = sum(self.eligible)

    def any_healthy(self) -> bool:
        return any(self.eligible)

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
    def build(cls, cfg: Config, backends: dict[str, BackendConfig]) -> Snapshot:
        host, port = parse_listen(cfg.listen)
        return cls(cfg, host, port, {n: Backend(n, b) for n, b in backends.items()})
