"""The REST API's OpenAPI 3.1 document, generated from the structs the API takes and returns.

Request schemas are the validating structs themselves (`control.spec`, `gwfast.wire`), so
the document cannot describe a field the API does not take. Responses are plain dicts built
by `control.service`; the `*Info` structs below describe them, and the tests decode real
responses into them (unknown fields forbidden), so a field added to a response without its
schema fails a test. Bounds the validators enforce in code (name patterns, replica range)
are copied into the schemas from the same constants.

msgspec emits JSON Schema 2020-12, the dialect of OpenAPI 3.1: its components go under
`components.schemas` unchanged.
"""

from __future__ import annotations

import copy
from functools import cache
from importlib import metadata
from typing import Any

import msgspec

from control.service import MAX_LOG_LINES
from control.spec import MAX_REPLICAS, TENANT_NAME, BackendSpec, QuotaSpec, TenantSpec
from gwfast import wire


class _View(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class ErrorDetail(_View):
    status: int  # the HTTP status, repeated
    message: str  # what was wrong and how to fix it
    field: str = ""  # the offending field's path (``env.PORT``), when one is


class Error(_View):
    error: ErrorDetail


class Health(_View):
    status: str


class BackendInfo(BackendSpec, kw_only=True):
    """A registration as stored, with what the orchestrator reports."""

    kind: str  # command | url | image
    ready_replicas: int
    state: str  # ready | degraded | unavailable
    route: str  # the data plane's path: /NAME/mcp


class ReplicaInfo(_View):
    replica: int
    state: str  # starting | ready | exited | stopping
    endpoint: str | None
    routable: bool
    healthy: bool | None
    health: str
    pid: int | None
    restarts: int
    last_exit: str
    since: float


class BackendStatus(BackendInfo, kw_only=True):
    orchestrator: str  # local | kubernetes
    message: str  # "" when every wanted replica routes, else why not
    replica_status: list[ReplicaInfo]


class BackendLogs(_View):
    name: str
    replica: int | None
    lines: list[str]


class BackendRemoved(_View):
    name: str
    unregistered: bool


class QuotaInfo(_View):
    requests: int
    period: float  # seconds
    period_text: str  # e.g. "1h"


class TenantInfo(_View):
    name: str
    quota: QuotaInfo | None
    backend_quotas: dict[str, QuotaInfo]
    description: str


class TenantQuota(_View):
    tenant_id: str
    quota: QuotaInfo | None


class TenantRemoved(_View):
    tenant_id: str
    removed: bool


STRUCTS = (
    BackendSpec,
    TenantSpec,
    QuotaSpec,
    wire.Snapshot,
    Error,
    Health,
    BackendInfo,
    BackendStatus,
    BackendLogs,
    BackendRemoved,
    TenantInfo,
    TenantQuota,
    TenantRemoved,
)
_REF = "#/components/schemas/{name}"
_NAME = {"type": "string", "pattern": wire.BACKEND_NAME.pattern, "maxLength": 52}
_TENANT = {"type": "string", "pattern": TENANT_NAME.pattern, "maxLength": 63}
_BACKEND_FIELDS = {
    "name": {**_NAME, "description": wire.BACKEND_NAME_RULE},
    "command": {"description": "argv of a local process; `{port}` is replaced, PORT is set"},
    "url": {"description": "an existing MCP server (http://host:port/path): routed as is"},
    "image": {"description": "a container image (the Kubernetes orchestrator)"},
    "replicas": {"minimum": 0, "maximum": MAX_REPLICAS},
    "port": {"minimum": 1, "maximum": 65535, "description": "the container's port"},
    "affinity": {"enum": ["session", "none"]},
    "placement": {"description": "random | principal | tenant | header:NAME"},
    "tenants": {"items": _TENANT, "description": "allowed tenants; empty: all"},
    "description": {"maxLength": 1024},
}


def ref(name: str) -> dict:
    return {"$ref": _REF.format(name=name)}


def _schemas() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(STRUCTS, ref_template=_REF)
    for struct in ("BackendSpec", "BackendInfo", "BackendStatus"):
        props = components[struct]["properties"]
        for field, extra in _BACKEND_FIELDS.items():
            props[field] = {**props[field], **extra}
    components["TenantSpec"]["properties"]["name"].update(_TENANT)
    # PUT carries the name in its path (a body's name must match it); PATCH any subset
    for struct, derived in (("BackendSpec", "BackendReplace"), ("TenantSpec", "TenantPut")):
        schema = copy.deepcopy(components[struct])
        schema["title"] = derived
        schema["required"] = [r for r in schema.get("required", []) if r != "name"]
        components[derived] = schema
    patch = copy.deepcopy(components["BackendSpec"])
    patch.update(title="BackendPatch", required=[])
    patch["description"] = "Fields to change; `command`, `url` or `image` replaces the other two."
    components["BackendPatch"] = patch
    return components


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    400: "invalid input: the body names the field and the fix",
    404: "no such backend or tenant",
    409: "the name is taken",
    413: "the body is over 1 MiB",
}


def _op(
    op_id: str,
    summary: str,
    ok: tuple[int, dict | None, str],
    *,
    params: tuple[dict, ...] = (),
    body: str | None = None,
    errors: tuple[int, ...] = (400, 404),
    headers: dict | None = None,
) -> dict:
    status, schema, text = ok
    responses: dict[str, Any] = {
        str(status): _json(schema, text) if schema is not None else {"description": text}
    }
    if headers:
        responses[str(status)]["headers"] = headers
    if body is not None:
        errors = tuple(sorted({*errors, 400, 413}))
    for code in errors:
        responses[str(code)] = _json(ref("Error"), _ERRORS[code])
    responses["500"] = _json(ref("Error"), "internal error (logged by the control process)")
    out: dict[str, Any] = {"operationId": op_id, "summary": summary, "responses": responses}
    if params:
        out["parameters"] = list(params)
    if body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref(body)}},
        }
    return out


