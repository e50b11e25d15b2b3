"""A real OIDC issuer on a free loopback port, for the tests and benchmarks of `gwfast.auth`.

`LocalIssuer` serves over real HTTP, from a thread, what an identity provider serves:

- ``{issuer}/.well-known/openid-configuration`` (OpenID Connect Discovery 1.0 §4), naming
  itself (or `discovery_issuer`, to test a mismatch) and its `jwks_uri`;
- ``{issuer}/discovery/keys``, the JWKS (RFC 7517 §5) of its published public keys: RS256
  (RSA 2048) and ES256 (P-256) at first, made with `cryptography`.

The issuer has a path, as Entra ID's does (``http://127.0.0.1:P/tenant-a/v2.0``). `rotate`
publishes a new key and signs with it; `drop` withdraws a key, as a provider does some time
after a rotation. `requests` counts the requests per path; `fail_status` makes every answer
that HTTP status (the provider is down); `delay` slows every answer.

Tokens: `mint` signs claims with pyjwt (defaults: this issuer, its audience, a subject, valid
for five minutes; a claim given as None is left out); `unsigned` makes an ``alg: none`` token
and `forge_hs256` the RFC 8725 §2.1 confusion: HS256 with the public key's PEM as the secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

AUDIENCE = "api://gwfast"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class SigningKey:
    kid: str
    alg: str  # RS256 or ES256 (RS384, PS256, ... sign with an RSA key too)
    private: Any  # a cryptography private key

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        codec = ECAlgorithm if self.alg.startswith("ES") else RSAAlgorithm
        jwk = codec.to_jwk(public, as_dict=True)
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def public_pem(self) -> bytes:
        pem: bytes = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem


def make_key(alg: str, kid: str) -> SigningKey:
    if alg == "ES256":
        return SigningKey(kid, alg, ec.generate_private_key(ec.SECP256R1()))
    return SigningKey(kid, alg, rsa.generate_private_key(public_exponent=65537, key_size=2048))


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        idp = self.server.idp
        path = self.path.partition("?")[0]
        status, doc = idp._answer(path)
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read `requests`, not stderr


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    idp: LocalIssuer


class LocalIssuer:
    """An OIDC issuer on 127.0.0.1; use it as a context manager (or `start`/`stop`)."""

    def __init__(self, *, path: str = "/tenant-a/v2.0", audience: str = AUDIENCE) -> None:
        self.audience = audience
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.idp = self
        self.port = self._server.server_address[1]
        self.issuer = f"http://127.0.0.1:{self.port}{path}"
        base = path.rstrip("/")  # OpenID Connect Discovery 1.0 §4: no doubled slash
        self.discovery_path = f"{base}/.well-known/openid-configuration"
        self.jwks_path = f"{base}/discovery/keys"
        self.discovery_issuer: str | None = None  # what discovery names; None: `issuer`
        self.fail_status: int | None = None
        self.delay = 0.0
        self.requests: Counter[str] = Counter()
        self.keys: dict[str, SigningKey] = {}
        self.published: list[str] = []  # kids in the JWKS
        self.signing: dict[str, str] = {}  # alg → the kid `mint` signs with
        self._serial = 0
        self._thread: threading.Thread | None = None
        for alg in ("RS256", "ES256"):
            self.signing[alg] = self.add_key(alg)

    # ------------------------------------------------------------------ serving

    def start(self) -> LocalIssuer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> LocalIssuer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _answer(self, path: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests[path] += 1
            published = [self.keys[k].jwk() for k in self.published]
        if self.delay:
            time.sleep(self.delay)
        if self.fail_status is not None:
            return self.fail_status, {"error": "temporarily_unavailable"}
        if path == self.discovery_path:
            return 200, {
                "issuer": self.discovery_issuer or self.issuer,
                "jwks_uri": f"http://127.0.0.1:{self.port}{self.jwks_path}",
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            }
        if path == self.jwks_path:
            return 200, {"keys": published}
        return 404, {"error": "not_found"}

    @property
    def discovery_fetches(self) -> int:
        return self.requests[self.discovery_path]

    @property
    def jwks_fetches(self) -> int:
        return self.requests[self.jwks_path]

    # ------------------------------------------------------------------ keys

    def add_key(self, alg: str = "RS256", *, publish: bool = True) -> str:
        with self._lock:
            self._serial += 1
            kid = f"{alg.lower()}-{self._serial}"
        key = make_key(alg, kid)
        with self._lock:
            self.keys[kid] = key
            if publish:
                self.published.append(kid)
        return kid

    def rotate(self, alg: str = "RS256") -> str:
        """Publish a new key and sign with it from now on; the old one stays published until
        `drop`. The new kid."""
        kid = self.add_key(alg)
        self.signing[alg] = kid
        return kid

    def drop(self, kid: str) -> None:
        """Withdraw a key from the JWKS (its tokens can no longer be verified)."""
        with self._lock:
            self.published.remove(kid)

    # ------------------------------------------------------------------ tokens

    def claims(self, **claims: Any) -> dict[str, Any]:
        now = int(time.time())
        base: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": "user-1",
            "iat": now,
            "exp": now + 300,
        }
        base.update(claims)
        return {k: v for k, v in base.items() if v is not None}

    def mint(self, *, kid: str | None = None, alg: str = "RS256", **claims: Any) -> str:
        """A token signed with `alg` by the key `kid` (default: the current one for `alg`).
        A kid that is unknown, or of another key type than `alg`, is put in the header and the
        current key for `alg` signs; ``kid=""`` leaves the header without a kid."""
        family = "ES256" if alg.startswith("ES") else "RS256"
        own = kid in self.keys and self.keys[kid].alg[:2] == family[:2]
        use = kid if own and kid is not None else self.signing[family]
        header = {"kid": kid or use} if kid != "" else {}
        return jwt.encode(self.claims(**claims), self.keys[use].private, alg, headers=header)

    def unsigned(self, **claims: Any) -> str:
        header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        return f"{header}.{_b64(json.dumps(self.claims(**claims)).encode())}."

    def forge_hs256(self, *, kid: str | None = None, **claims: Any) -> str:
        """HS256 "signed" with the PEM of the published RSA key as the HMAC secret: what a
        verifier that takes the token's `alg` with the issuer's key would accept."""
        kid = kid or self.signing["RS256"]
        header = {"alg": "HS256", "typ": "JWT", "kid": kid}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(self.claims(**claims)).encode())}"
        mac = hmac.new(self.keys[kid].public_pem(), signing_input.encode(), hashlib.sha256)
        return f"{signing_input}.{_b64(mac.digest())}"
