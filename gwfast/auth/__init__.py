"""Identity at the gateway: OIDC bearer JWTs and API keys → a `Principal` (issue 14).

**Not yet read by `mcp-gateway proxy`**: these are the building blocks, tested on their own,
that the request path will call (`Authenticator.cached` on every request, `authenticate` on a
miss). Until that wiring lands, the data plane's configuration has no `auth` key, because an
`auth` section that was accepted but not enforced would make users believe they are
protected. The settings of DESIGN.md's `auth` keys live in `gwfast.auth.settings`.

- `settings`: the `auth` keys (a contract) and their checks.
- `oidc`: one issuer's discovery, key set (aiocache, rotation, rate-limited refresh) and checks.
- `apikeys`: hashed API keys in a reloadable file; making new ones.
- `authenticate`: the `Authenticator` and its token cache; RFC 9728 metadata and
  ``WWW-Authenticate``.
"""

from gwfast.auth.apikeys import ApiKey, ApiKeys, new_api_key
from gwfast.auth.authenticate import (
    Authenticator,
    bearer_token,
    protected_resource_metadata,
    resource_metadata_url,
    www_authenticate,
)
from gwfast.auth.oidc import OidcIssuer
from gwfast.auth.principal import API_KEY_ISSUER, AuthError, Principal
from gwfast.auth.settings import AuthSettings, OidcSettings, parse_auth

__all__ = [
    "API_KEY_ISSUER",
    "ApiKey",
    "ApiKeys",
    "AuthError",
    "AuthSettings",
    "Authenticator",
    "OidcIssuer",
    "OidcSettings",
    "Principal",
    "bearer_token",
    "new_api_key",
    "parse_auth",
    "protected_resource_metadata",
    "resource_metadata_url",
    "www_authenticate",
]
