"""The static YAML configuration (DESIGN.md "Static configuration", a contract).

Parsed with msgspec into frozen structs; every key has a default documented here, unknown
keys and bad values stop the start with the key's path (``$.backends.x.placement``) and the
reason. `gwfast.model` turns the result into the runtime snapshot.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import yaml

from gwfast import wire
from gwfast.wire import BACKEND_NAME, parse_duration

_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


class ConfigError(Exception):
    """A configuration that cannot start; the message names the key and the fix."""


class Duration(float):
    """Seconds; written as a number of seconds or as `250ms`, `5s`, `2m`, `1h`."""


def _dec_hook(tp: type, obj: Any) -> Any:
    if tp is Duration:
        return Duration(parse_duration(obj))
    raise NotImplementedError(tp)


class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class HealthCheck(_Strict):
    """Active health checking of each endpoint; `path: null` checks only that TCP connects."""

    path: str | None = "/healthz"  # GET on the endpoint's host; any 2xx is healthy
    interval: Duration = Duration(5.0)
    timeout: Duration = Duration(2.0)
    healthy_threshold: int = 1  # consecutive successes to come back
    unhealthy_threshold: int = 2  # consecutive failures to be ejected (a connect failure
    # seen by live traffic ejects at once: passive checking)
    # every endpoint fails its check but some still accept connections: route to those
    # (panic mode); false: answer 503
    panic: bool = True


class BackendConfig(_Strict):
    endpoints: list[str]
    affinity: str = "session"  # session | none (stateless backends: no id rewriting)
    # how a new session picks its endpoint: a random key, or a hash of the principal, tenant
    # or a request header, over a consistent-hash ring with bounded loads
    placement: str = "random"
    load_factor: float = 1.25  # bounded loads: no endpoint takes over factor x average
    health_check: HealthCheck = msgspec.field(default_factory=HealthCheck)


class Limits(_Strict):
    max_header_bytes: int = 16384  # larger heads get 431
    max_headers: int = 100  # more header lines get 431
    max_body_bytes: int = 4 * 1024 * 1024  # larger request bodies get 413


class Timeouts(_Strict):
    header_read: Duration = Duration(10.0)  # whole request head, from its first byte (408)
    body_read: Duration = Duration(30.0)  # silence while a request body is expected (408)
    idle: Duration = Duration(75.0)  # an idle client keep-alive connection is closed
    connect: Duration = Duration(3.0)  # TCP connect to an endpoint
    response_header: Duration = Duration(300.0)  # request sent until response head (504)
    upstream_read: Duration = Duration(300.0)  # silence inside a response or stream
    # pooled idle upstream connections are closed after this: below uvicorn's default
    # keep-alive of 5 s, so the gateway never reuses a connection the backend is closing
    upstream_keepalive: Duration = Duration(4.0)
    # on SIGTERM/SIGINT the listener closes and idle keep-alive connections close at once;
    # requests and streams in flight get this long to finish, then the rest are closed
    drain: Duration = Duration(10.0)


class Config(_Strict):
    listen: str = "127.0.0.1:8080"
    # the admin listener: GET /metrics (Prometheus text, summed over workers) and /healthz;
    # never the public one. None: no admin listener (metrics are still counted)
    admin_listen: str | None = "127.0.0.1:9090"
    workers: int = 1
    session_keys: list[str] = []  # base64 of 32 bytes each; the first seals, all open
    session_key_file: str | None = None  # one base64 key a line, the same order
    # DNS-rebinding protection (MCP transports, "Security Warning"): Host must match one of
    # these (`*` any, `name:*` any port). None: loopback names when listening on loopback,
    # else any host.
    allowed_hosts: list[str] | None = None
    # a present Origin must be same-origin with Host or listed here (`http://name:*` any
    # port); loopback origins are allowed too when listening on loopback
    allowed_origins: list[str] = []
    limits: Limits = msgspec.field(default_factory=Limits)
    timeouts: Timeouts = msgspec.field(default_factory=Timeouts)
    backends: dict[str, Any] = {}


def _convert(obj: Any, tp: type, path: str) -> Any:
    try:
        return msgspec.convert(obj, tp, dec_hook=_dec_hook)
    except msgspec.ValidationError as e:
        msg = str(e)
        if "- at `$" in msg:
            raise ConfigError(msg.replace("`$", f"`{path}", 1)) from None
        raise ConfigError(f"{msg} - at `{path}`") from None


def _fail(path: str, why: str) -> None:
    raise ConfigError(f"{why} - at `{path}`")


def parse_listen(value: str, path: str = "$.listen") -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        _fail(path, f"invalid listen address {value!r}: write host:port, e.g. 127.0.0.1:8080")
    return host, int(port)


def _check_endpoint(url: str, path: str) -> None:
    parts = urlsplit(url)
    if parts.scheme != "http":
        _fail(
            path, f"endpoint {url!r} must be an http:// URL (TLS to endpoints is not supported yet)"
        )
    if not parts.hostname or parts.port is None and ":" in parts.netloc.rsplit("]", 1)[-1]:
        _fail(path, f"endpoint {url!r} has no valid host[:port]")
    if parts.query or parts.fragment:
        _fail(path, f"endpoint {url!r} must not have a query or fragment")


def _check_name(name: object, path: str) -> None:
    if not isinstance(name, str) or not BACKEND_NAME.match(name):
        _fail(
            path,
            f"invalid backend name {name!r}: use a DNS-1123 label (lowercase "
            "letters, digits and '-', at most 52 characters)",
        )


def _check_backend(name: str, b: BackendConfig, path: str, *, allow_empty: bool = False) -> None:
    if not b.endpoints and not allow_empty:
        _fail(f"{path}.endpoints", "a backend needs at least one endpoint")
    for i, url in enumerate(b.endpoints):
        _check_endpoint(url, f"{path}.endpoints[{i}]")
    if len(set(b.endpoints)) != len(b.endpoints):
        _fail(f"{path}.endpoints", "endpoints are listed twice")
    if b.affinity not in ("session", "none"):
        _fail(f"{path}.affinity", f"invalid affinity {b.affinity!r}: use session or none")
    p = b.placement
    if p not in ("random", "principal", "tenant") and not (
        p.startswith("header:") and _HEADER_NAME.match(p[7:])
    ):
        _fail(
            f"{path}.placement",
            f"invalid placement {p!r}: use random, principal, tenant or header:NAME",
        )
    if not 1.0 < b.load_factor <= 10.0:
        _fail(f"{path}.load_factor", "load_factor must be above 1.0 and at most 10")
    hc = b.health_check
    if hc.path is not None and not hc.path.startswith("/"):
        _fail(f"{path}.health_check.path", "the health check path must start with /")
    if hc.interval <= 0 or hc.timeout <= 0:
        _fail(f"{path}.health_check", "interval and timeout must be above zero")
    if hc.healthy_threshold < 1 or hc.unhealthy_threshold < 1:
        _fail(f"{path}.health_check", "thresholds must be at least 1")


def decode_key(text: str, path: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        _fail(
            path,
            "a session key must be base64 of exactly 32 random bytes "
            "(make one with: head -c32 /dev/urandom | base64)",
        )
    return key


def load_session_keys(cfg: Config, base: Path) -> list[bytes]:
    keys = [decode_key(k, f"$.session_keys[{i}]") for i, k in enumerate(cfg.session_keys)]
    if cfg.session_key_file:
        path = Path(cfg.session_key_file)
        path = path if path.is_absolute() else base / path
        try:
            lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        except OSError as e:
            raise ConfigError(f"cannot read session_key_file {str(path)!r}: {e.strerror}") from e
        keys += [decode_key(k, f"$.session_key_file:{n + 1}") for n, k in enumerate(lines)]
    return keys


def parse_config(data: Any) -> tuple[Config, dict[str, BackendConfig]]:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a YAML mapping - at `$`")
    cfg: Config = _convert(data, Config, "$")
    public = parse_listen(cfg.listen)
    if cfg.admin_listen is not None:
        admin = parse_listen(cfg.admin_listen, "$.admin_listen")
        if admin[1] == public[1] and (
            admin[0] == public[0] or {admin[0], public[0]} & {"0.0.0.0", "::"}
        ):
            _fail(
                "$.admin_listen",
                "the admin listener cannot share the public listen "
                "address: choose another port (e.g. 127.0.0.1:9090) or null",
            )
    if not 1 <= cfg.workers <= 256:
        _fail("$.workers", "workers must be between 1 and 256")
    lim = cfg.limits
    if not 1024 <= lim.max_header_bytes <= 1 << 20:
        _fail("$.limits.max_header_bytes", "must be between 1024 and 1048576")
    if not 8 <= lim.max_headers <= 1000:
        _fail("$.limits.max_headers", "must be between 8 and 1000")
    if lim.max_body_bytes < 0:
        _fail("$.limits.max_body_bytes", "must not be negative")
    for name, dur in msgspec.structs.asdict(cfg.timeouts).items():
        if dur <= 0:
            _fail(f"$.timeouts.{name}", "a timeout must be above zero")
    backends: dict[str, BackendConfig] = {}
    for name, raw in cfg.backends.items():
        path = f"$.backends.{name}"
        _check_name(name, path)
        backends[name] = b = _convert(raw, BackendConfig, path)
        _check_backend(name, b, path)
    return cfg, backends


def backends_from_wire(backends: dict[str, wire.Backend]) -> dict[str, BackendConfig]:
    """The control process's backends (`gwfast.wire.Snapshot.backends`) as the static
    configuration's, with the same checks and messages (``$.backends.x.endpoints[0]``),
    except that a backend may have no endpoint yet (its replicas are starting: 503).
    Governance fields (`allow_tenants`, `allow_roles`) and `status` are not carried here."""
    out: dict[str, BackendConfig] = {}
    for name, b in backends.items():
        path = f"$.backends.{name}"
        _check_name(name, path)
        hc = b.health_check
        out[name] = cfg = BackendConfig(
            endpoints=list(b.endpoints),
            affinity=b.affinity,
            placement=b.placement,
            load_factor=b.load_factor,
            health_check=HealthCheck(
                path=hc.path,
                interval=Duration(hc.interval),
                timeout=Duration(hc.timeout),
                healthy_threshold=hc.healthy_threshold,
                unhealthy_threshold=hc.unhealthy_threshold,
                panic=hc.panic,
            ),
        )
        _check_backend(name, cfg, path, allow_empty=True)
    return out


def load_config_file(
    path: str | Path, *, control: bool = False
) -> tuple[Config, dict[str, BackendConfig], list[bytes]]:
    """Read, parse and check FILE. `control`: the backends come from the control process,
    so a `backends` key in the file is refused."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read configuration {str(path)!r}: {e.strerror}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if control and isinstance(data, dict) and "backends" in data:
        _fail(
            "$.backends",
            f"with --control the backends come from the control process; remove them from {path}",
        )
    cfg, backends = parse_config(data)
    return cfg, backends, load_session_keys(cfg, path.parent)
