"""Sealed session ids: round trip, key rotation, forgery and cross-backend refusal."""

import os

from gwfast.sessions import SessionSealer


def test_round_trip_and_visible_ascii():
    s = SessionSealer([os.urandom(32)])
    token = s.seal(b"github", b"E" * 8, b"backend-session-1")
    assert all(0x21 <= c <= 0x7E for c in token)  # MCP: Mcp-Session-Id is visible ASCII
    assert s.open(b"github", token) == (b"E" * 8, b"backend-session-1")
    assert s.seal(b"github", b"E" * 8, b"x") != s.seal(b"github", b"E" * 8, b"x")  # nonce


def test_key_rotation_keeps_old_sessions():
    old, new = os.urandom(32), os.urandom(32)
    token = SessionSealer([old]).seal(b"b", b"E" * 8, b"sid")
    assert SessionSealer([new, old]).open(b"b", token) == (b"E" * 8, b"sid")
    assert SessionSealer([new]).open(b"b", token) is None


def test_forged_and_foreign_ids_do_not_open():
    s = SessionSealer([os.urandom(32)])
    token = s.seal(b"a", b"E" * 8, b"sid")
    flipped = bytearray(token)
    flipped[-5] ^= 1
    for bad in (
        b"",
        b"garbage",
        bytes(flipped),
        token[:-1],
        token + b"A",
        b"\xff" * 40,
        b"A" * 5000,
        SessionSealer([os.urandom(32)]).seal(b"a", b"E" * 8, b"sid"),
    ):
        assert s.open(b"a", bytes(bad)) is None
    assert s.open(b"other-backend", token) is None
