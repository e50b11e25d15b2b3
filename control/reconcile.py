"""Reconciling: desired state (the registry) against observed state (the orchestrator).

The decisions are pure functions, tested without processes: `plan` (desired, observed →
actions) and `snapshot` (desired, observed → the routing snapshot the data plane follows).
`Reconciler` is the small loop around them: it runs a pass when the registry changes, when
the orchestrator reports a change, and every `RESYNC` seconds regardless (level-based: a lost
wake-up costs at most that long).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

import msgspec

from control.orchestrator import Observed, Orchestrator
from control.publish import Publisher
from control.spec import BackendSpec, TenantSpec, seconds
from control.store import Store
from gwfast import wire

log = logging.getLogger("gwfast.control")

RESYNC = 2.0  # seconds between passes when nothing wakes the loop


class Ensure(msgspec.Struct, frozen=True):
    spec: BackendSpec


class Remove(msgspec.Struct, frozen=True):
    name: str


Action = Ensure | Remove


def plan(desired: Mapping[str, BackendSpec], observed: Mapping[str, Observed]) -> list[Action]:
    """Ensure every registered backend whose observed spec differs (or that is not running
    yet); remove every observed backend no longer registered."""
    actions: list[Action] = [
        Ensure(spec)
        for name, spec in sorted(desired.items())
        if name not in observed or observed[name].spec != spec
    ]
    actions += [Remove(name) for name in sorted(observed) if name not in desired]
    return actions


def replica_summary(spec: BackendSpec, obs: Observed | None) -> str:
    """Empty when every wanted replica routes, else a sentence for the 503 body and status."""
    if obs is None:
        return "not started yet"
    ready = sum(1 for r in obs.replicas if r.routable)
    if spec.replicas == 0:
        return "scaled to 0 replicas: scale it up to serve"
    if ready >= spec.replicas:
        return ""
    words = [f"{ready} of {spec.replicas} replicas ready"]
    for r in obs.replicas:
        if r.routable:
            continue
        detail = r.last_exit or r.health or r.state
        words.append(f"replica {r.index} {r.state}" + (f" ({detail})" if detail != r.state else ""))
    if obs.message:
        words.append(obs.message)
    return "; ".join(words) + f" (see backend_status {spec.name} and backend_logs {spec.name})"


def _wire_health(spec: BackendSpec) -> wire.HealthCheck:
    hc = spec.health_check
    return wire.HealthCheck(
        path=hc.path,
        interval=seconds(hc.interval),
        timeout=seconds(hc.timeout),
        healthy_threshold=hc.healthy_threshold,
        unhealthy_threshold=hc.unhealthy_threshold,
        panic=hc.panic,
    )


def _wire_quota(q) -> wire.Quota:
    return wire.Quota(requests=q.requests, period=seconds(q.period))


def snapshot(
    version: int,
    desired: Mapping[str, BackendSpec],
    observed: Mapping[str, Observed],
    tenants: Mapping[str, TenantSpec],
) -> wire.Snapshot:
    """The routing snapshot: each registered backend with the endpoints of its routable
    replicas (possibly none: the data plane answers 503 with `status`)."""
    backends = {}
    for name, spec in sorted(desired.items()):
        obs = observed.get(name)
        endpoints = (
            sorted(
                (r.endpoint for r in obs.replicas if r.routable and r.endpoint),
                key=lambda u: u,
            )
            if obs is not None and obs.spec == spec
            else []
        )
        backends[name] = wire.Backend(
            endpoints=endpoints,
            affinity=spec.affinity,
            placement=spec.placement,
            health_check=_wire_health(spec),
            allow_tenants=list(spec.tenants),
            allow_roles=list(spec.roles),
            status=replica_summary(spec, obs),
        )
    wt = {
        name: wire.Tenant(
            quota=_wire_quota(t.quota) if t.quota else None,
            backend_quotas={b: _wire_quota(q) for b, q in t.backend_quotas.items()},
        )
        for name, t in sorted(tenants.items())
    }
    return wire.Snapshot(version=version, backends=backends, tenants=wt)


class Reconciler:
    def __init__(self, store: Store, orchestrator: Orchestrator, publisher: Publisher) -> None:
        self.store = store
        self.orchestrator = orchestrator
        self.publisher = publisher
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        orchestrator.on_change = self.wake

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        await self.orchestrator.start()
        await self.run_once()
        self._task = asyncio.create_task(self._loop())

    async def run_once(self) -> None:
        desired = self.store.backends()
        for action in plan(desired, self.orchestrator.observed()):
            try:
                if isinstance(action, Ensure):
                    await self.orchestrator.ensure(action.spec)
                else:
                    await self.orchestrator.remove(action.name)
            except Exception:  # one backend's failure must not stop the others
                log.exception("reconciling %s failed; retrying in %gs", action, RESYNC)
        self.publisher.publish(
            lambda version: snapshot(
                version, desired, self.orchestrator.observed(), self.store.tenants()
            )
        )

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RESYNC):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.run_once()
            except Exception:
                log.exception("reconcile pass failed; retrying in %gs", RESYNC)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.orchestrator.close()