def _param(name: str, where: str, schema: dict, description: str, required: bool = False) -> dict:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "schema": schema,
        "description": description,
    }


NAME = _param("name", "path", _NAME, "the backend's name")
TENANT = _param("tenant_id", "path", _TENANT, "the tenant's id")
_LOCATION = {"Location": {"schema": {"type": "string"}, "description": "the new resource"}}


def _paths() -> dict[str, dict]:
    backend, status, tenant = ref("BackendInfo"), ref("BackendStatus"), ref("TenantInfo")
    array = lambda r: {"type": "array", "items": r}  # noqa: E731
    logs_params = (
        NAME,
        _param("replica", "query", {"type": "integer", "minimum": 0}, "one replica; absent: all"),
        _param(
            "lines",
            "query",
            {"type": "integer", "minimum": 1, "maximum": MAX_LOG_LINES, "default": 100},
            "how many of the last lines",
        ),
    )
    snapshot_params = (
        _param("have", "query", {"type": "integer"}, "the version the caller has; absent: none"),
        _param(
            "wait",
            "query",
            {"type": "number", "minimum": 0, "default": 0},
            f"seconds to wait for a change (at most {wire.MAX_WAIT:g}: longer is cut)",
        ),
    )
    snapshot = _op(
        "snapshot",
        "The routing snapshot, long-polled by the data plane (protocol: gwfast.wire)",
        (200, ref("Snapshot"), "a snapshot whose version differs from `have`"),
        params=snapshot_params,
        errors=(400,),
    )
    snapshot["responses"]["304"] = {"description": "no change within `wait` seconds (no body)"}
    snapshot["responses"]["503"] = _json(ref("Error"), "no snapshot published yet: retry")
    put_tenant = _op(
        "putTenant",
        "Create (201) or replace (200) a tenant",
        (200, tenant, "replaced"),
        params=(TENANT,),
        body="TenantPut",
        errors=(400,),
    )
    put_tenant["responses"]["201"] = {**_json(tenant, "created"), "headers": _LOCATION}
    return {
        "/v1/backends": {
            "get": _op(
                "listBackends",
                "List registered backends",
                (200, array(backend), "backends"),
                errors=(),
            ),
            "post": _op(
                "registerBackend",
                "Register a backend (the orchestrator starts its replicas)",
                (201, backend, "registered"),
                body="BackendSpec",
                errors=(400, 409),
                headers=_LOCATION,
            ),
        },
        "/v1/backends/{name}": {
            "get": _op("getBackend", "One backend", (200, backend, "the backend"), params=(NAME,)),
            "put": _op(
                "replaceBackend",
                "Replace a registration",
                (200, backend, "replaced"),
                params=(NAME,),
                body="BackendReplace",
            ),
            "patch": _op(
                "updateBackend",
                'Change some fields (e.g. {"replicas": 3} to scale)',
                (200, backend, "updated"),
                params=(NAME,),
                body="BackendPatch",
            ),
            "delete": _op(
                "unregisterBackend",
                "Unregister (its replicas stop)",
                (204, None, "unregistered"),
                params=(NAME,),
            ),
        },
        "/v1/backends/{name}/status": {
            "get": _op(
                "backendStatus",
                "Replicas, health and why not ready",
                (200, status, "status"),
                params=(NAME,),
            )
        },
        "/v1/backends/{name}/logs": {
            "get": _op(
                "backendLogs",
                "The last lines of a replica's output",
                (200, ref("BackendLogs"), "log lines"),
                params=logs_params,
            )
        },
        "/v1/tenants": {
            "get": _op("listTenants", "List tenants", (200, array(tenant), "tenants"), errors=())
        },
        "/v1/tenants/{tenant_id}": {
            "get": _op("getTenant", "One tenant", (200, tenant, "the tenant"), params=(TENANT,)),
            "put": put_tenant,
            "delete": _op(
                "removeTenant", "Remove a tenant", (204, None, "removed"), params=(TENANT,)
            ),
        },
        "/v1/tenants/{tenant_id}/quota": {
            "get": _op(
                "getTenantQuota",
                "The tenant's quota (null: none)",
                (200, ref("TenantQuota"), "quota"),
                params=(TENANT,),
                errors=(400,),
            ),
            "put": _op(
                "setTenantQuota",
                "Set the tenant's quota (creates the tenant if needed)",
                (200, ref("TenantQuota"), "the quota in force"),
                params=(TENANT,),
                body="QuotaSpec",
                errors=(400,),
            ),
        },
        "/v1/snapshot": {"get": snapshot},
        "/v1/openapi.json": {
            "get": _op(
                "openapi", "This document", (200, {"type": "object"}, "OpenAPI 3.1"), errors=()
            )
        },
        "/healthz": {
            "get": _op(
                "healthz", "The control process is alive", (200, ref("Health"), "ok"), errors=()
            )
        },
    }


def _version() -> str:
    try:
        return metadata.version("gwfast")
    except metadata.PackageNotFoundError:
        return "0.0.0"


@cache
def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "gwfast control API",
            "version": _version(),
            "description": (
                "Registers MCP backends and tenants; the control process runs the backends "
                "(local processes or Kubernetes) and publishes the routing snapshot that the "
                'data plane follows. Every error body is {"error": {"status", "message", '
                '"field"}}; invalid input changes nothing.'
            ),
        },
        "paths": _paths(),
        "components": {"schemas": _schemas()},
    }


@cache
def document_json() -> bytes:
    return msgspec.json.encode(document())
