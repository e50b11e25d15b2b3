"""Active health checks of endpoints; passive ejection lives in the proxy's connect path.

Each endpoint is probed every `interval` with `GET health_check.path` (any 2xx is healthy) or,
with `path: null`, a bare TCP connect. `unhealthy_threshold` failures in a row eject it from
placement of new sessions, `healthy_threshold` successes bring it back. Sessions already on an
ejected endpoint still go to it: only the endpoint can say their session is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gwfast.gateway import Gateway
from gwfast.metrics import EJECTIONS
from gwfast.model import Backend, Endpoint

log = logging.getLogger("gwfast.health")


async def probe(ep: Endpoint, path: str | None, timeout: float) -> str | None:
    """None when healthy, else why not."""
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(ep.host, ep.port)
            if path is None:
                return None
            writer.write(
                b"GET "
                + path.encode()
                + b" HTTP/1.1\r\nHost: "
                + ep.authority
                + b"\r\nUser-Agent: gwfast-health\r\nConnection: close\r\n\r\n"
            )
            line = await reader.readline()
    except TimeoutError:
        return f"no answer within {timeout:g}s"
    except OSError as e:
        return e.strerror or str(e)
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    parts = line.split()
    if len(parts) >= 2 and parts[1][:1] == b"2":
        return None
    return f"health check answered {line.strip()[:60]!r}"


class HealthChecker:
    """One probing task per endpoint of the current snapshot; `restart()` after a swap."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.tasks: list[asyncio.Task] = []
        self._first: asyncio.Task | None = None

    def start(self) -> None:
        snapshot = self.gw.snapshot
        assert snapshot is not None
        for b in snapshot.backends.values():
            for ep in b.endpoints:
                self.tasks.append(asyncio.create_task(self._run(b, ep)))
        if self._first is None:
            self._first = asyncio.create_task(self._first_round())

    def restart(self) -> None:
        """Probe the endpoints of the snapshot just swapped in; the tasks of the old one
        (removed endpoints included) stop. Health state was carried over by the swap."""
        self._cancel_probes()
        self.start()

    async def _first_round(self) -> None:
        """Ready once every endpoint has been checked once (or after 10 s at most)."""
        for _ in range(200):
            snapshot = self.gw.snapshot
            assert snapshot is not None
            if all(e.checked for b in snapshot.backends.values() for e in b.endpoints):
                break
            await asyncio.sleep(0.05)
        self.gw.ready = True

    async def _run(self, b: Backend, ep: Endpoint) -> None:
        hc = b.cfg.health_check
        while True:
            why = await probe(ep, hc.path, hc.timeout)
            ep.checked = True
            if ep.carried:  # requests begun before a reload have ended: forget them
                ep.carried = tuple(p for p in ep.carried if p.outstanding > 0)
            if why is None:
                ep.fails = 0
                ep.oks += 1
                if not ep.healthy and ep.oks >= hc.healthy_threshold:
                    log.warning("endpoint %s is healthy again", ep.url)
                    b.set_health(ep, True)
            else:
                ep.oks = 0
                ep.fails += 1
                if ep.healthy and ep.fails >= hc.unhealthy_threshold:
                    log.warning("endpoint %s ejected: %s", ep.url, why)
                    b.set_health(ep, False)
                    b.m[b.m_base + EJECTIONS] += 1
            await asyncio.sleep(hc.interval)

    def _cancel_probes(self) -> None:
        for t in self.tasks:
            t.cancel()
        self.tasks = []

    def stop(self) -> None:
        self._cancel_probes()
        if self._first is not None:
            self._first.cancel()

    async def aclose(self) -> None:
        """Stop, and wait until the tasks have ended (no pending task at loop close)."""
        tasks = [*self.tasks, *([self._first] if self._first is not None else [])]
        self.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
