"""What one worker shares between its connections: snapshot, keys, policies, pools."""

from __future__ import annotations

import asyncio
import logging

from gwfast.model import Backend, Snapshot
from gwfast.policy import HostPolicy, OriginPolicy, is_loopback
from gwfast.sessions import SessionSealer
from gwfast.upstream import Pool

log = logging.getLogger("gwfast")


class Gateway:
    def __init__(self, snapshot: Snapshot, sealer: SessionSealer,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.sealer = sealer
        self.pool = Pool(loop, keepalive=snapshot.config.timeouts.upstream_keepalive)
        self.connections: set = set()
        self.ready = False  # set once the first health checks have answered
        self.draining = False
        self.swap(snapshot)

    def swap(self, snapshot: Snapshot) -> None:
        """Publish a new snapshot with one reference swap (STYLE.md "Snapshot and swap")."""
        cfg = snapshot.config
        loopback = is_loopback(snapshot.host)
        routes: dict[bytes, Backend] = {}
        for name, b in snapshot.backends.items():
            routes[f"/{name}/mcp".encode()] = b
            routes[f"/adapters/{name}/mcp".encode()] = b
        self.hosts = HostPolicy(cfg.allowed_hosts, loopback=loopback)
        self.origins = OriginPolicy(cfg.allowed_origins, loopback=loopback)
        self.limits = cfg.limits
        self.timeouts = cfg.timeouts
        self.routes = routes
        self.snapshot = snapshot

    def any_healthy(self) -> bool:
        return any(b.any_healthy() for b in self.snapshot.backends.values())
