"""What users register: backends and tenants, validated once, stored as they are.

Every way in (REST, the `/adapters` alias, MCP tools, the CLI) turns its input into a plain
dict and calls `backend_spec` / `tenant_spec`; an invalid field raises `SpecError` naming the
field and the fix, and nothing is stored. Validation lives here, not in the handlers, so the
four ways in cannot drift apart.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any
from urllib.parse import urlsplit

import msgspec

from gwfast.wire import BACKEND_NAME, BACKEND_NAME_RULE, parse_duration

MAX_REPLICAS = 32  # per backend; a local machine or a namespace, not a fleet
TENANT_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,62})$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$")
# set by the orchestrator: a backend cannot choose them
RESERVED_ENV = ("PORT",)


class SpecError(ValueError):
    """An invalid registration; `field` is the offending field's path (``env.PORT``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class _Spec(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class HealthCheckSpec(_Spec):
    path: str | None = "/healthz"  # GET on each replica, any 2xx healthy; None: TCP only
    interval: float | str = 5.0  # seconds, or "5s"
    timeout: float | str = 2.0
    healthy_threshold: int = 1
    unhealthy_threshold: int = 2
    panic: bool = True  # every replica fails its check: route to those that connect


class BackendSpec(_Spec):
    """A registered MCP backend. Exactly one of `command` (a local process), `url` (an
    existing server, routed and health-checked) or `image` (a container: Kubernetes)."""

    name: str
    command: list[str] | None = None  # argv; `{port}` is replaced, PORT is set
    url: str | None = None
    image: str | None = None
    env: dict[str, str] = {}
    replicas: int = 1
    port: int | None = None  # the container's port (image backends)
    path: str = "/mcp"  # the MCP endpoint's path on each replica
    health_check: HealthCheckSpec = HealthCheckSpec()
    affinity: str = "session"  # session | none
    placement: str = "random"  # random | principal | tenant | header:NAME
    tenants: list[str] = []  # allowed tenants; empty: every authenticated principal
    roles: list[str] = []  # allowed roles; empty: any
    description: str = ""

    @property
    def kind(self) -> str:
        return "command" if self.command is not None else "url" if self.url else "image"

    def runtime_hash(self) -> str:
        """What the replicas run: a change means new processes (or pods). Replicas,
        routing and description are not part of it."""
        runtime = (self.command, self.url, self.image, self.env, self.port, self.path)
        return hashlib.sha256(msgspec.json.encode(runtime)).hexdigest()[:16]


class QuotaSpec(_Spec):
    requests: int  # admitted per period
    period: float | str  # seconds, or "1h"


class TenantSpec(_Spec):
    name: str
    quota: QuotaSpec | None = None
    backend_quotas: dict[str, QuotaSpec] = {}
    description: str = ""


def check_name(name: object) -> str:
    """A backend name safe for a URL path, a process and a Kubernetes object."""
    if not isinstance(name, str) or not BACKEND_NAME.match(name):
        raise SpecError("name", f"invalid backend name {name!r}: use {BACKEND_NAME_RULE}")
    return name


def check_tenant_name(name: object) -> str:
    if not isinstance(name, str) or not TENANT_NAME.match(name):
        raise SpecError(
            "tenant_id",
            f"invalid tenant id {name!r}: letters, digits, '.', '_' or '-', at most 63, "
            "starting with a letter or digit",
        )
    return name


def _convert(raw: Any, tp: type) -> Any:
    if not isinstance(raw, dict):
        raise SpecError("", "the body must be a JSON object")
    try:
        return msgspec.convert(raw, tp)
    except msgspec.ValidationError as e:
        msg = str(e)
        field = ""
        if " - at `$." in msg:
            msg, _, at = msg.partition(" - at `$.")
            field = at.rstrip("`")
        # the missing or unknown key is the field (`health_check.bogus`), not its parent
        for start, what in (
            ("Object contains unknown field `", "unknown field"),
            ("Object missing required field `", "missing required field"),
        ):
            if msg.startswith(start):
                key = msg[len(start) :].partition("`")[0]
                field = f"{field}.{key}" if field else key
                msg = f"{what} {key!r}"
        raise SpecError(field, msg) from None


def _duration(value: float | str, field: str) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as e:
        raise SpecError(field, str(e)) from None
    if seconds <= 0:
        raise SpecError(field, "must be above zero")
    return seconds


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise SpecError("url", f"{url!r} must be an http://host[:port]/path URL")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise SpecError("url", f"{url!r} has an invalid port") from None
    if parts.query or parts.fragment:
        raise SpecError("url", f"{url!r} must not have a query or fragment")


