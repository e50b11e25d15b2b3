"""OIDC bearer tokens of one issuer: discovery, its key set, and the checks of its tokens.

Why it is built this way (DESIGN.md "Identity, tenants, quotas"):

- Keys come from the issuer's own discovery document, ``{issuer}/.well-known/openid-configuration``
  (OpenID Connect Discovery 1.0 §4), whose `issuer` must equal the configured one exactly
  (§4.3), then from its `jwks_uri` (RFC 7517 §5). Both are fetched in a thread
  (`gwfast.auth.jwks.fetch_json` in `asyncio.to_thread`), never on the event loop.
- The key set is cached with aiocache for `jwks_ttl`. A token whose `kid` is unknown refetches
  it at once — that is how a rotation is noticed without a restart — but at most once per
  `refresh_interval` for the issuer, so tokens with made-up kids cannot turn the gateway into
  a fetch storm against its identity provider. A failed fetch keeps the last good keys (an
  outage is logged once when it starts and once when it ends). Keys that a refresh no longer
  lists are reported to `on_dropped`, so principals they verified leave the token cache.
- Only the configured asymmetric algorithms are ever used (RFC 8725 §3.1): the pyjwt verifier
  below has no ``none`` and no HMAC registered, a token's `alg` must be on the allowlist, and
  each key is bound to the algorithms it fits (`gwfast.auth.jwks.parse_jwks`), so an
  ``HS256`` token "signed" with a public key, or an ES256 token against an RSA key, fails.
- The claims are checked here rather than by pyjwt so each refusal says precisely what was
  wrong (RFC 7519 §4.1: `exp` required, `nbf` honoured, both with the configured skew; `aud`
  must contain a configured audience, RFC 8725 §3.9; `sub` names the principal).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import jwt
import msgspec
from aiocache import SimpleMemoryCache
from aiocache.base import BaseCache
from jwt import PyJWK, PyJWS
from jwt.types import SigOptions

from gwfast.auth.jwks import FETCH_TIMEOUT, FetchError, KeySet, fetch_json, parse_jwks
from gwfast.auth.principal import AuthError, Principal
from gwfast.auth.settings import SUPPORTED_ALGORITHMS, OidcSettings, check_https_url

log = logging.getLogger("gwfast")

JWKS_TTL = 3600.0  # a key set is refetched after this even when no unknown kid asks for it
DISCOVERY_TTL = 86400.0
REFRESH_INTERVAL = 30.0  # at most one fetch per this for unknown kids, per issuer
RETRY_INTERVAL = 5.0  # after a failed fetch, no new attempt before this

# pyjwt with only the asymmetric algorithms registered: `none` and HS* cannot even be found.
_JWS = PyJWS(algorithms=list(SUPPORTED_ALGORITHMS), options={"enforce_minimum_key_length": True})
_UNVERIFIED: SigOptions = {"verify_signature": False}

OnDropped = Callable[[str, frozenset[str]], None]


def _claim(claims: dict[str, Any], name: str) -> Any:
    """`claims[name]`, or for a dotted name with no such claim, the nested value."""
    if name in claims or "." not in name:
        return claims.get(name)
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _number(claims: dict[str, Any], name: str) -> float | None:
    v = claims.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise AuthError(401, f"token claim {name!r} must be a NumericDate (RFC 7519 §2)")
    return float(v)


class OidcIssuer:
    """One configured issuer: its keys (discovered, cached, refreshed) and its tokens' checks.

    `cache`: an aiocache cache for the discovery document and key set (default: one in
    memory for this issuer). `monotonic` times the refresh rate limit.
    """

    def __init__(
        self,
        settings: OidcSettings,
        *,
        jwks_ttl: float = JWKS_TTL,
        discovery_ttl: float = DISCOVERY_TTL,
        refresh_interval: float = REFRESH_INTERVAL,
        retry_interval: float = RETRY_INTERVAL,
        timeout: float = FETCH_TIMEOUT,
        cache: BaseCache | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.issuer = settings.issuer
        self.algorithms = tuple(settings.algorithms)
        self.audiences = frozenset(settings.audiences)
        self.skew = float(settings.clock_skew)
        self.discovery_url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        self.jwks_ttl, self.discovery_ttl = jwks_ttl, discovery_ttl
        self.refresh_interval, self.retry_interval = refresh_interval, retry_interval
        self.timeout = timeout
        self._cache = cache if cache is not None else SimpleMemoryCache(timeout=None)
        self._ck_jwks, self._ck_discovery = f"jwks|{self.issuer}", f"discovery|{self.issuer}"
        self._monotonic = monotonic
        self._keys: KeySet | None = None  # the last good key set, kept through outages
        self._last_attempt = -math.inf  # monotonic time of the last JWKS fetch attempt
        self._inflight: asyncio.Future[KeySet] | None = None
        self.down: str | None = None  # why the last fetch failed, while it does
        self.fetches = 0  # JWKS fetch attempts, for tests and metrics
        self.on_dropped: OnDropped | None = None

    @property
    def keys(self) -> KeySet | None:
        return self._keys

    async def refresh(self) -> KeySet:
        """Fetch the key set now (the discovery document from the cache); concurrent callers
        share one fetch. FetchError if it fails; the keys in use stay."""
        if self._inflight is None:
            self._inflight = task = asyncio.ensure_future(self._fetch())
            task.add_done_callback(self._fetched)
        # shielded: a caller that gives up (its request closed) does not cancel it for others
        return await asyncio.shield(self._inflight)

    def _fetched(self, _: object) -> None:
        self._inflight = None

    async def _jwks_uri(self) -> str:
        uri = await self._cache.get(self._ck_discovery)
        if isinstance(uri, str):
            return uri
        doc = await asyncio.to_thread(fetch_json, self.discovery_url, timeout=self.timeout)
        named = doc.get("issuer")
        if named != self.issuer:
            hint = ""
            if isinstance(named, str) and named.rstrip("/") == self.issuer.rstrip("/"):
                hint = f": configure the issuer exactly as {named!r}, trailing slash included"
            raise FetchError(
                f"the discovery document at {self.discovery_url} names issuer {named!r}, not "
                f"the configured {self.issuer!r} (OpenID Connect Discovery 1.0 §4.3){hint}"
            )
        uri = doc.get("jwks_uri")
        if not isinstance(uri, str):
            raise FetchError(f"the discovery document at {self.discovery_url} has no jwks_uri")
        if why := check_https_url(uri, "jwks_uri"):
            raise FetchError(f"the discovery document at {self.discovery_url}: {why}")
        await self._cache.set(self._ck_discovery, uri, ttl=self.discovery_ttl)
        return uri

    async def _fetch(self) -> KeySet:
        self._last_attempt = self._monotonic()
        self.fetches += 1
        try:
            uri = await self._jwks_uri()
            try:
                doc = await asyncio.to_thread(fetch_json, uri, timeout=self.timeout)
                keys = parse_jwks(doc, self.algorithms, uri=uri)
            except FetchError:
                await self._cache.delete(self._ck_discovery)  # the jwks_uri may have moved
                raise
        except FetchError as e:
            if self.down is None:
                log.warning("OIDC issuer %s: cannot fetch its keys: %s", self.issuer, e)
            self.down = str(e)
            raise
        if self.down is not None:
            log.warning("OIDC issuer %s: keys fetched again", self.issuer)
            self.down = None
        keys = dataclasses.replace(keys, fetched=self._last_attempt)
        old, self._keys = self._keys, keys
        await self._cache.set(self._ck_jwks, keys, ttl=self.jwks_ttl)
        dropped = old.kids - keys.kids if old is not None else frozenset()
        if dropped:
            log.info("OIDC issuer %s: keys %s withdrawn", self.issuer, sorted(dropped))
            if self.on_dropped is not None:
                self.on_dropped(self.issuer, dropped)
        return keys

    async def _current(self) -> KeySet:
        """Fresh keys: from the cache, else fetched; the last good ones while fetches fail."""
        keys = await self._cache.get(self._ck_jwks)
        # aiocache expires entries with a timer of the loop that stored them; the age check
        # also holds if that loop is gone (keys warmed on another loop)
        if isinstance(keys, KeySet) and self._monotonic() - keys.fetched < self.jwks_ttl:
            return keys
        if self._monotonic() - self._last_attempt >= self.retry_interval or self.down is None:
            try:
                return await self.refresh()
            except FetchError:
                pass
        if self._keys is not None:
            return self._keys  # stale, but the issuer is away: keep verifying with them
        raise AuthError(
            503,
            f"the gateway cannot verify tokens of issuer {self.issuer!r} now: {self.down}",
            error=None,
        )

    async def key(self, kid: str | None, alg: str) -> PyJWK:
        """The key that verifies a token with header `kid` and `alg`; AuthError 401 if none."""
        keys = await self._current()
        key = keys.keys.get((kid, alg))
        if key is not None:
            return key
        if kid is None:
            raise AuthError(
                401, f"token has no kid and issuer {self.issuer!r} has several {alg} keys"
            )
        if kid in keys.kids:  # the key exists: refetching would not change its type
            raise AuthError(401, f"token alg {alg} does not fit key {kid!r} of {self.issuer!r}")
        # unknown kid: perhaps a rotation (RFC 7517 §4.5); refetch, but rate-limited
        if self._monotonic() - self._last_attempt >= self.refresh_interval:
            try:
                keys = await self.refresh()
            except FetchError:
                pass
            else:
                if (key := keys.keys.get((kid, alg))) is not None:
                    return key
        why = f"; they cannot be fetched now: {self.down}" if self.down else ""
        raise AuthError(
            401,
            f"token kid {kid!r} is not a key of issuer {self.issuer!r} (its keys are refetched "
            f"at most every {self.refresh_interval:g} s{why}): get a new token",
        )

    async def verify(self, jws: Unverified, now: float) -> tuple[Principal, str | None]:
        """Check a token whose unverified `iss` named this issuer: (principal, its key's kid)."""
        alg = jws.header.get("alg")
        if alg not in self.algorithms:  # RFC 8725 §3.1: only the allowlist, never from the token
            if isinstance(alg, str) and alg.lower() == "none":
                why = "token alg 'none' (an unsigned token) is never accepted (RFC 8725 §3.1)"
            elif isinstance(alg, str) and alg.upper().startswith("HS"):
                why = (
                    f"token alg {alg!r} is never accepted: HMAC is a shared-secret algorithm, "
                    "and the issuer signs with its asymmetric keys (RFC 8725 §2.1)"
                )
            else:
                why = (
                    f"token alg {alg!r} is not allowed for issuer {self.issuer!r} "
                    f"(allowed: {', '.join(self.algorithms)})"
                )
            raise AuthError(401, why)
        kid = jws.header.get("kid")
        key = await self.key(kid, alg)
        # the key is bound to `alg` (parse_jwks), as pyjwt's own PyJWK path requires; verified
        # with its algorithm object over the segments `unverified` already decoded strictly,
        # rather than by decoding the token a second time (pyjwt's segment check costs
        # about as much as the RSA verification itself)
        if key.algorithm_name != alg:
            raise AuthError(401, f"token alg {alg} does not fit key {kid!r} of {self.issuer!r}")
        try:
            good = key.Algorithm.verify(jws.signing_input, key.key, jws.signature)
        except (ValueError, TypeError):
            good = False
        if not good:
            raise AuthError(
                401, f"token signature does not verify with key {kid!r} of {self.issuer!r}"
            )
        return self.principal(jws.claims, now), kid

    def principal(self, claims: dict[str, Any], now: float) -> Principal:
        """The principal of signature-verified `claims` at Unix time `now`; AuthError 401."""
        exp = _number(claims, "exp")
        if exp is None:
            raise AuthError(401, "token has no exp claim (RFC 7519 §4.1.4): it must expire")
        if now > exp + self.skew:
            raise AuthError(
                401,
                f"token expired {now - exp:.0f} s ago (a clock skew of {self.skew:g} s is "
                "allowed): get a new token",
            )
        nbf = _number(claims, "nbf")
        if nbf is not None and now + self.skew < nbf:
            raise AuthError(
                401,
                f"token is not valid for another {nbf - now:.0f} s (nbf, RFC 7519 §4.1.5; a "
                f"clock skew of {self.skew:g} s is allowed): check the clocks",
            )
        aud = claims.get("aud")
        auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not self.audiences.intersection(a for a in auds if isinstance(a, str)):
            raise AuthError(
                401,
                f"token aud {aud!r} names none of the audiences this gateway accepts "
                f"({', '.join(sorted(self.audiences))}): request a token for one of them",
            )
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise AuthError(401, "token has no sub claim (RFC 7519 §4.1.2)")
        tenant = None
        if self.settings.tenant_claim is not None:
            tenant = _claim(claims, self.settings.tenant_claim)
            if tenant is not None and not isinstance(tenant, str):
                raise AuthError(
                    401, f"token claim {self.settings.tenant_claim!r} (the tenant) must be a string"
                )
        roles: tuple[str, ...] = ()
        if self.settings.roles_claim is not None:
            raw = _claim(claims, self.settings.roles_claim)
            if isinstance(raw, str):
                roles = tuple(raw.split())  # space-separated, as `scope` (RFC 8693 §4.2)
            elif isinstance(raw, list) and all(isinstance(r, str) for r in raw):
                roles = tuple(raw)
            elif raw is not None:
                raise AuthError(
                    401,
                    f"token claim {self.settings.roles_claim!r} (the roles) must be a list of "
                    "strings or a space-separated string",
                )
        return Principal(
            kind="oidc", subject=sub, issuer=self.issuer, tenant=tenant, roles=roles, expires=exp
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Unverified:
    """A compact JWS (RFC 7515 §7.1) split and decoded, its signature NOT yet verified."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes  # BASE64URL(header) "." BASE64URL(payload)
    signature: bytes


def unverified(token: str) -> Unverified:
    """Parse a JWT without verifying it, only to pick the issuer and key: pyjwt's strict
    parser (base64url segments, a JSON object header, `kid` a string, `crit` understood)."""
    try:
        parts = _JWS.decode_complete(token, options=_UNVERIFIED)
    except jwt.PyJWTError as e:
        raise AuthError(401, f"malformed JWT: {e}") from None
    try:
        claims = msgspec.json.decode(parts["payload"])
    except msgspec.DecodeError:
        claims = None
    if not isinstance(claims, dict):
        raise AuthError(401, "malformed JWT: its payload is not a JSON object (RFC 7519 §7.2)")
    signing_input = token.encode("ascii").rpartition(b".")[0]
    return Unverified(parts["header"], claims, signing_input, parts["signature"])
