"""What one worker shares between its connections: snapshot, keys, policies, pools."""

from __future__ import annotations

import asyncio
import logging

from gwfast.metrics import Region
from gwfast.model import Backend, Snapshot
from gwfast.policy import HostPolicy, OriginPolicy, is_loopback
from gwfast.relay import Pool
from gwfast.sessions import SessionSealer

log = logging.getLogger("gwfast")


class Gateway:
    def __init__(
        self,
        snapshot: Snapshot,
        sealer: SessionSealer,
        loop: asyncio.AbstractEventLoop,
        *,
        metrics: Region | None = None,
    ) -> None:
        self.loop = loop
        self.sealer = sealer
        self.pool = Pool(loop, keepalive=snapshot.config.timeouts.upstream_keepalive)
        self.connections: set = set()
        self.ready = False  # set once the first health checks have answered
        self.draining = False
        self.snapshot: Snapshot | None = None
        # this worker's region of the metrics block (gwfast.metrics); its own when alone
        self.metrics = metrics if metrics is not None else Region.private()
        self.m = self.metrics.slots
        self.swap(snapshot)

    def swap(self, snapshot: Snapshot, sealer: SessionSealer | None = None) -> None:
        """Publish a new snapshot (and key ring) with one reference swap (STYLE.md "Snapshot
        and swap"): new requests see only the new one, requests in flight keep the objects
        they hold. `snapshot` must be fresh (not published before): endpoints whose URL did
        not change take over their predecessors' health and load here."""
        old = self.snapshot
        if old is not None:
            for name, b in snapshot.backends.items():
                prev = old.backends.get(name)
                if prev is not None:
                    for ep in b.endpoints:
                        was = prev.by_ident.get(ep.ident)
                        if was is not None:
                            ep.inherit(was)
        cfg = snapshot.config
        loopback = is_loopback(snapshot.host)
        routes: dict[bytes, Backend] = {}
        for name, b in snapshot.backends.items():
            routes[f"/{name}/mcp".encode()] = b
            routes[f"/adapters/{name}/mcp".encode()] = b
        self.metrics.bind(snapshot)  # the new backends' metrics slots, before they serve
        # one event loop: these assignments are atomic for the request path
        self.hosts = HostPolicy(cfg.allowed_hosts, loopback=loopback)
        self.origins = OriginPolicy(cfg.allowed_origins, loopback=loopback)
        self.limits = cfg.limits
        self.timeouts = cfg.timeouts
        if sealer is not None:
            self.sealer = sealer
        self.routes = routes
        self.snapshot = snapshot
        self.pool.keepalive = cfg.timeouts.upstream_keepalive
        if old is not None:
            self._close_unused_upstreams(snapshot)

    def _close_unused_upstreams(self, snapshot: Snapshot) -> None:
        """Idle pooled connections to endpoints no longer configured (the pool is keyed by
        `Endpoint.ident`: those of unchanged URLs stay pooled). Connections still carrying a
        request finish it; the pool's reaper closes them once idle."""
        self.pool.close_idle(
            keep={e.ident for b in snapshot.backends.values() for e in b.endpoints}
        )

    def any_healthy(self) -> bool:
        return any(b.any_healthy() for b in self.snapshot.backends.values())
