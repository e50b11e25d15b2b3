"""API keys for service clients, stored only as hashes (DESIGN.md "Identity, tenants, quotas").

The file named by `auth.api_keys_file`::

    keys:
      - id: ci-bot                 # names the principal (its `subject`); unique
        hash: "sha256:<64 hex>"    # of the key; the key itself is never stored
        tenant: engineering        # optional
        roles: [deployer]          # optional

Why it is built this way:

- A key is ``gwk_`` followed by 43 base64url characters (32 random bytes). The prefix makes a
  bearer value recognisable as an API key rather than a JWT (which begins ``eyJ``), and
  findable by secret scanners. With 256 random bits a plain SHA-256 is the right hash: a slow
  password hash protects guessable secrets, not random ones.
- A leaked file grants nothing: it holds digests only.
- Lookup hashes the presented key once and looks the digest up in a dict: O(1) whatever the
  number of keys, with no loop comparing it to each stored key. Its timing depends on the
  digest, which an attacker cannot steer towards a stored one, so it says nothing about which
  key (if any) is close to the presented one.
- `ApiKeys.reload` re-reads the file, so keys are created and revoked without a restart (the
  gateway calls it on SIGHUP). A file that does not parse or check keeps the keys in force
  and says why; `on_change` is told which ids were revoked or changed, so principals cached
  from them are dropped at once.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import yaml

from gwfast.auth.principal import API_KEY_ISSUER, Principal
from gwfast.config import ConfigError

log = logging.getLogger("gwfast")

PREFIX = "gwk_"
KEY_BYTES = 32
KEY_RE = re.compile(r"^gwk_[A-Za-z0-9_-]{43}$")  # PREFIX + unpadded base64url of KEY_BYTES
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")


class ApiKeyFileError(ConfigError):
    """The API key file cannot be used; the message names the file, the entry and the fix."""


class ApiKey(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One entry of the file."""

    id: str
    hash: str  # "sha256:" + the hex digest of the key
    tenant: str | None = None
    roles: tuple[str, ...] = ()


