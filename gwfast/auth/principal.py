"""Who made a request (`Principal`) and why nobody could be established (`AuthError`).

Kept apart from the verifiers so that `oidc`, `apikeys` and `authenticate` share them without
importing each other, and so that the request path can import these two names alone.
"""

from __future__ import annotations

from typing import Literal

import msgspec

# `Principal.issuer` of a principal authenticated by an API key
API_KEY_ISSUER = "gwfast:api_keys"


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """An authenticated caller. Immutable: one instance is shared by every request that
    presents the same credential while it is cached."""

    kind: Literal["oidc", "api_key"]
    subject: str  # the token's `sub`, or the API key's id
    issuer: str  # the token's `iss` (a configured issuer), or API_KEY_ISSUER
    tenant: str | None  # from the issuer's `tenant_claim`, or the key's tenant; None: none
    roles: tuple[str, ...]
    expires: float  # the token's `exp` (Unix time); an API key: inf (revoked by reload)


class AuthError(Exception):
    """A request that cannot be let through, with what to answer.

    `status` is 401 (no or bad credentials), 403 (authenticated but not allowed) or 503 (the
    gateway cannot verify tokens right now: the issuer's keys could not be fetched).
    `error` is the RFC 6750 §3.1 code for ``WWW-Authenticate``: ``invalid_request`` (malformed
    request), ``invalid_token`` (expired, revoked, malformed or otherwise invalid),
    ``insufficient_scope`` (403); None when no code applies — RFC 6750 §3.1 says a request
    that carried no credentials at all SHOULD get none. `message` says what was wrong and how
    to fix it; it never contains the credential.
    """

    def __init__(self, status: int, message: str, *, error: str | None = "invalid_token") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error = error

    def __repr__(self) -> str:
        return f"AuthError({self.status}, {self.message!r}, error={self.error!r})"
