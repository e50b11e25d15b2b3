"""Micro benchmarks of session ids: seal (new session), open (every request of a session),
and open through the cache of opened ids (what the hot path pays after the first request).

    python3 -m pytest bench/micro/test_sessions_bench.py -q --benchmark-group-by=group
"""

from __future__ import annotations

import os

import pytest

from gwfast.sessions import SessionSealer

KEY = os.urandom(32)
IDENT = os.urandom(8)
SID = os.urandom(16).hex().encode()


@pytest.mark.benchmark(group="session-seal")
def test_seal(benchmark) -> None:
    s = SessionSealer([KEY])
    token = benchmark(s.seal, b"github", IDENT, SID)
    assert s.open(b"github", token) == (IDENT, SID)


@pytest.mark.benchmark(group="session-open")
def test_open_uncached(benchmark) -> None:
    s = SessionSealer([KEY])
    token = s.seal(b"github", IDENT, SID)

    def open_fresh():
        s._cache.clear()  # measure the decryption itself
        return s.open(b"github", token)

    assert benchmark(open_fresh) == (IDENT, SID)


@pytest.mark.benchmark(group="session-open")
def test_open_cached(benchmark) -> None:
    s = SessionSealer([KEY])
    token = s.seal(b"github", IDENT, SID)
    s.open(b"github", token)
    assert benchmark(s.open, b"github", token) == (IDENT, SID)


@pytest.mark.benchmark(group="session-open")
def test_open_forged(benchmark) -> None:
    s = SessionSealer([KEY])
    forged = SessionSealer([os.urandom(32)]).seal(b"github", IDENT, SID)
    assert benchmark(s.open, b"github", forged) is None