class _File(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    keys: tuple[ApiKey, ...] = ()


def key_digest(key: str) -> bytes:
    """SHA-256 of the key as presented (keys are ASCII; anything else simply matches none)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def _fail(where: str, path: str, why: str) -> None:
    raise ApiKeyFileError(f"{where}: {why} - at `{path}`")


def parse_keys(text: str, where: str = "api_keys_file") -> dict[bytes, ApiKey]:
    """digest → entry of a file's text, checked; ApiKeyFileError naming the entry."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ApiKeyFileError(f"{where}: not valid YAML: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        _fail(where, "$", "the file must be a mapping with a `keys` list")
    try:
        parsed = msgspec.convert(data, _File)
    except msgspec.ValidationError as e:
        raise ApiKeyFileError(f"{where}: {e}") from None
    by_digest: dict[bytes, ApiKey] = {}
    ids: set[str] = set()
    for i, k in enumerate(parsed.keys):
        at = f"$.keys[{i}]"
        if not _ID.match(k.id):
            _fail(where, f"{at}.id", f"invalid id {k.id!r}: letters, digits, '.', '_', '-'")
        if k.id in ids:
            _fail(where, f"{at}.id", f"id {k.id!r} is listed twice")
        if k.hash.startswith(PREFIX):
            _fail(
                where,
                f"{at}.hash",
                "this is a key, not its hash: store only sha256:<hex> of it (and consider "
                "this key leaked: make a new one)",
            )
        if not _HASH.match(k.hash):
            _fail(where, f"{at}.hash", "write the hash as sha256: and 64 lowercase hex digits")
        digest = bytes.fromhex(k.hash[7:])
        if digest in by_digest:
            _fail(where, f"{at}.hash", f"the same hash as key {by_digest[digest].id!r}")
        if k.tenant == "" or any(not r for r in k.roles):
            _fail(where, at, "a tenant or role cannot be empty")
        ids.add(k.id)
        by_digest[digest] = k
    return by_digest


def load_keys(path: str | Path) -> dict[bytes, ApiKey]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ApiKeyFileError(f"cannot read api_keys_file {str(path)!r}: {e.strerror}") from None
    return parse_keys(text, str(path))


def _principal(k: ApiKey) -> Principal:
    return Principal(
        kind="api_key",
        subject=k.id,
        issuer=API_KEY_ISSUER,
        tenant=k.tenant,
        roles=k.roles,
        expires=math.inf,  # a key lasts until it is revoked from the file
    )


class ApiKeys:
    """The keys of one file, looked up by digest; `reload` applies the file's new contents."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.error: str | None = None  # why the last reload was refused; None: it applied
        # ids revoked or changed by a reload
        self.on_change: Callable[[frozenset[str]], None] | None = None
        self._apply(load_keys(self.path))

    def _apply(self, by_digest: dict[bytes, ApiKey]) -> None:
        self._entries = {k.id: k for k in by_digest.values()}
        self._by_digest = {d: _principal(k) for d, k in by_digest.items()}

    def __len__(self) -> int:
        return len(self._by_digest)

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(self._entries)

    def lookup(self, key: str) -> Principal | None:
        """The principal of a key, or None if no entry has its hash."""
        return self._by_digest.get(key_digest(key))

    def reload(self) -> bool:
        """Re-read the file. True: its keys are now in force. False: it was refused, the
        previous keys stay, and `error` (also logged) says why."""
        try:
            by_digest = load_keys(self.path)
        except ApiKeyFileError as e:
            self.error = str(e)
            log.warning("API keys not reloaded, the previous %d stay: %s", len(self), e)
            return False
        old = self._entries
        self._apply(by_digest)
        self.error = None
        gone = frozenset(i for i, k in old.items() if self._entries.get(i) != k)
        log.info(
            "API keys reloaded from %s: %d keys (%d revoked or changed)",
            self.path,
            len(self),
            len(gone),
        )
        if gone and self.on_change is not None:
            self.on_change(gone)
        return True


def new_api_key(
    key_id: str, *, tenant: str | None = None, roles: Sequence[str] = ()
) -> tuple[str, ApiKey]:
    """A new random key and its file entry. Show the key once to its owner; store the entry."""
    if not _ID.match(key_id):
        raise ValueError(f"invalid key id {key_id!r}: letters, digits, '.', '_', '-'")
    raw = secrets.token_bytes(KEY_BYTES)
    key = PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    entry = ApiKey(
        id=key_id, hash="sha256:" + key_digest(key).hex(), tenant=tenant, roles=tuple(roles)
    )
    return key, entry


def _entry_dict(k: ApiKey) -> dict[str, Any]:
    d: dict[str, Any] = {"id": k.id, "hash": k.hash}
    if k.tenant is not None:
        d["tenant"] = k.tenant
    d["roles"] = list(k.roles)
    return d


def _write(path: Path, entries: Sequence[ApiKey]) -> None:
    """Replace the file in one rename, so a reload never reads half of it. Comments in the
    file are not kept."""
    text = yaml.safe_dump({"keys": [_entry_dict(k) for k in entries]}, sort_keys=False)
    parse_keys(text, str(path))  # never write what a reload would refuse
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def add_key(path: str | Path, entry: ApiKey) -> None:
    """Append `entry` to the file (created if absent); ApiKeyFileError if its id is taken or
    the file is invalid. Then `ApiKeys.reload` puts it in force."""
    path = Path(path)
    current = list(load_keys(path).values()) if path.exists() else []
    if any(k.id == entry.id for k in current):
        raise ApiKeyFileError(f"{path}: a key with id {entry.id!r} exists: choose another id")
    _write(path, [*current, entry])


def remove_key(path: str | Path, key_id: str) -> bool:
    """Revoke: remove the entry `key_id` from the file; False if there was none."""
    path = Path(path)
    current = list(load_keys(path).values())
    kept = [k for k in current if k.id != key_id]
    if len(kept) == len(current):
        return False
    _write(path, kept)
    return True
