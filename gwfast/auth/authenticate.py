"""Who is calling: the bearer credential of a request → a `Principal`, with a cache in front.

Designed for the request path (DESIGN.md "Request path" step 2), which it is not wired into
yet. The hot path calls `Authenticator.cached` — synchronous, one SHA-256 of the header value
and one dict lookup — and only on a miss awaits `Authenticator.authenticate`, which parses the
credential (RFC 6750 §2.1), verifies it (an API key, or a JWT of a configured issuer) and
caches the principal, so a signature is verified once per token, not once per request.

The cache (digest of the whole ``Authorization`` value → (until, principal, key tag)):

- Keyed by SHA-256 of the value, never by builtin `hash()` (it differs per process) and never
  holding the token itself. SHA-256 rather than BLAKE2: with the CPU's SHA extensions it is
  the faster of the two here (about 1 µs for a 1 kB token, measured).
- An entry lasts until min(the token's `exp`, now + `max_ttl`); an expired entry is never
  served. `max_ttl` bounds how long a principal outlives a change nobody announced.
- Bounded to `cache_size`: when an insert finds it full, expired entries are swept; if that
  frees less than a quarter, the whole cache is cleared. Clearing costs each live token one
  more verification; an LRU would cost bookkeeping on every hit instead, and the sweep rule
  keeps the amortised cost of an insert O(1) (at least a quarter of the size between sweeps).
- Entries remember which key verified them (issuer and `kid`, or the API key's id): when a
  JWKS refresh withdraws a key or a reload revokes an API key, its entries go at once.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from gwfast.auth.apikeys import KEY_RE, PREFIX, ApiKeys
from gwfast.auth.jwks import FetchError
from gwfast.auth.oidc import OidcIssuer, unverified
from gwfast.auth.principal import AuthError, Principal
from gwfast.auth.settings import AuthSettings

CACHE_SIZE = 100_000
MAX_TTL = 300.0  # seconds a principal is served from the cache at most
MAX_TOKEN = 16384  # characters; a longer bearer value is refused before parsing

# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_HOW = "send `Authorization: Bearer <token>` with an OIDC access token or an API key (gwk_...)"

_sha256 = hashlib.sha256
Tag = tuple[str, str | None]  # (issuer, kid) of the key that verified it; ("api_key", id)


class _HasIssuer(Protocol):
    @property
    def issuer(self) -> str: ...


def bearer_token(authorization: bytes) -> str:
    """The token of ``Bearer <token>`` (RFC 6750 §2.1); AuthError 401 otherwise."""
    if not authorization.strip():
        # RFC 6750 §3.1: a request without credentials gets no error code
        raise AuthError(401, f"authentication required: {_HOW}", error=None)
    text = authorization.decode("latin-1").strip()
    scheme, _, token = text.partition(" ")
    if scheme.lower() != "bearer":  # auth-scheme is case-insensitive (RFC 9110 §11.1)
        # named only when it looks like a scheme name: a raw key or token pasted without a
        # scheme must not come back in the answer or reach a log
        shown = f"the {scheme!r} scheme" if scheme.isalpha() and len(scheme) <= 16 else "no scheme"
        # RFC 6750 §3.1 suggests 400 for invalid_request; 401 is what makes an MCP client
        # discover the authorization server (MCP authorization, "Authorization Server Discovery")
        raise AuthError(
            401, f"the Authorization header has {shown}: {_HOW}", error="invalid_request"
        )
    token = token.strip(" ")
    if not token:
        raise AuthError(401, f"the Bearer credential has no token: {_HOW}", error="invalid_request")
    if len(token) > MAX_TOKEN:
        raise AuthError(401, f"the bearer token is longer than {MAX_TOKEN} characters")
    if not _B64TOKEN.fullmatch(token):
        raise AuthError(
            401,
            "the bearer token has characters that RFC 6750 §2.1 does not allow (send it "
            "as it was issued, without quotes or spaces)",
            error="invalid_request",
        )
    return token


class Authenticator:
    """Principals of bearer credentials: OIDC JWTs of `oidc_issuers` and `api_keys`.

    `clock`: Unix time, for `exp`/`nbf` and the cache's deadlines (the hot path may pass a
    cheaper, coarser one). Listens to the issuers' `on_dropped` and the keys' `on_change`.
    """

    def __init__(
        self,
        oidc_issuers: Sequence[OidcIssuer] = (),
        api_keys: ApiKeys | None = None,
        *,
        clock: Callable[[], float] = time.time,
        cache_size: int = CACHE_SIZE,
        max_ttl: float = MAX_TTL,
    ) -> None:
        self.issuers = {i.issuer: i for i in oidc_issuers}
        if len(self.issuers) != len(oidc_issuers):
            raise ValueError("an issuer is listed twice")
        # the configured issuers by their spelling without a trailing slash, for the message
        self._unslashed = {i.rstrip("/"): i for i in self.issuers}
        self.api_keys = api_keys
        self._clock = clock
        self.cache_size = cache_size
        self.max_ttl = max_ttl
        self._cache: dict[bytes, tuple[float, Principal, Tag]] = {}
        for issuer in oidc_issuers:
            issuer.on_dropped = self._keys_dropped
        if api_keys is not None:
            api_keys.on_change = self._api_keys_changed

    @classmethod
    def from_settings(cls, settings: AuthSettings, *, base: Path, **kwargs: Any) -> Authenticator:
        """From a checked `auth` section; `base`: the configuration file's folder."""
        if settings.dev_mode:
            raise ValueError("dev_mode authenticates nobody: do not build an Authenticator")
        api_keys = None
        if settings.api_keys_file is not None:
            path = Path(settings.api_keys_file)
            api_keys = ApiKeys(path if path.is_absolute() else base / path)
        return cls([OidcIssuer(o) for o in settings.oidc], api_keys, **kwargs)

    def __len__(self) -> int:
        return len(self._cache)

    # ------------------------------------------------------------------ the hot path

    def cached(self, authorization: bytes) -> Principal | None:
        """The principal of this ``Authorization`` value while its cache entry lasts, else
        None (then await `authenticate`). Synchronous; allocates only the digest."""
        hit = self._cache.get(_sha256(authorization).digest())
        if hit is not None and hit[0] > self._clock():
            return hit[1]
        return None

    # ------------------------------------------------------------------ the slow path

    async def authenticate(self, authorization: bytes) -> Principal:
        """Verify the credential and cache its principal; AuthError says why not."""
        digest = _sha256(authorization).digest()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > self._clock():
            return hit[1]
        token = bearer_token(authorization)
        now = self._clock()
        if token.startswith(PREFIX):
            principal, tag = self._api_key(token)
            until = now + self.max_ttl
        else:
            principal, tag = await self._jwt(token, now)
            now = self._clock()
            until = min(principal.expires, now + self.max_ttl)
        if until > now:
            self._store(digest, (until, principal, tag))
        return principal

    async def warm(self) -> dict[str, str]:
        """Fetch every issuer's keys now (e.g. at start); {issuer: why} for those that failed."""
        failed = {}
        for issuer in self.issuers.values():
            try:
                await issuer.refresh()
            except FetchError as e:  # reported, not raised: tokens retry later
                failed[issuer.issuer] = str(e)
        return failed

    def _api_key(self, token: str) -> tuple[Principal, Tag]:
        if self.api_keys is None:
            raise AuthError(401, "this gateway accepts no API keys: use an OIDC access token")
        if not KEY_RE.match(token):
            raise AuthError(401, f"malformed API key: {PREFIX} and 43 base64url characters")
        principal = self.api_keys.lookup(token)
        if principal is None:
            raise AuthError(401, "unknown or revoked API key")
        return principal, ("api_key", principal.subject)

    async def _jwt(self, token: str, now: float) -> tuple[Principal, Tag]:
        dots = token.count(".")
        if dots == 4:
            raise AuthError(401, "encrypted tokens (JWE) are not accepted: send a signed JWT")
        if dots != 2:
            raise AuthError(
                401,
                "the bearer token is neither a JWT (three base64url parts joined by '.', RFC "
                f"7519 §3) nor an API key ({PREFIX}...)",
            )
        if not self.issuers:
            raise AuthError(401, "this gateway accepts no OIDC tokens: use an API key")
        jws = unverified(token)
        iss = jws.claims.get("iss")
        issuer = self.issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise AuthError(401, self._unknown_issuer(iss))
        principal, kid = await issuer.verify(jws, now)
        return principal, (issuer.issuer, kid)

    def _unknown_issuer(self, iss: object) -> str:
        if not isinstance(iss, str):
            return "token has no iss claim (RFC 7519 §4.1.1): the gateway cannot tell its issuer"
        near = self._unslashed.get(iss.rstrip("/"))
        if near is not None:  # RFC 7519 §4.1.1: StringOrURI values compare exactly
            return (
                f"token iss {iss!r} differs from the configured issuer {near!r} only by its "
                "trailing slash: configure the issuer exactly as the token's iss"
            )
        return (
            f"token iss {iss[:200]!r} is not a configured issuer (the gateway accepts tokens "
            f"of {', '.join(repr(i) for i in self.issuers)})"
        )

    # ------------------------------------------------------------------ the cache

    def _store(self, digest: bytes, entry: tuple[float, Principal, Tag]) -> None:
        cache = self._cache
        if len(cache) >= self.cache_size and digest not in cache:
            now = self._clock()
            for d in [d for d, e in cache.items() if e[0] <= now]:
                del cache[d]
            if len(cache) > self.cache_size * 3 // 4:
                cache.clear()
        cache[digest] = entry

    def forget(self, tags: Iterable[Tag]) -> int:
        """Drop the entries verified by these keys; how many went."""
        tags = set(tags)
        gone = [d for d, e in self._cache.items() if e[2] in tags]
        for d in gone:
            del self._cache[d]
        return len(gone)

    def clear(self) -> None:
        self._cache.clear()

    def _keys_dropped(self, issuer: str, kids: frozenset[str]) -> None:
        # tokens without a kid (tag kid None) may have been verified by a withdrawn key too
        self.forget([(issuer, None), *((issuer, kid) for kid in kids)])

    def _api_keys_changed(self, ids: frozenset[str]) -> None:
        self.forget(("api_key", i) for i in ids)


