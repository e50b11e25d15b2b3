"""gwfast.auth against a real local OIDC issuer over HTTP (gwfast/_testbase/oidc.py).

Every bad token shape gets its status, RFC 6750 error code and reason, and a good token still
works after it; keys rotate without a restart; the unknown-kid refresh is rate-limited; the
token cache serves only live principals and stays bounded; API keys are stored as hashes and
revoked by a reload; the `auth` settings refuse what DESIGN.md refuses, naming the key.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import sys
import time
from pathlib import Path

import pytest
import yaml

from gwfast._testbase.oidc import LocalIssuer
from gwfast.auth import (
    API_KEY_ISSUER,
    ApiKeys,
    Authenticator,
    AuthError,
    OidcIssuer,
    OidcSettings,
    Principal,
    new_api_key,
    parse_auth,
    protected_resource_metadata,
    resource_metadata_url,
    www_authenticate,
)
from gwfast.auth.apikeys import KEY_RE, ApiKeyFileError, add_key, remove_key
from gwfast.auth.oidc import REFRESH_INTERVAL
from gwfast.config import ConfigError


class Ticker:
    """A clock that moves only when told to."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def idp():
    with LocalIssuer() as issuer:
        yield issuer


def settings(idp: LocalIssuer, **kw) -> OidcSettings:
    kw = {"tenant_claim": "tid", "roles_claim": "roles", **kw}
    return OidcSettings(issuer=idp.issuer, audiences=(idp.audience,), **kw)


def make(
    idp, *, mono=None, api_keys=None, issuer_kw=None, oidc=None, **kw
) -> tuple[Authenticator, OidcIssuer]:
    """An Authenticator with one issuer, `idp`: `issuer_kw` go to its settings, `oidc` to
    its OidcIssuer (whose rate-limit clock is `mono`, a Ticker), the rest to Authenticator."""
    issuer = OidcIssuer(
        settings(idp, **(issuer_kw or {})), monotonic=mono or Ticker(1000.0), **(oidc or {})
    )
    return Authenticator([issuer], api_keys, **kw), issuer


def bearer(token: str) -> bytes:
    return b"Bearer " + token.encode()


async def refused(auth: Authenticator, value: bytes) -> AuthError:
    with pytest.raises(AuthError) as e:
        await auth.authenticate(value)
    token = value.decode("latin-1")[7:]
    assert len(token) < 16 or token not in e.value.message  # a reason never echoes the token
    return e.value


# ----------------------------------------------------------------------------- good tokens


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
async def test_rs256_and_es256_accepted(idp, alg):
    auth, issuer = make(idp)
    exp = int(time.time()) + 120
    p = await auth.authenticate(bearer(idp.mint(alg=alg, exp=exp, sub="alice", tid="eng")))
    assert p == Principal(
        kind="oidc", subject="alice", issuer=idp.issuer, tenant="eng", roles=(), expires=exp
    )
    # discovery first, then the JWKS it names, each once
    assert (idp.discovery_fetches, idp.jwks_fetches) == (1, 1)


async def test_tenant_and_roles_claims(idp):
    auth, _ = make(idp)
    p = await auth.authenticate(bearer(idp.mint(tid="eng", roles=["reader", "admin"])))
    assert (p.tenant, p.roles) == ("eng", ("reader", "admin"))
    p = await auth.authenticate(bearer(idp.mint(roles="reader  writer")))  # space-separated
    assert (p.tenant, p.roles) == (None, ("reader", "writer"))
    kc, _ = make(idp, issuer_kw={"tenant_claim": "org.id", "roles_claim": "realm_access.roles"})
    p = await kc.authenticate(bearer(idp.mint(org={"id": "t1"}, realm_access={"roles": ["x"]})))
    assert (p.tenant, p.roles) == ("t1", ("x",))
    for bad, words in [
        ({"tid": 7}, "'tid' (the tenant) must be a string"),
        ({"roles": [1]}, "list of strings"),
    ]:
        e = await refused(auth, bearer(idp.mint(**bad)))
        assert (e.status, e.error) == (401, "invalid_token") and words in e.message


async def test_single_fetch_for_concurrent_first_tokens(idp):
    idp.delay = 0.2
    auth, _ = make(idp)
    tokens = [idp.mint(sub=f"u{i}") for i in range(20)]
    principals = await asyncio.gather(*(auth.authenticate(bearer(t)) for t in tokens))
    assert [p.subject for p in principals] == [f"u{i}" for i in range(20)]
    assert (idp.discovery_fetches, idp.jwks_fetches) == (1, 1)


