"""Gateway-issued session ids (DESIGN.md "Session affinity", a contract).

The id a client sees seals the endpoint's stable identity and the backend's own session id
with AES-256-GCM under a key ring shared by all replicas: any worker of any replica routes it
with no shared store and no per-session memory. The first key seals, every key opens, so keys
rotate without breaking live sessions. The backend name is the associated data: an id issued
for one backend does not open on another.

Layout before base64url (no padding; Mcp-Session-Id must be visible ASCII, MCP transports
"Session Management"): version (1) | key id (4) | nonce (12) | ciphertext | tag (16), where the
plaintext is endpoint identity (8) | backend session id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = 1
IDENT_LEN = 8
_AAD_PREFIX = b"gwfast-session-v1\x00"
_OVERHEAD = 1 + 4 + 12 + 16
MAX_TOKEN_LEN = 1024  # longer ids are refused before any decoding work
# Opened ids are remembered so the hot path decrypts a session's id once, not per request.
# Only ids that opened are cached (forged ones cannot fill it); at the bound it is emptied,
# which costs one decryption per live session, never a wrong answer.
CACHE_MAX = 16384


def key_id(key: bytes) -> bytes:
    return hashlib.blake2b(key, digest_size=4, person=b"gwfast-kid").digest()


class SessionSealer:
    """Seal and open session ids with a key ring (first key seals, all open)."""

    __slots__ = ("_seal_id", "_seal", "_open", "_cache")

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError("at least one session key is needed")
        for k in keys:
            if len(k) != 32:
                raise ValueError("session keys are 32 raw bytes")
        self._seal_id = key_id(keys[0])
        self._seal = AESGCM(keys[0])
        # token -> (backend, opened): keyed by the token alone, so a hit builds no tuple
        self._cache: dict[bytes, tuple[bytes, tuple[bytes, bytes]]] = {}
        self._open: dict[bytes, list[AESGCM]] = {}
        for k in keys:  # two keys may share a 4-byte id: try each
            self._open.setdefault(key_id(k), []).append(AESGCM(k))

    def seal(self, backend: bytes, ident: bytes, backend_sid: bytes) -> bytes:
        nonce = os.urandom(12)
        ct = self._seal.encrypt(nonce, ident + backend_sid, _AAD_PREFIX + backend)
        raw = bytes((VERSION,)) + self._seal_id + nonce + ct
        return base64.urlsafe_b64encode(raw).rstrip(b"=")

    def open(self, backend: bytes, token: bytes) -> tuple[bytes, bytes] | None:
        """(endpoint identity, backend session id), or None for anything that does not open."""
        hit = self._cache.get(token)
        if hit is not None and hit[0] == backend:
            return hit[1]
        if len(token) > MAX_TOKEN_LEN:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + b"=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) < _OVERHEAD + IDENT_LEN or raw[0] != VERSION:
            return None
        ciphers = self._open.get(raw[1:5])
        if not ciphers:
            return None
        nonce, ct, aad = raw[5:17], raw[17:], _AAD_PREFIX + backend
        for c in ciphers:
            try:
                pt = c.decrypt(nonce, ct, aad)
            except InvalidTag:
                continue
            opened = pt[:IDENT_LEN], pt[IDENT_LEN:]
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()
            self._cache[token] = (backend, opened)
            return opened
        return None