def backend_spec(raw: Any) -> BackendSpec:
    """Validate a registration; SpecError names the field."""
    spec: BackendSpec = _convert(raw, BackendSpec)
    check_name(spec.name)
    kinds = [k for k in ("command", "url", "image") if getattr(spec, k) is not None]
    if len(kinds) != 1:
        raise SpecError(
            "command",
            "give exactly one of command (a list of strings: a local process), url (an "
            f"existing MCP server) or image (a container, Kubernetes); got {kinds or 'none'}",
        )
    if spec.command is not None:
        if not spec.command or not all(isinstance(a, str) and a for a in spec.command):
            raise SpecError("command", "must be a non-empty list of non-empty strings")
        if any("\0" in a for a in spec.command):
            raise SpecError("command", "must not contain NUL characters")
    if spec.url is not None:
        _check_url(spec.url)
        if spec.replicas != 1:
            raise SpecError("replicas", "a url backend is one endpoint: replicas must be 1")
        if spec.env:
            raise SpecError("env", "a url backend runs nothing: env does not apply")
    if spec.image is not None and not _IMAGE.match(spec.image):
        raise SpecError("image", f"invalid image reference {spec.image!r}")
    if not 0 <= spec.replicas <= MAX_REPLICAS:
        raise SpecError("replicas", f"must be between 0 and {MAX_REPLICAS}")
    if spec.port is not None and not 0 < spec.port < 65536:
        raise SpecError("port", "must be between 1 and 65535")
    for key, value in spec.env.items():
        if not _ENV_NAME.match(key):
            raise SpecError(f"env.{key}", "invalid environment variable name")
        if key in RESERVED_ENV:
            raise SpecError(f"env.{key}", f"{key} is set by gwfast (the replica's port)")
        if "\0" in value:
            raise SpecError(f"env.{key}", "must not contain NUL characters")
    if spec.url is None and (not spec.path.startswith("/") or "?" in spec.path):
        raise SpecError("path", "must start with / and have no query")
    hc = spec.health_check
    if hc.path is not None and not hc.path.startswith("/"):
        raise SpecError("health_check.path", "must start with / (or be null: TCP only)")
    _duration(hc.interval, "health_check.interval")
    _duration(hc.timeout, "health_check.timeout")
    if hc.healthy_threshold < 1 or hc.unhealthy_threshold < 1:
        raise SpecError("health_check", "thresholds must be at least 1")
    if spec.affinity not in ("session", "none"):
        raise SpecError("affinity", f"invalid affinity {spec.affinity!r}: use session or none")
    p = spec.placement
    if p not in ("random", "principal", "tenant") and not (
        p.startswith("header:") and _HEADER_NAME.match(p[7:])
    ):
        raise SpecError(
            "placement", f"invalid placement {p!r}: use random, principal, tenant or header:NAME"
        )
    for t in spec.tenants:
        check_tenant_name(t)
    if len(spec.description) > 1024:
        raise SpecError("description", "at most 1024 characters")
    return spec


def quota(requests: Any, period: Any, field: str = "quota") -> QuotaSpec:
    if isinstance(requests, bool) or not isinstance(requests, int) or requests < 1:
        raise SpecError(f"{field}.requests", "must be a whole number of at least 1")
    if requests > 1_000_000_000:
        raise SpecError(f"{field}.requests", "must be at most 1000000000")
    seconds = _duration(period, f"{field}.period")
    if seconds < 1 or seconds > 31 * 86400:
        raise SpecError(f"{field}.period", "must be between 1s and 31 days")
    return QuotaSpec(requests=requests, period=seconds)


def tenant_spec(raw: Any) -> TenantSpec:
    spec: TenantSpec = _convert(raw, TenantSpec)
    check_tenant_name(spec.name)
    q = spec.quota and quota(spec.quota.requests, spec.quota.period)
    bq = {}
    for name, v in spec.backend_quotas.items():
        check_name(name)
        bq[name] = quota(v.requests, v.period, f"backend_quotas.{name}")
    return msgspec.structs.replace(spec, quota=q, backend_quotas=bq)


def seconds(value: float | str) -> float:
    """A validated spec's duration as seconds."""
    return parse_duration(value)


def to_dict(spec: msgspec.Struct) -> dict:
    return msgspec.to_builtins(spec)
