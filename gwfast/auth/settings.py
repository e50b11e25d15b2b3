"""The `auth` section of the configuration (DESIGN.md "Identity, tenants, quotas", a contract).

**Not yet read by `mcp-gateway proxy`.** The data plane's `gwfast.config.Config` has no `auth`
key until the request path enforces authentication: a section that is accepted but not
enforced would make users believe they are protected. These structs and `parse_auth` are
the building blocks that wiring will call, with the same error shape as `gwfast.config`
(``... - at `$.auth.oidc[0].algorithms```).

What is refused at start, and why:

- ``none`` and every ``HS*`` algorithm. ``none`` is an unsigned token (RFC 7519 §6); an HMAC
  algorithm would verify with a shared secret, and a gateway that took ``HS256`` with an
  issuer's *public* key as the secret would accept tokens anyone can forge (RFC 8725 §2.1,
  §3.1: algorithm confusion). Only asymmetric algorithms from the issuer's JWKS are used.
- An ``http://`` issuer other than on a loopback host: discovery and keys fetched in clear
  over a network can be replaced by anyone on the path. Loopback is for local identity
  providers and tests.
- An issuer without audiences: a token issued for another service of the same identity
  provider would be accepted (RFC 8725 §3.9, RFC 7519 §4.1.3).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from gwfast.config import Duration, _convert, _fail, _Strict
from gwfast.policy import is_loopback

# Asymmetric JWS algorithms (RFC 7518 §3.1, RFC 8037 for EdDSA) that pyjwt verifies.
SUPPORTED_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
MAX_CLOCK_SKEW = 300.0  # "small skew": more would accept tokens long after they expired


class OidcSettings(_Strict):
    """One trusted issuer (`auth.oidc[]`); a token is tried against the entry its `iss` names."""

    issuer: str  # matched exactly against the token's `iss`, trailing slash included
    audiences: tuple[str, ...]  # the token's `aud` must contain one of these; required
    tenant_claim: str | None = None  # the claim naming the tenant (e.g. `tid`); None: no tenant
    # the claim listing roles: a JSON array of strings or one space-separated string; a dotted
    # name (`realm_access.roles`) reaches into an object when no claim has the dotted name
    roles_claim: str | None = "roles"
    algorithms: tuple[str, ...] = ("RS256", "ES256")  # the allowlist; `none` and HS* refused
    clock_skew: Duration = Duration(30.0)  # tolerance on `exp` and `nbf`, at most 5 minutes


class AuthSettings(_Strict):
    """The `auth` section. With it absent, DESIGN.md says the gateway starts without
    authentication only on loopback; that rule belongs to the wiring, not to this parser."""

    dev_mode: bool = False  # true: no authentication at all (a loud warning at every start)
    oidc: tuple[OidcSettings, ...] = ()
    api_keys_file: str | None = None  # YAML of key hashes (gwfast.auth.apikeys); relative
    # paths are relative to the configuration file


def check_https_url(url: str, what: str) -> str | None:
    """Why `url` may not be fetched for keys, or None: it must be ``https://``, or
    ``http://`` on a loopback host, with a host and no query or fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return f"{what} {url!r} is not a valid URL"
    if parts.scheme not in ("https", "http") or not host:
        return f"{what} {url!r} must be an https:// URL with a host"
    if parts.scheme == "http" and not is_loopback(host):
        return (
            f"{what} {url!r} must be https:// (http:// is accepted only on a loopback host, "
            "for local identity providers and tests)"
        )
    if parts.query or parts.fragment:
        return f"{what} {url!r} must not have a query or fragment"
    return None


def _check_algorithms(algorithms: tuple[str, ...], path: str) -> None:
    if not algorithms:
        _fail(path, "list at least one algorithm, e.g. [RS256, ES256]")
    for i, alg in enumerate(algorithms):
        if alg.lower() == "none":
            _fail(
                f"{path}[{i}]",
                "algorithm 'none' is refused: it accepts unsigned tokens (RFC 8725 §3.1)",
            )
        if alg.upper().startswith("HS"):
            _fail(
                f"{path}[{i}]",
                f"algorithm {alg!r} is refused: HMAC needs a shared secret, and verifying it "
                "with an issuer's public key lets anyone forge tokens (RFC 8725 §2.1); use "
                "the issuer's asymmetric keys (RS256, ES256, ...)",
            )
        if alg not in SUPPORTED_ALGORITHMS:
            _fail(
                f"{path}[{i}]",
                f"unsupported algorithm {alg!r}: use one of {', '.join(SUPPORTED_ALGORITHMS)}",
            )
    if len(set(algorithms)) != len(algorithms):
        _fail(path, "an algorithm is listed twice")


def _check_oidc(o: OidcSettings, path: str) -> None:
    why = check_https_url(o.issuer, "issuer")
    if why:
        _fail(f"{path}.issuer", why)
    if not o.audiences:
        _fail(
            f"{path}.audiences",
            "list the audiences this gateway accepts (e.g. [api://gwfast]): without one, a "
            "token issued for any other service of this issuer would be accepted",
        )
    for i, aud in enumerate(o.audiences):
        if not aud:
            _fail(f"{path}.audiences[{i}]", "an audience cannot be empty")
    for key in ("tenant_claim", "roles_claim"):
        if getattr(o, key) == "":
            _fail(f"{path}.{key}", "a claim name cannot be empty: give a name or null")
    _check_algorithms(o.algorithms, f"{path}.algorithms")
    if o.clock_skew > MAX_CLOCK_SKEW:
        _fail(f"{path}.clock_skew", "the clock skew must be at most 5m (e.g. 30s)")


def parse_auth(data: Any, path: str = "$.auth") -> AuthSettings:
    """The checked `auth` section; ConfigError naming the key (``$.auth.oidc[0].issuer``)."""
    if not isinstance(data, dict):
        _fail(path, "auth must be a mapping (dev_mode, oidc, api_keys_file)")
    auth: AuthSettings = _convert(data, AuthSettings, path)
    seen: dict[str, int] = {}
    for i, o in enumerate(auth.oidc):
        _check_oidc(o, f"{path}.oidc[{i}]")
        if o.issuer in seen:
            _fail(
                f"{path}.oidc[{i}].issuer",
                f"issuer is already configured at oidc[{seen[o.issuer]}]",
            )
        seen[o.issuer] = i
    if auth.api_keys_file == "":
        _fail(f"{path}.api_keys_file", "give a file name or leave the key out")
    if auth.dev_mode and (auth.oidc or auth.api_keys_file):
        _fail(
            f"{path}.dev_mode",
            "dev_mode: true turns authentication off entirely; remove oidc and "
            "api_keys_file, or set dev_mode: false",
        )
    if not auth.dev_mode and not auth.oidc and not auth.api_keys_file:
        _fail(
            path,
            "auth configures no way to authenticate: add oidc issuers or api_keys_file "
            "(or dev_mode: true for no authentication at all)",
        )
    return auth