# ----------------------------------------------------------------------------- bad tokens

BAD = {
    "expired": (lambda i: i.mint(exp=int(time.time()) - 120), "token expired 12"),
    "not yet valid": (lambda i: i.mint(nbf=int(time.time()) + 120), "not valid for another"),
    "no exp": (lambda i: i.mint(exp=None), "no exp claim"),
    "exp not a number": (lambda i: i.mint(exp="tomorrow"), "NumericDate"),
    "wrong iss": (lambda i: i.mint(iss="https://login.example/other"), "not a configured issuer"),
    "no iss": (lambda i: i.mint(iss=None), "no iss claim"),
    "wrong aud": (lambda i: i.mint(aud="api://other"), "names none of the audiences"),
    "no aud": (lambda i: i.mint(aud=None), "names none of the audiences"),
    "no sub": (lambda i: i.mint(sub=None), "no sub claim"),
    "alg none": (lambda i: i.unsigned(), "alg 'none' (an unsigned token) is never accepted"),
    "HS256 with the public key": (lambda i: i.forge_hs256(), "alg 'HS256' is never accepted"),
    "alg off the allowlist": (lambda i: i.mint(alg="RS384"), "'RS384' is not allowed"),
    "ES256 header on an RSA key": (
        lambda i: i.mint(alg="ES256", kid=i.signing["RS256"]),
        "does not fit key",
    ),
    "tampered payload": (lambda i: _tamper(i.mint(), sub="admin"), "signature does not verify"),
    "tampered ES256 payload": (
        lambda i: _tamper(i.mint(alg="ES256"), tid="other"),
        "signature does not verify",
    ),
    "garbage": (lambda i: "garbage", "neither a JWT"),
    "garbage in three parts": (lambda i: "eyJhbGc.eyJzdWI.c2ln", "malformed JWT"),
    "payload not an object": (lambda i: _with_payload(i.mint(), b"[1]"), "not a JSON object"),
    "JWE": (lambda i: "a.b.c.d.e", "JWE"),
}


def _with_payload(token: str, payload: bytes) -> str:
    h, _, s = token.split(".")
    return f"{h}.{base64.urlsafe_b64encode(payload).rstrip(b'=').decode()}.{s}"


def _tamper(token: str, **claims) -> str:
    body = token.split(".")[1]
    data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return _with_payload(token, json.dumps({**data, **claims}).encode())


@pytest.mark.parametrize("shape", list(BAD))
async def test_bad_token_gets_401_with_its_reason(idp, shape):
    auth, _ = make(idp)
    build, words = BAD[shape]
    e = await refused(auth, bearer(build(idp)))
    assert (e.status, e.error) == (401, "invalid_token"), e
    assert words in e.message, e.message
    assert not auth.cached(bearer(build(idp)))
    # the gateway keeps serving
    assert (await auth.authenticate(bearer(idp.mint()))).subject == "user-1"


@pytest.mark.parametrize("configured,iss", [("", "/"), ("/", "")])
async def test_trailing_slash_iss_says_exactly_that(configured, iss):
    with LocalIssuer(path="/tenant-a/v2.0" + configured) as idp:
        auth, _ = make(idp)
        token_iss = idp.issuer.rstrip("/") + iss
        e = await refused(auth, bearer(idp.mint(iss=token_iss)))
        assert e.message == (
            f"token iss {token_iss!r} differs from the configured issuer {idp.issuer!r} only "
            "by its trailing slash: configure the issuer exactly as the token's iss"
        )


async def test_within_clock_skew_accepted(idp):
    auth, _ = make(idp, issuer_kw={"clock_skew": 30.0})
    now = int(time.time())
    p = await auth.authenticate(bearer(idp.mint(exp=now - 10, nbf=now + 10)))
    assert p.expires == now - 10
    assert auth.cached(bearer(idp.mint(exp=now - 10, nbf=now + 10))) is None  # past its exp


async def test_hs256_refused_even_if_configured_past_the_parser(idp):
    # settings refuse HS*; an OidcIssuer built around them still has no HMAC key or verifier
    auth, _ = make(idp, issuer_kw={"algorithms": ("RS256", "HS256")})
    e = await refused(auth, bearer(idp.forge_hs256()))
    assert e.status == 401 and "HS256" in e.message


