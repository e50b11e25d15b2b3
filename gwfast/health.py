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
            writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: " + ep.authority +
                         b"\r\nUser-Agent: gwfast-health\r\nConnection: close\r\n\r\n")
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
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.tasks: list[asyncio.Task] = []

    def start(self) -> None:
        for b in self.gw.snapshot.backends.values():
            for ep in b.endpoints:
                self.tasks.append(asyncio.create_task(self._run(b, ep)))
        asyncio.create_task(self._first_round())

    async def _first_round(self) -> None:
        """Ready once every endpoint has been checked once (or after 10 s at most)."""
        eps = [e for b in self.gw.snapshot.backends.values() for e in b.endpoints]
        for _ in range(200):
            if all(e.checked for e in eps):
                break
            await asyncio.sleep(0.05)
        self.gw.ready = True

    async def _run(self, b: Backend, ep: Endpoint) -> None:
        hc = b.cfg.health_check
        while True:
            why = await probe(ep, hc.path, hc.timeout)
            ep.checked = True
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
            await asyncio.sleep(hc.interval)

    def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
