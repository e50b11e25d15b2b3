"""The control process's operations, shared by REST, the `/adapters` alias, MCP tools and the CLI.

Each operation validates first and changes nothing on error: a `ControlError` carries the
HTTP status (400 invalid, 404 unknown, 409 taken) and a message saying what to fix, which
every way in reports as it is. Results are plain JSON-able dicts.
"""

from __future__ import annotations

from typing import Any

import msgspec

from control.orchestrator import Observed, Orchestrator
from control.reconcile import Reconciler, replica_summary
from control.spec import (
    BackendSpec,
    SpecError,
    TenantSpec,
    backend_spec,
    check_name,
    check_tenant_name,
    quota,
    seconds,
    tenant_spec,
    to_dict,
)
from control.store import Conflict, NotFound, Store

MAX_LOG_LINES = 10_000


class ControlError(Exception):
    def __init__(self, status: int, message: str, field: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"status": self.status, "message": self.message}
        if self.field:
            out["field"] = self.field
        return {"error": out}


def _invalid(e: SpecError) -> ControlError:
    return ControlError(400, str(e), e.field)


def _replica_dict(r) -> dict:
    return {
        "replica": r.index,
        "state": r.state,
        "endpoint": r.endpoint,
        "routable": r.routable,
        "healthy": r.healthy,
        "health": r.health,
        "pid": r.pid,
        "restarts": r.restarts,
        "last_exit": r.last_exit,
        "since": r.since,
    }