async def test_unknown_kid_refetches_once_then_rate_limited(idp):
    mono = Ticker(1000.0)
    auth, _ = make(idp, mono=mono)
    await auth.authenticate(bearer(idp.mint()))
    assert idp.jwks_fetches == 1
    # within the window of the first fetch: no fetch at all
    e = await refused(auth, bearer(idp.mint(kid="ghost-0")))
    assert idp.jwks_fetches == 1 and "not a key of issuer" in e.message
    mono.advance(REFRESH_INTERVAL)
    e = await refused(auth, bearer(idp.mint(kid="ghost-1")))
    assert (e.status, e.error) == (401, "invalid_token") and "'ghost-1'" in e.message
    assert idp.jwks_fetches == 2  # one refetch
    mono.advance(REFRESH_INTERVAL / 2)
    for i in range(50):  # garbage kids within the window make no fetch storm
        await refused(auth, bearer(idp.mint(kid=f"ghost-{i + 2}")))
    assert idp.jwks_fetches == 2
    assert (await auth.authenticate(bearer(idp.mint()))).subject == "user-1"
    assert idp.discovery_fetches == 1  # the discovery document is cached longer


async def test_key_rotation_mid_test(idp):
    mono = Ticker(1000.0)
    auth, issuer = make(idp, mono=mono)
    old_kid = idp.signing["RS256"]
    old = bearer(idp.mint())
    assert (await auth.authenticate(old)).subject == "user-1"
    new_kid = idp.rotate()
    new = bearer(idp.mint(sub="user-2"))
    mono.advance(REFRESH_INTERVAL)
    assert (await auth.authenticate(new)).subject == "user-2"  # the unknown kid refreshed
    assert idp.jwks_fetches == 2 and new_kid in issuer.keys.kids
    assert auth.cached(old) is not None  # still published: still good
    idp.drop(old_kid)
    mono.advance(REFRESH_INTERVAL)
    await issuer.refresh()  # what the JWKS TTL or the next unknown kid does
    assert old_kid not in issuer.keys.kids
    assert auth.cached(old) is None  # its cache entries went with the key
    e = await refused(auth, old)
    assert e.status == 401 and repr(old_kid) in e.message
    assert auth.cached(new) is not None


async def test_rotation_noticed_by_jwks_ttl(idp):
    auth, issuer = make(idp, oidc={"jwks_ttl": 0.3})
    old = bearer(idp.mint())
    await auth.authenticate(old)
    idp.drop(idp.signing["RS256"])
    idp.rotate()
    auth.clear()
    await asyncio.sleep(0.4)  # the aiocache entry expires
    e = await refused(auth, old)
    assert "not a key of issuer" in e.message and idp.jwks_fetches == 2
    assert (await auth.authenticate(bearer(idp.mint()))).subject == "user-1"


async def test_key_set_age_checked_even_without_aiocache_timer(idp):
    # keys fetched on another event loop (whose expiry timer never fires) still age out
    mono = Ticker(1000.0)
    auth, issuer = make(idp, mono=mono, oidc={"jwks_ttl": 60.0})
    loop = asyncio.new_event_loop()
    await asyncio.to_thread(loop.run_until_complete, issuer.refresh())
    loop.close()
    await auth.authenticate(bearer(idp.mint()))
    assert idp.jwks_fetches == 1
    mono.advance(61)
    await auth.authenticate(bearer(idp.mint(sub="later")))
    assert idp.jwks_fetches == 2


async def test_token_without_kid(idp):
    auth, issuer = make(idp)
    value = bearer(idp.mint(kid=""))
    assert (await auth.authenticate(value)).subject == "user-1"  # the only RS256 key
    old_kid = idp.signing["RS256"]
    idp.rotate()
    idp.drop(old_kid)
    await issuer.refresh()
    assert auth.cached(value) is None  # a withdrawn key takes the kid-less entries along
    e = await refused(auth, value)  # the single RS256 key is now the new one
    assert "signature does not verify" in e.message
    idp.rotate()  # two RS256 keys published: a token without kid names neither
    await issuer.refresh()
    e = await refused(auth, bearer(idp.mint(kid="")))
    assert "no kid" in e.message and "several RS256 keys" in e.message


