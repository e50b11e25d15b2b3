"""The routing snapshot's wire schema: the one module the control process and the data plane share.

The control process (`control/`) publishes a `Snapshot` at `GET /v1/snapshot`; data plane
workers (`mcp-gateway proxy --control URL`) follow it and map it into their runtime model
(`gwfast.model`), exactly as they map the static YAML. Nothing else crosses the layers
(STYLE.md "Layers", enforced by import-linter): this module imports only msgspec and re.

Long-poll protocol (a contract between the two processes):
- ``GET /v1/snapshot?have=V&wait=S`` answers ``200`` with the current snapshot (JSON, this
  schema) at once when its version differs from ``V`` (``have`` absent: at once), else waits
  up to ``S`` seconds (at most `MAX_WAIT`) for a change and then answers ``304`` with no body.
  "Differs", not "is greater": a control process that restarted with an older counter must
  still be followed.
- The data plane ignores fields it does not know (msgspec's default), so a newer control
  process may add fields; it never removes or renames one without an issue.

Also here, because both sides write and read them the same way: backend names (they name
Kubernetes objects), durations (``250ms``, ``5s``, ``2m``, ``1h``, or seconds) and the words
that explain a failed health check (`health_advice`).
"""

from __future__ import annotations

import re

import msgspec

SNAPSHOT_PATH = "/v1/snapshot"
MAX_WAIT = 60.0  # longest long-poll a control process holds open

# DNS-1123 label, at most 52 characters (DESIGN.md "Routes"): with the suffixes Kubernetes
# adds (a StatefulSet's pod "-N", a controller revision hash) names stay within 63.
BACKEND_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,50}[a-z0-9])?$")
BACKEND_NAME_RULE = (
    "a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter "
    "or digit, at most 52 characters"
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: object) -> float:
    """Seconds from a number of seconds or a string like ``250ms``, ``5s``, ``2m``, ``1h``;
    ValueError (with the fix) otherwise."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like 5s")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(f"invalid duration {value!r}: write seconds or e.g. 250ms, 5s, 2m, 1h")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


_ERROR_MAX = 120  # characters of a probe's error text kept in the advice


def health_advice(path: str | None, status: int | None, error: str | None) -> str:
    """Why an endpoint fails its health check and what to do about it, in one line; "" when
    it passes. The data plane's 503 bodies and logs and the control process's status say it
    with these same words.

    `path` is `health_check.path` (None: the check only connects over TCP); `status` the HTTP
    status the check got (None: no answer). `error`, when no status came, says why: the
    reason a TCP connect failed (an OS error text such as ``Connection refused``, or
    ``timed out after 2s``), or, once connected, a sentence beginning with ``no `` (``no
    answer within 2s``, ``no HTTP answer (...)``) that is kept as it is.
    """
    if status is not None:
        if 200 <= status < 300:
            return ""
        asked = f"GET {path or '/'} answered {status}"
        if status == 404:
            return f"{asked}: implement it or set health_check.path (null checks TCP only)"
        if status >= 500:
            return f"{asked}: the endpoint reports itself unhealthy"
        if status in (401, 403):
            return (
                f"{asked}: serve the health path without authentication or set "
                "health_check.path (null checks TCP only)"
            )
        if 300 <= status < 400:
            return (
                f"{asked}: a redirect is not healthy; set health_check.path to where it "
                "leads (null checks TCP only)"
            )
        return (
            f"{asked}: only 2xx is healthy; fix the endpoint or set health_check.path "
            "(null checks TCP only)"
        )
    if not error:
        return ""
    error = error[:_ERROR_MAX]
    if error.startswith("no "):
        return error
    return f"TCP connect failed ({error}): is the server running on that port?"


class _Wire(msgspec.Struct, frozen=True, kw_only=True):
    pass


class HealthCheck(_Wire):
    """As `health_check` in the static configuration; durations in seconds."""

    path: str | None = "/healthz"
    interval: float = 5.0
    timeout: float = 2.0
    healthy_threshold: int = 1
    unhealthy_threshold: int = 2
    # every endpoint fails its check but some accept connections: route to those
    panic: bool = True


class Backend(_Wire):
    """One routed backend. `endpoints` may be empty (replicas still starting): the data
    plane then answers 503 and says `status`."""

    endpoints: list[str] = []
    affinity: str = "session"  # session | none
    placement: str = "random"  # random | principal | tenant | header:NAME
    load_factor: float = 1.25
    health_check: HealthCheck = HealthCheck()
    allow_tenants: list[str] = []  # empty: every authenticated principal (governance)
    allow_roles: list[str] = []
    # the control process's word on the backend's replicas when not all are ready, e.g.
    # "1 of 2 replicas ready: replica 1 exited with status 1 (see backend_logs)"
    status: str = ""


class Quota(_Wire):
    requests: int  # admitted per period (GCRA: a burst of up to `requests`)
    period: float  # seconds


class Tenant(_Wire):
    quota: Quota | None = None
    backend_quotas: dict[str, Quota] = {}  # backend name -> quota of this tenant there


class Snapshot(_Wire):
    version: int
    backends: dict[str, Backend] = {}
    tenants: dict[str, Tenant] = {}


encode = msgspec.json.Encoder().encode
decode = msgspec.json.Decoder(Snapshot).decode
