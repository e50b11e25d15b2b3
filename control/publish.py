"""The current routing snapshot and its long-poll waiters (protocol in `gwfast.wire`).

A new version is minted only when the content changes, so a reconcile pass that changes
nothing wakes no data plane worker. Versions come from the store's counter: monotonic over
control-process restarts and never below the clock in milliseconds, so not reused even after
the data directory is wiped (the protocol needs only "differs", operators like "larger").
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import msgspec

from control.store import Store
from gwfast import wire


class Publisher:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.current: wire.Snapshot | None = None
        self.body = b""  # the current snapshot's JSON, encoded once for every waiter
        self._changed: asyncio.Future | None = None
        self.closed = False  # stopping: waiters are released and none wait again

    def publish(self, build: Callable[[int], wire.Snapshot]) -> bool:
        """`build(version)` makes the snapshot; True when it differs from the current one."""
        candidate = build(0)
        if self.current is not None and candidate == msgspec.structs.replace(
            self.current, version=0
        ):
            return False
        self.current = msgspec.structs.replace(candidate, version=self.store.next_version())
        self.body = wire.encode(self.current)
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)
        self._changed = None
        return True

    def close(self) -> None:
        """Release every long-poll before the server stops (a request cancelled by the
        server's shutdown would be logged as a failure)."""
        self.closed = True
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)

    async def wait(self, have: int | None, timeout: float) -> wire.Snapshot | None:
        """The current snapshot when its version differs from `have`; else wait up to
        `timeout` for the next one; None on timeout or once closed."""
        if self.current is not None and self.current.version != have:
            return None if self.closed else self.current
        if self.closed:
            return None
        if self._changed is None:
            self._changed = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(min(timeout, wire.MAX_WAIT)):
                await asyncio.shield(self._changed)
        except TimeoutError:
            return None
        return None if self.closed else self.current
