"""Active health checks of endpoints; passive ejection lives in the proxy's connect path.

Each endpoint is probed every `interval` with `GET health_check.path` (any 2xx is healthy) or,
with `path: null`, a bare TCP connect. `unhealthy_threshold` failures in a row eject it from
placement of new sessions, `healthy_threshold` successes bring it back. Sessions already on an
ejected endpoint still go to it: only the endpoint can say their session is gone.

Panic mode (`health_check.panic`, on by default, as Envoy's panic threshold): when every
endpoint of a backend fails its check but some still accept TCP connections, those are routed
to anyway, so a wrong health path (a server without /healthz) degrades to no health checking
instead of an outage; one endpoint passing again ends it. The decision is
`Backend.record_check`, here off the hot path: the relay only reads `Endpoint.healthy`. Why a
check failed is said in `wire.health_advice`'s words, in the log and in 503 bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

from gwfast.gateway import Gateway
from gwfast.model import CHECK_FAILING, CHECK_PASSING, PANIC_ENTERED, PANIC_LEFT, Backend, Endpoint
from gwfast.wire import health_advice

log = logging.getLogger("gwfast.health")


def _reason(e: OSError) -> str:
    """An OS error's text without asyncio's wrapping ("Connect call failed ('h', p)")."""
    if e.errno and e.errno > 0 and not isinstance(e, socket.gaierror):
        return os.strerror(e.errno)
    return e.strerror or str(e) or type(e).__name__


async def probe(ep: Endpoint, path: str | None, timeout: float) -> tuple[str | None, bool]:
    """Check `ep` once: `(why, reachable)`. `why` is None when healthy, else what failed and
    the fix (`wire.health_advice`); `reachable` says whether the TCP connect succeeded."""
    writer = None
    connected = False
    status = error = None
    line = b""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(ep.host, ep.port)
            connected = True
            if path is None:
                return None, True
            writer.write(
                b"GET "
                + path.encode()
                + b" HTTP/1.1\r\nHost: "
                + ep.authority
                + b"\r\nUser-Agent: gwfast-health\r\nConnection: close\r\n\r\n"
            )
            line = await reader.readline()
    except TimeoutError:
        error = f"no answer within {timeout:g}s" if connected else f"timed out after {timeout:g}s"
    except OSError as e:
        error = f"no HTTP answer ({_reason(e)})" if connected else _reason(e)
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    if error is None:
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
            status = int(parts[1])
            if 200 <= status < 300:
                return None, True
        elif line:
            error = f"no HTTP answer (it sent {line.strip()[:40]!r})"
        else:
            error = "no HTTP answer (the connection closed)"
    return health_advice(path, status, error), connected


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
            why, reachable = await probe(ep, hc.path, hc.timeout)
            if ep.carried:  # requests begun before a reload have ended: forget them
                ep.carried = tuple(p for p in ep.carried if p.outstanding > 0)
            _log_change(b, ep, b.record_check(ep, why, reachable))
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


def _log_change(b: Backend, ep: Endpoint, changed: int) -> None:
    """One WARNING per change: an endpoint's check turning, a backend entering or leaving
    panic mode (each once, not at every check)."""
    if changed & CHECK_FAILING:
        if ep.healthy:  # kept routable: panic mode
            log.warning("endpoint %s fails its health check: %s", ep.url, ep.last_check)
        else:
            log.warning("endpoint %s ejected: %s", ep.url, ep.last_check)
    elif changed & CHECK_PASSING:
        log.warning("endpoint %s is healthy again", ep.url)
    if changed & PANIC_ENTERED:
        routed = [e for e in b.endpoints if e.healthy]
        reason = ep if ep.last_check else next((e for e in b.endpoints if e.last_check), ep)
        log.warning(
            "backend %r enters panic mode: no endpoint passes its health check (%s: %s); "
            "routing to the %d of %d that accept connections anyway. Fix the check, or set "
            "health_check.panic: false to answer 503 instead",
            b.name,
            reason.url,
            reason.last_check,
            len(routed),
            len(b.endpoints),
        )
    elif changed & PANIC_LEFT:
        if any(e.passing for e in b.endpoints):
            why = f"{ep.url} passes its health check again; normal routing resumes"
        elif not any(e.reachable for e in b.endpoints):
            why = "no endpoint accepts connections any more; answering 503"
        else:
            why = "health_check.panic is false; answering 503"
        log.warning("backend %r leaves panic mode: %s", b.name, why)
