"""Micro benchmarks of authentication: the token cache the hot path calls on every request
(`Authenticator.cached`, hit and miss) and the slow path it replaces (a full verification of
an RS256 or ES256 JWT, or an API key), against a real local issuer whose keys are loaded.

    python3 -m pytest bench/micro/test_auth_bench.py -q --benchmark-group-by=group

The slow path is driven with ``coroutine.send(None)``: with the keys loaded it never
suspends, so this measures the verification itself, not an event loop's scheduling.
Tokens carry the claims of a typical Entra ID access token (about 1.2 kB).
"""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Iterator

import pytest

from gwfast._testbase.oidc import LocalIssuer
from gwfast.auth import ApiKeys, Authenticator, OidcIssuer, OidcSettings, new_api_key
from gwfast.auth.apikeys import add_key

CLAIMS = {
    "tid": "72f988bf-86f1-41af-91ab-2d7cd011db47",
    "oid": "00000000-0000-0000-0000-00000000c0de",
    "azp": "04b07795-8ddb-461a-bbee-02f9e1bf7b46",
    "name": "Example User",
    "preferred_username": "user@example.com",
    "roles": ["mcp.reader", "mcp.tools.invoke"],
    "scp": "access_as_user",
    "ver": "2.0",
    "uti": "AbCdEfGhIjKlMnOpQrStUv",
    "rh": "0.AXEAv4j5cvGGr0GRqy180BHbR0ZVb4RHakhKsAhRkMnbm8NxAAA.",
    "wids": ["b79fbf4d-3ef9-4689-8143-76b194e85509"],
}


def run(coro):  # a coroutine that does not suspend, to completion
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("the slow path suspended: were the keys not loaded?")


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Iterator[tuple[LocalIssuer, Authenticator, str]]:
    key, entry = new_api_key("bench", tenant="eng", roles=["reader"])
    path = tmp_path_factory.mktemp("keys") / "keys.yaml"
    add_key(path, entry)
    with LocalIssuer() as idp:
        issuer = OidcIssuer(
            OidcSettings(issuer=idp.issuer, audiences=(idp.audience,), tenant_claim="tid")
        )
        auth = Authenticator([issuer], ApiKeys(path))
        loop = asyncio.new_event_loop()
        loop.run_until_complete(issuer.refresh())
        loop.close()
        yield idp, auth, key


@pytest.mark.benchmark(group="auth-cached")
def test_cached_hit(benchmark, setup) -> None:
    idp, auth, _ = setup
    value = b"Bearer " + idp.mint(**CLAIMS).encode()
    run(auth.authenticate(value))
    print(f"\nAuthorization value: {len(value)} bytes")
    assert benchmark(auth.cached, value) is not None
    tracemalloc.start()
    auth.cached(value)
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    auth.cached(value)
    print(f"cached() hit: {tracemalloc.get_traced_memory()[1] - base} bytes allocated at peak")
    tracemalloc.stop()


@pytest.mark.benchmark(group="auth-cached")
def test_cached_miss(benchmark, setup) -> None:
    idp, auth, _ = setup
    value = b"Bearer " + idp.mint(sub="never-seen", **CLAIMS).encode()
    assert benchmark(auth.cached, value) is None


@pytest.mark.benchmark(group="auth-verify")
@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_full_verification(benchmark, setup, alg) -> None:
    idp, auth, _ = setup
    value = b"Bearer " + idp.mint(alg=alg, **CLAIMS).encode()

    def verify():
        auth.clear()  # measure the verification, not the cache
        return run(auth.authenticate(value))

    assert benchmark(verify).tenant == CLAIMS["tid"]


@pytest.mark.benchmark(group="auth-verify")
def test_api_key(benchmark, setup) -> None:
    _, auth, key = setup
    value = b"Bearer " + key.encode()

    def verify():
        auth.clear()
        return run(auth.authenticate(value))

    assert benchmark(verify).subject == "bench"