async def test_issuer_down_keeps_last_good_keys(idp, caplog):
    mono = Ticker(1000.0)
    auth, issuer = make(idp, mono=mono, oidc={"jwks_ttl": 0.2})
    await auth.authenticate(bearer(idp.mint()))
    idp.fail_status = 503
    await asyncio.sleep(0.3)
    with caplog.at_level(logging.WARNING, "gwfast"):
        for i in range(3):
            mono.advance(10)
            assert (await auth.authenticate(bearer(idp.mint(sub=f"u{i}")))).subject == f"u{i}"
    assert issuer.down and "HTTP 503" in issuer.down
    assert sum("cannot fetch its keys" in r.message for r in caplog.records) == 1  # once
    idp.fail_status = None
    mono.advance(10)
    await auth.authenticate(bearer(idp.mint(sub="back")))
    assert issuer.down is None


async def test_no_keys_yet_is_503(idp):
    idp.fail_status = 500
    mono = Ticker(1000.0)
    auth, _ = make(idp, mono=mono)
    e = await refused(auth, bearer(idp.mint()))
    assert (e.status, e.error) == (503, None) and "HTTP 500" in e.message
    fetches = idp.requests.total()
    await refused(auth, bearer(idp.mint()))
    assert idp.requests.total() == fetches  # retried only after the retry interval
    idp.fail_status = None
    mono.advance(5)
    assert (await auth.authenticate(bearer(idp.mint()))).subject == "user-1"


async def test_discovery_must_name_the_configured_issuer(idp):
    idp.discovery_issuer = idp.issuer + "/"
    auth, _ = make(idp)
    e = await refused(auth, bearer(idp.mint()))
    assert e.status == 503 and "OpenID Connect Discovery 1.0 §4.3" in e.message
    assert f"configure the issuer exactly as '{idp.issuer}/'" in e.message
    assert idp.jwks_fetches == 0


