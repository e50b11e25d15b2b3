"""Desired state in SQLite: registered backends and tenants, and the snapshot counter.

The local orchestrator's embedded default (DESIGN.md "Processes"). One file in the data
directory, written only by the control process; every write is one transaction, so a control
process killed at any moment restarts with the registry as it was after the last answered
call. Specs are stored as the JSON of their validated struct: the store never re-validates,
and a field added later decodes with its default.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import msgspec

from control.spec import BackendSpec, TenantSpec

_SCHEMA = """
CREATE TABLE IF NOT EXISTS backends (
    name TEXT PRIMARY KEY, spec BLOB NOT NULL, created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS tenants (
    name TEXT PRIMARY KEY, spec BLOB NOT NULL, created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class Conflict(Exception):
    """The name is taken."""


class NotFound(Exception):
    """No such name."""


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        # one thread (the control process's event loop) uses the connection
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self._backend = msgspec.json.Decoder(BackendSpec)
        self._tenant = msgspec.json.Decoder(TenantSpec)

    def close(self) -> None:
        self.db.close()

    # -- backends --
    def backends(self) -> dict[str, BackendSpec]:
        rows = self.db.execute("SELECT name, spec FROM backends ORDER BY name")
        return {name: self._backend.decode(spec) for name, spec in rows}

    def backend(self, name: str) -> BackendSpec:
        row = self.db.execute("SELECT spec FROM backends WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(name)
        return self._backend.decode(row[0])

    def add_backend(self, spec: BackendSpec) -> None:
        now = time.time()
        try:
            self.db.execute(
                "INSERT INTO backends VALUES (?, ?, ?, ?)",
                (spec.name, msgspec.json.encode(spec), now, now),
            )
        except sqlite3.IntegrityError:
            raise Conflict(spec.name) from None

    def replace_backend(self, spec: BackendSpec) -> None:
        cur = self.db.execute(
            "UPDATE backends SET spec = ?, updated = ? WHERE name = ?",
            (msgspec.json.encode(spec), time.time(), spec.name),
        )
        if cur.rowcount == 0:
            raise NotFound(spec.name)

    def remove_backend(self, name: str) -> None:
        if self.db.execute("DELETE FROM backends WHERE name = ?", (name,)).rowcount == 0:
            raise NotFound(name)

    # -- tenants --
    def tenants(self) -> dict[str, TenantSpec]:
        rows = self.db.execute("SELECT name, spec FROM tenants ORDER BY name")
        return {name: self._tenant.decode(spec) for name, spec in rows}

    def tenant(self, name: str) -> TenantSpec:
        row = self.db.execute("SELECT spec FROM tenants WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(name)
        return self._tenant.decode(row[0])

    def put_tenant(self, spec: TenantSpec) -> bool:
        """Create or replace; True when created."""
        now = time.time()
        cur = self.db.execute(
            "UPDATE tenants SET spec = ?, updated = ? WHERE name = ?",
            (msgspec.json.encode(spec), now, spec.name),
        )
        if cur.rowcount:
            return False
        self.db.execute(
            "INSERT INTO tenants VALUES (?, ?, ?, ?)",
            (spec.name, msgspec.json.encode(spec), now, now),
        )
        return True

    def remove_tenant(self, name: str) -> None:
        if self.db.execute("DELETE FROM tenants WHERE name = ?", (name,)).rowcount == 0:
            raise NotFound(name)

    # -- the snapshot counter: monotonic over restarts, for logs and operators --
    def next_version(self) -> int:
        """At least the wall clock in milliseconds: a data plane that cached version V from
        a control process whose data directory was since wiped must not meet V again (the
        protocol compares versions for equality)."""
        now = int(time.time() * 1000)
        self.db.execute(
            "INSERT INTO meta VALUES ('version', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = max(value + 1, excluded.value)",
            (now,),
        )
        return self.db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()[0]