# ---------------------------------------------------------------------- RFC 9728 / MCP


def _quoted(text: str) -> str:
    """An RFC 6750 §3 quoted value: %x20-21 / %x23-5B / %x5D-7E only (no quote, backslash)."""
    return "".join(
        c if " " <= c <= "~" and c not in '"\\' else "'" if c == '"' else "?" for c in text
    )


def www_authenticate(resource_metadata_url: str, err: AuthError | None) -> str:
    """The ``WWW-Authenticate`` value of a 401 or 403 (RFC 6750 §3, RFC 9728 §5.1): where the
    client finds the protected resource metadata and, when a credential failed, why."""
    value = f'Bearer resource_metadata="{_quoted(resource_metadata_url)}"'
    if err is not None and err.error is not None:
        value += f', error="{err.error}", error_description="{_quoted(err.message)}"'
    return value


def resource_metadata_url(resource: str) -> str:
    """RFC 9728 §3.1: the well-known segment goes between the host and the resource's path:
    ``https://gw/github/mcp`` → ``https://gw/.well-known/oauth-protected-resource/github/mcp``."""
    p = urlsplit(resource)
    path = "/.well-known/oauth-protected-resource" + p.path.rstrip("/")
    return urlunsplit((p.scheme, p.netloc, path, p.query, ""))


def protected_resource_metadata(
    resource: str, issuers: Iterable[str | _HasIssuer], *, scopes: Sequence[str] = ()
) -> dict[str, Any]:
    """The document served at `resource_metadata_url(resource)` (RFC 9728 §2). `resource` is
    the URL clients use, e.g. ``https://gw.example/github/mcp`` (§3.3: it must be identical)."""
    doc: dict[str, Any] = {
        "resource": resource,
        "authorization_servers": [i if isinstance(i, str) else i.issuer for i in issuers],
        "bearer_methods_supported": ["header"],  # RFC 6750 §2.1 only: never query or body
    }
    if scopes:
        doc["scopes_supported"] = list(scopes)
    return doc
