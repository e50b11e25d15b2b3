"""Fetching and reading key material: JSON documents over HTTP(S), and JWK Sets.

Why it is separate from `gwfast.auth.oidc`: this is the part that touches the network and
turns untrusted documents into keys, with its own rules:

- `fetch_json` is blocking urllib — the platform's TLS, CA store and proxy settings, no
  hand-written client — so callers run it in a thread (`asyncio.to_thread`). It follows a
  redirect only to a URL keys may come from (https, or http on loopback), refuses bodies over
  `MAX_DOCUMENT`, and says in one line what failed.
- `parse_jwks` keeps only signing keys (RFC 7517 §4.2 `use`), never a symmetric one (RFC 8725
  §3.1), binds each key to every configured algorithm it fits (its kty, its `alg` when it
  names one, RFC 7517 §4.4, and the curve of RFC 7518 §3.4), and ignores RSA keys under 2048
  bits.
"""

from __future__ import annotations

import http.client
import logging
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

import jwt
import msgspec
from jwt import PyJWK

from gwfast import __version__
from gwfast.auth.settings import check_https_url

log = logging.getLogger("gwfast")

FETCH_TIMEOUT = 5.0  # seconds for one discovery or JWKS fetch
MAX_DOCUMENT = 1 << 20  # bytes; a larger discovery document or JWKS is refused
MIN_RSA_BITS = 2048
# RFC 7518 §3.4 binds each ECDSA algorithm to one curve; RFC 8037 §3.1 EdDSA to OKP curves
_CURVES = {"ES256": ("P-256",), "ES384": ("P-384",), "ES512": ("P-521",), "EdDSA": ("Ed25519",)}


class FetchError(Exception):
    """A discovery document or key set could not be fetched or used; the message says why."""


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to a URL that keys may be fetched from (https, or loopback)."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        if check_https_url(newurl, "redirect"):
            return None  # urllib then raises HTTPError for the 3xx
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_Redirects)


def fetch_json(url: str, *, timeout: float = FETCH_TIMEOUT) -> dict[str, Any]:
    """GET `url` and decode one JSON object. Blocking: run it in a thread."""
    req = urllib.request.Request(
        url, headers={"Accept": "application/json", "User-Agent": f"gwfast/{__version__}"}
    )
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            body = resp.read(MAX_DOCUMENT + 1)
    except urllib.error.HTTPError as e:
        where = e.headers.get("Location") if 300 <= e.code < 400 else None
        e.close()
        if where:
            raise FetchError(f"GET {url} redirects to {where!r}, which is not https://") from None
        raise FetchError(f"GET {url} answered HTTP {e.code}") from None
    except urllib.error.URLError as e:
        raise FetchError(f"GET {url} failed: {e.reason}") from None
    except (OSError, http.client.HTTPException, ValueError) as e:  # timeouts, bad answers
        raise FetchError(f"GET {url} failed: {e or type(e).__name__}") from None
    if len(body) > MAX_DOCUMENT:
        raise FetchError(f"GET {url}: larger than {MAX_DOCUMENT} bytes")
    try:
        doc = msgspec.json.decode(body)
    except msgspec.DecodeError as e:
        raise FetchError(f"GET {url}: not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise FetchError(f"GET {url}: not a JSON object")
    return doc


@dataclass(frozen=True, slots=True)
class KeySet:
    """The usable keys of one JWKS: (kid, alg) → a pyjwt key bound to that algorithm.
    ``(None, alg)`` exists when exactly one key fits `alg` (tokens without `kid`)."""

    keys: dict[tuple[str | None, str], PyJWK]
    kids: frozenset[str]
    uri: str
    fetched: float = 0.0  # monotonic time it was fetched (set by the fetcher)


def _fits(jwk: dict[str, Any], alg: str) -> bool:
    if jwk.get("alg", alg) != alg:  # RFC 7517 §4.4: a key that names its algorithm keeps to it
        return False
    curves = _CURVES.get(alg)
    return curves is None or jwk.get("crv") in curves


def parse_jwks(doc: dict[str, Any], algorithms: Sequence[str], *, uri: str) -> KeySet:
    """The signing keys of a JWKS document (RFC 7517 §5) usable with `algorithms`."""
    jwks = doc.get("keys")
    if not isinstance(jwks, list):
        raise FetchError(f"the JWKS at {uri} has no `keys` array")
    keys: dict[tuple[str | None, str], PyJWK] = {}
    by_alg: dict[str, list[PyJWK]] = {}
    kids: set[str] = set()
    for jwk in jwks:
        # a symmetric (`oct`) key is never a verification key here (RFC 8725 §3.1), and an
        # encryption key (`use: enc`, RFC 7517 §4.2) never verifies a signature
        if not isinstance(jwk, dict) or jwk.get("kty") == "oct" or jwk.get("use", "sig") != "sig":
            continue
        kid = jwk.get("kid") if isinstance(jwk.get("kid"), str) else None
        for alg in algorithms:
            if not _fits(jwk, alg):
                continue
            try:
                key = PyJWK(jwk, algorithm=alg)
            except (jwt.PyJWTError, ValueError, TypeError, KeyError):
                continue  # the key does not fit this algorithm (e.g. an RSA key for ES256)
            if jwk.get("kty") == "RSA" and key.key.key_size < MIN_RSA_BITS:
                log.warning("JWKS at %s: RSA key %r under %d bits ignored", uri, kid, MIN_RSA_BITS)
                break
            if kid is not None:
                keys[(kid, alg)] = key
                kids.add(kid)
            by_alg.setdefault(alg, []).append(key)
    if not by_alg:
        raise FetchError(f"the JWKS at {uri} has no key usable with {', '.join(algorithms)}")
    for alg, found in by_alg.items():
        if len(found) == 1:
            keys[(None, alg)] = found[0]
    return KeySet(keys, frozenset(kids), uri)