class Control:
    """The registry's operations over a store, an orchestrator and a reconciler."""

    def __init__(self, store: Store, orchestrator: Orchestrator, reconciler: Reconciler) -> None:
        self.store = store
        self.orchestrator = orchestrator
        self.reconciler = reconciler

    # -- backends --
    def _spec(self, name: str) -> BackendSpec:
        try:
            check_name(name)
            return self.store.backend(name)
        except SpecError as e:
            raise _invalid(e) from None
        except NotFound:
            raise ControlError(
                404, f"backend {name!r} is not registered (list_backends shows those that are)"
            ) from None

    def _validated(self, raw: Any) -> BackendSpec:
        try:
            spec = backend_spec(raw)
        except SpecError as e:
            raise _invalid(e) from None
        why = self.orchestrator.refuses(spec)
        if why:
            raise ControlError(400, why, spec.kind)
        return spec

    def list_backends(self) -> list[dict]:
        observed = self.orchestrator.observed()
        return [self._summary(spec, observed.get(n)) for n, spec in self.store.backends().items()]

    def _summary(self, spec: BackendSpec, obs: Observed | None) -> dict:
        ready = sum(1 for r in obs.replicas if r.routable) if obs is not None else 0
        out = to_dict(spec)
        out.update(
            kind=spec.kind,
            ready_replicas=ready,
            state="ready" if ready >= spec.replicas else "degraded" if ready else "unavailable",
            route=f"/{spec.name}/mcp",
        )
        return out

    def get_backend(self, name: str) -> dict:
        spec = self._spec(name)
        return self._summary(spec, self.orchestrator.observed().get(name))

    def register(self, raw: Any) -> dict:
        spec = self._validated(raw)
        try:
            self.store.add_backend(spec)
        except Conflict:
            raise ControlError(
                409,
                f"backend {spec.name!r} is already registered: unregister it first, or "
                "change it (PATCH /v1/backends/NAME; scale_backend to scale)",
                "name",
            ) from None
        self.reconciler.wake()
        return self.get_backend(spec.name)

    def replace(self, name: str, raw: Any) -> dict:
        """Replace the whole registration (PUT)."""
        self._spec(name)
        if isinstance(raw, dict):
            if raw.get("name", name) != name:
                raise ControlError(400, "name cannot be changed (it is in the path)", "name")
            raw = {**raw, "name": name}
        spec = self._validated(raw)
        self.store.replace_backend(spec)
        self.reconciler.wake()
        return self.get_backend(name)

    def update(self, name: str, changes: Any) -> dict:
        """Change some fields (PATCH; `replicas` to scale)."""
        if not isinstance(changes, dict):
            raise ControlError(400, "the body must be a JSON object")
        if "name" in changes and changes["name"] != name:
            raise ControlError(400, "name cannot be changed (it is in the path)", "name")
        merged = {k: v for k, v in to_dict(self._spec(name)).items() if v is not None}
        # `command`, `url` and `image` exclude one another: one given replaces the other
        if {"command", "url", "image"} & changes.keys():
            for k in ("command", "url", "image"):
                merged.pop(k, None)
        merged.update(changes)
        return self.replace(name, merged)

    def scale(self, name: str, replicas: Any) -> dict:
        return self.update(name, {"replicas": replicas})

    def status(self, name: str) -> dict:
        spec = self._spec(name)
        obs = self.orchestrator.observed().get(name)
        out = self._summary(spec, obs)
        out["orchestrator"] = self.orchestrator.kind
        out["message"] = replica_summary(spec, obs)
        out["replica_status"] = (
            [_replica_dict(r) for r in obs.replicas] if obs is not None and obs.spec == spec else []
        )
        return out

    async def logs(self, name: str, replica: Any = None, lines: Any = 100) -> dict:
        self._spec(name)
        if replica is not None and (isinstance(replica, bool) or not isinstance(replica, int)):
            raise ControlError(400, "replica must be a whole number", "replica")
        if isinstance(lines, bool) or not isinstance(lines, int) or not 1 <= lines <= MAX_LOG_LINES:
            raise ControlError(400, f"lines must be between 1 and {MAX_LOG_LINES}", "lines")
        try:
            text = await self.orchestrator.logs(name, replica, lines)
        except KeyError:
            text = []  # registered, not started yet
        except IndexError:
            raise ControlError(
                404, f"backend {name!r} has no replica {replica} (backend_status lists them)"
            ) from None
        return {"name": name, "replica": replica, "lines": text}

    def unregister(self, name: str) -> dict:
        self._spec(name)
        self.store.remove_backend(name)
        self.reconciler.wake()
        return {"name": name, "unregistered": True}

    # -- tenants --
    def _tenant(self, tenant_id: str) -> TenantSpec:
        try:
            check_tenant_name(tenant_id)
            return self.store.tenant(tenant_id)
        except SpecError as e:
            raise _invalid(e) from None
        except NotFound:
            raise ControlError(404, f"tenant {tenant_id!r} does not exist") from None

    @staticmethod
    def _tenant_dict(t: TenantSpec) -> dict:
        out = to_dict(t)
        out["quota"] = _quota_dict(t.quota)
        out["backend_quotas"] = {b: _quota_dict(q) for b, q in t.backend_quotas.items()}
        return out

    def list_tenants(self) -> list[dict]:
        return [self._tenant_dict(t) for t in self.store.tenants().values()]

    def get_tenant(self, tenant_id: str) -> dict:
        return self._tenant_dict(self._tenant(tenant_id))

    def put_tenant(self, tenant_id: str, raw: Any) -> tuple[dict, bool]:
        if isinstance(raw, dict):
            if raw.get("name", tenant_id) != tenant_id:
                raise ControlError(400, "name cannot differ from the tenant id in the path", "name")
            raw = {**raw, "name": tenant_id}
        try:
            check_tenant_name(tenant_id)
            spec = tenant_spec(raw)
        except SpecError as e:
            raise _invalid(e) from None
        created = self.store.put_tenant(spec)
        self.reconciler.wake()
        return self._tenant_dict(spec), created

    def remove_tenant(self, tenant_id: str) -> dict:
        self._tenant(tenant_id)
        self.store.remove_tenant(tenant_id)
        self.reconciler.wake()
        return {"tenant_id": tenant_id, "removed": True}

    def tenant_quota(self, tenant_id: str, requests: Any = None, period: Any = None) -> dict:
        """Inspect, or with `requests` and `period` set, the tenant's quota (the tenant is
        created when it does not exist yet). Returns the quota in force."""
        try:
            check_tenant_name(tenant_id)
            if requests is None and period is None:
                try:
                    t = self.store.tenant(tenant_id)
                except NotFound:
                    t = TenantSpec(name=tenant_id)
                return {"tenant_id": tenant_id, "quota": _quota_dict(t.quota)}
            if requests is None or period is None:
                raise SpecError("quota", 'give both requests and period (e.g. 1000 and "1h")')
            q = quota(requests, period)
        except SpecError as e:
            raise _invalid(e) from None
        try:
            t = self.store.tenant(tenant_id)
        except NotFound:
            t = TenantSpec(name=tenant_id)
        self.store.put_tenant(msgspec.structs.replace(t, quota=q))
        self.reconciler.wake()
        return {"tenant_id": tenant_id, "quota": _quota_dict(q)}


def _quota_dict(q) -> dict | None:
    if q is None:
        return None
    s = seconds(q.period)
    return {"requests": q.requests, "period": s, "period_text": _period_text(s)}


def _period_text(s: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if s >= size and s % size == 0:
            return f"{int(s // size)}{unit}"
    return f"{s:g}s"