def test_parse_jwks_keeps_only_fitting_signing_keys():
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from gwfast._testbase.oidc import SigningKey
    from gwfast.auth.jwks import FetchError, parse_jwks

    rs = SigningKey("rs", "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    p384 = SigningKey("p384", "ES256", ec.generate_private_key(ec.SECP384R1())).jwk()
    small = SigningKey(
        "small", "RS256", rsa.generate_private_key(public_exponent=65537, key_size=1024)
    )
    untyped = {k: v for k, v in rs.jwk().items() if k != "alg"}
    doc = {
        "keys": [
            rs.jwk(),
            {**untyped, "kid": "any-rsa"},  # no alg: usable with every RSA algorithm listed
            {**rs.jwk(), "kid": "enc", "use": "enc"},  # an encryption key
            {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},  # symmetric: never
            {**p384, "alg": "ES256"},  # P-384 is not ES256's curve (RFC 7518 §3.4)
            small.jwk(),  # under 2048 bits
            "not a key",
        ]
    }
    ks = parse_jwks(doc, ["RS256", "PS256", "ES256", "HS256"], uri="u")
    assert set(ks.keys) == {
        ("rs", "RS256"),
        ("any-rsa", "RS256"),
        ("any-rsa", "PS256"),
        (None, "PS256"),
    }
    assert ks.kids == {"rs", "any-rsa"}
    with pytest.raises(FetchError, match="no key usable"):
        parse_jwks({"keys": [doc["keys"][3]]}, ["RS256"], uri="u")
    with pytest.raises(FetchError, match="no `keys` array"):
        parse_jwks({}, ["RS256"], uri="u")


# ----------------------------------------------------------------------------- the cache


async def test_second_call_hits_the_cache(idp):
    auth, issuer = make(idp)
    value = bearer(idp.mint())
    assert auth.cached(value) is None
    p = await auth.authenticate(value)
    assert auth.cached(value) is p and await auth.authenticate(value) is p
    assert issuer.fetches == 1 and len(auth) == 1


async def test_expired_token_not_served_from_the_cache(idp):
    clock = Ticker(time.time())
    auth, _ = make(idp, clock=clock)
    value = bearer(idp.mint(exp=int(clock.t) + 60))
    await auth.authenticate(value)
    clock.advance(59)
    assert auth.cached(value) is not None
    clock.advance(2)
    assert auth.cached(value) is None
    assert await auth.authenticate(value)  # within the skew: verified again, not cached
    assert auth.cached(value) is None
    clock.advance(30)
    assert "expired" in (await refused(auth, value)).message


async def test_cache_entries_last_at_most_max_ttl(idp):
    clock = Ticker(time.time())
    auth, _ = make(idp, clock=clock, max_ttl=10.0)
    value = bearer(idp.mint())
    await auth.authenticate(value)
    clock.advance(11)
    assert auth.cached(value) is None


async def test_cache_stays_bounded(idp):
    clock = Ticker(time.time())
    auth, _ = make(idp, clock=clock, cache_size=8)
    for i in range(8):
        await auth.authenticate(bearer(idp.mint(sub=f"short{i}", exp=int(clock.t) + 5)))
    assert len(auth) == 8
    clock.advance(10)  # all eight expire
    await auth.authenticate(bearer(idp.mint(sub="a")))
    assert len(auth) == 1  # the sweep removed the expired ones, not the live one
    for i in range(40):
        await auth.authenticate(bearer(idp.mint(sub=f"long{i}")))
        assert len(auth) <= 8


async def test_cached_retains_no_memory(idp):
    auth, _ = make(idp)
    hit, miss = bearer(idp.mint()), bearer(idp.mint(sub="never-verified"))
    await auth.authenticate(hit)
    cached = auth.cached
    for _ in range(1000):  # warm up
        cached(hit), cached(miss)
    before = sys.getallocatedblocks()
    for _ in range(20000):
        cached(hit)
        cached(miss)
    assert sys.getallocatedblocks() - before < 20


# ----------------------------------------------------------------------------- the header


@pytest.mark.parametrize(
    "value,error,words",
    [
        (b"", None, "authentication required"),
        (b"Basic dXNlcjpwYXNz", "invalid_request", "has the 'Basic' scheme"),
        (b"gwk_" + b"A" * 43, "invalid_request", "has no scheme"),  # not echoed: see refused()
        (b"Bearer", "invalid_request", "has no token"),
        (b"Bearer   ", "invalid_request", "has no token"),
        (b'Bearer "abc"', "invalid_request", "RFC 6750 \u00a72.1"),
        (b"Bearer a b", "invalid_request", "RFC 6750"),
        (b"Bearer \xff\xfe", "invalid_request", "RFC 6750"),
    ],
)
async def test_non_bearer_header(idp, value, error, words):
    auth, _ = make(idp)
    e = await refused(auth, value)
    assert (e.status, e.error) == (401, error) and words in e.message
    assert "Authorization: Bearer <token>" in e.message or error == "invalid_request"


async def test_scheme_is_case_insensitive(idp):
    auth, _ = make(idp)
    assert await auth.authenticate(b"bearer " + idp.mint().encode())


def test_www_authenticate():
    url = "https://gw.example/.well-known/oauth-protected-resource/github/mcp"
    assert www_authenticate(url, None) == f'Bearer resource_metadata="{url}"'
    err = AuthError(401, 'token "x" expired\\', error="invalid_token")
    assert www_authenticate(url, err) == (
        f'Bearer resource_metadata="{url}", error="invalid_token", '
        "error_description=\"token 'x' expired?\""
    )
    assert www_authenticate(url, AuthError(401, "none", error=None)).count("error") == 0


def test_protected_resource_metadata(idp):
    resource = "https://gw.example/github/mcp"
    assert resource_metadata_url(resource) == (
        "https://gw.example/.well-known/oauth-protected-resource/github/mcp"
    )
    # RFC 9728 §3.1: a terminating slash goes, a query stays
    assert resource_metadata_url("https://gw.example/") == (
        "https://gw.example/.well-known/oauth-protected-resource"
    )
    assert resource_metadata_url("https://gw.example/a/mcp?x=1") == (
        "https://gw.example/.well-known/oauth-protected-resource/a/mcp?x=1"
    )
    doc = protected_resource_metadata(resource, [settings(idp), "https://login.example/v2.0"])
    assert doc == {
        "resource": resource,
        "authorization_servers": [idp.issuer, "https://login.example/v2.0"],
        "bearer_methods_supported": ["header"],
    }
    doc = protected_resource_metadata(resource, [OidcIssuer(settings(idp))], scopes=["mcp"])
    assert doc["scopes_supported"] == ["mcp"] and doc["authorization_servers"] == [idp.issuer]


# ----------------------------------------------------------------------------- API keys


@pytest.fixture
def keyfile(tmp_path) -> tuple[Path, str]:
    key, entry = new_api_key("ci-bot", tenant="eng", roles=["deployer"])
    add_key(tmp_path / "keys.yaml", entry)
    return tmp_path / "keys.yaml", key


def test_new_key_and_hash_only_storage(keyfile):
    path, key = keyfile
    assert KEY_RE.match(key) and len(key) == 4 + 43
    text = path.read_text()
    assert key not in text and key[4:] not in text
    entry = yaml.safe_load(text)["keys"][0]
    assert entry == {
        "id": "ci-bot",
        "hash": "sha256:" + hashlib.sha256(key.encode()).hexdigest(),
        "tenant": "eng",
        "roles": ["deployer"],
    }
    assert path.stat().st_mode & 0o777 == 0o600
    assert new_api_key("x")[0] != new_api_key("x")[0]
    with pytest.raises(ApiKeyFileError, match="exists"):
        add_key(path, new_api_key("ci-bot")[1])


async def test_api_key_authenticates(idp, keyfile):
    path, key = keyfile
    auth, _ = make(idp, api_keys=ApiKeys(path))
    p = await auth.authenticate(bearer(key))
    assert p == Principal(
        kind="api_key",
        subject="ci-bot",
        issuer=API_KEY_ISSUER,
        tenant="eng",
        roles=("deployer",),
        expires=float("inf"),
    )
    assert auth.cached(bearer(key)) is p
    e = await refused(auth, bearer(new_api_key("other")[0]))
    assert (e.status, e.message) == (401, "unknown or revoked API key")
    e = await refused(auth, bearer("gwk_short"))
    assert "malformed API key" in e.message
    assert idp.requests.total() == 0  # API keys never touch the issuer
    nokeys, _ = make(idp)
    assert "accepts no API keys" in (await refused(nokeys, bearer(key))).message


async def test_api_keys_created_and_revoked_by_reload(idp, keyfile):
    path, key = keyfile
    keys = ApiKeys(path)
    auth, _ = make(idp, api_keys=keys)
    await auth.authenticate(bearer(key))
    key2, entry2 = new_api_key("ci-bot-2", roles=["reader"])
    add_key(path, entry2)
    assert "unknown" in (await refused(auth, bearer(key2))).message  # not before the reload
    assert keys.reload() and len(keys) == 2
    assert auth.cached(bearer(key)) is not None  # adding a key keeps the others cached
    assert (await auth.authenticate(bearer(key2))).roles == ("reader",)
    assert remove_key(path, "ci-bot") and not remove_key(path, "ci-bot")
    assert keys.reload() and keys.ids == {"ci-bot-2"}
    assert auth.cached(bearer(key)) is None  # revoked at once, not after max_ttl
    assert "revoked" in (await refused(auth, bearer(key))).message
    assert auth.cached(bearer(key2)) is not None


async def test_invalid_file_keeps_old_keys(idp, keyfile, caplog):
    path, key = keyfile
    keys = ApiKeys(path)
    auth, _ = make(idp, api_keys=keys)
    path.write_text("keys: [{id: ci-bot, hash: nothex}]\n")
    with caplog.at_level(logging.WARNING, "gwfast"):
        assert keys.reload() is False
    assert "$.keys[0].hash" in keys.error and str(path) in keys.error
    assert "previous 1 stay" in caplog.text
    assert (await auth.authenticate(bearer(key))).subject == "ci-bot"
    path.unlink()
    assert keys.reload() is False and "cannot read" in keys.error
    assert keys.lookup(key) is not None


@pytest.mark.parametrize(
    "text,path,words",
    [
        ("keys: [{id: a, hash: 'gwk_" + "A" * 43 + "'}]", "$.keys[0].hash", "a key, not its hash"),
        ("keys: [{id: a, hash: 'sha256:abc'}]", "$.keys[0].hash", "64 lowercase hex"),
        ("keys: [{id: 'a b', hash: 'sha256:" + "0" * 64 + "'}]", "$.keys[0].id", "invalid id"),
        (
            "keys: [{id: a, hash: 'sha256:"
            + "0" * 64
            + "'}, {id: a, hash: 'sha256:"
            + "1" * 64
            + "'}]",
            "$.keys[1].id",
            "listed twice",
        ),
        (
            "keys: [{id: a, hash: 'sha256:"
            + "0" * 64
            + "'}, {id: b, hash: 'sha256:"
            + "0" * 64
            + "'}]",
            "$.keys[1].hash",
            "same hash as key 'a'",
        ),
        ("keys: [{id: a, hash: 'sha256:" + "0" * 64 + "', role: [x]}]", "$.keys[0]", "role"),
        ("- a\n", "$", "mapping"),
    ],
)
def test_bad_key_file_names_the_entry(tmp_path, text, path, words):
    f = tmp_path / "keys.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        ApiKeys(f)
    assert f"`{path}" in str(e.value) and words in str(e.value) and str(f) in str(e.value)


# ----------------------------------------------------------------------------- settings

ISS = "https://login.microsoftonline.com/TENANT_ID/v2.0"


def test_settings_defaults():
    auth = parse_auth({"oidc": [{"issuer": ISS, "audiences": ["api://gwfast"]}]})
    o = auth.oidc[0]
    assert (auth.dev_mode, auth.api_keys_file) == (False, None)
    assert o.algorithms == ("RS256", "ES256") and o.clock_skew == 30.0
    assert (o.tenant_claim, o.roles_claim) == (None, "roles")
    o = parse_auth({"oidc": [{"issuer": ISS, "audiences": ["a"], "clock_skew": "1m"}]}).oidc[0]
    assert o.clock_skew == 60.0
    for local in ("http://127.0.0.1:8080/realms/x", "http://localhost:9000", "http://[::1]:1"):
        assert parse_auth({"oidc": [{"issuer": local, "audiences": ["a"]}]}).oidc[0].issuer == local
    assert parse_auth({"dev_mode": True}).dev_mode


def _oidc(**kw):
    return {"oidc": [{"issuer": ISS, "audiences": ["api://gwfast"], **kw}]}


@pytest.mark.parametrize(
    "data,path,words",
    [
        (_oidc(algorithms=["none"]), "$.auth.oidc[0].algorithms[0]", "'none' is refused"),
        (_oidc(algorithms=["RS256", "HS256"]), "$.auth.oidc[0].algorithms[1]", "HMAC"),
        (_oidc(algorithms=["hs512"]), "$.auth.oidc[0].algorithms[0]", "refused"),
        (_oidc(algorithms=["RS1"]), "$.auth.oidc[0].algorithms[0]", "unsupported"),
        (_oidc(algorithms=[]), "$.auth.oidc[0].algorithms", "at least one"),
        (_oidc(issuer="http://idp.example/realm"), "$.auth.oidc[0].issuer", "loopback"),
        (_oidc(issuer="ftp://idp.example"), "$.auth.oidc[0].issuer", "https://"),
        (_oidc(issuer="https://idp.example/?x=1"), "$.auth.oidc[0].issuer", "query"),
        (_oidc(audiences=[]), "$.auth.oidc[0].audiences", "any other service"),
        (_oidc(audiences=[""]), "$.auth.oidc[0].audiences[0]", "empty"),
        ({"oidc": [{"issuer": ISS}]}, "$.auth.oidc[0]", "audiences"),
        (_oidc(clock_skew="soon"), "$.auth.oidc[0].clock_skew", "invalid duration"),
        (_oidc(clock_skew="1h"), "$.auth.oidc[0].clock_skew", "at most 5m"),
        (_oidc(tenant_claim=""), "$.auth.oidc[0].tenant_claim", "cannot be empty"),
        (_oidc(issuerr="x"), "$.auth.oidc[0]", "issuerr"),
        ({"oidc": _oidc()["oidc"] * 2}, "$.auth.oidc[1].issuer", "already configured"),
        ({"dev_mode": True, **_oidc()}, "$.auth.dev_mode", "turns authentication off"),
        ({}, "$.auth", "no way to authenticate"),
        ({"api_keys_file": 3}, "$.auth.api_keys_file", "Expected `str"),
        ([], "$.auth", "mapping"),
    ],
)
def test_bad_settings_name_the_key(data, path, words):
    with pytest.raises(ConfigError) as e:
        parse_auth(data)
    assert f"`{path}`" in str(e.value) and words in str(e.value), str(e.value)


def test_from_settings(tmp_path, keyfile):
    path, key = keyfile
    s = parse_auth({**_oidc(), "api_keys_file": path.name})
    auth = Authenticator.from_settings(s, base=path.parent)
    assert list(auth.issuers) == [ISS] and auth.api_keys is not None
    assert auth.api_keys.lookup(key).subject == "ci-bot"
    with pytest.raises(ValueError):
        Authenticator.from_settings(parse_auth({"dev_mode": True}), base=tmp_path)
