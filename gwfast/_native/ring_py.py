# cython: annotation_typing=False
"""Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam, SODA 2018).

Why it exists: new MCP sessions are placed on endpoints so that a key (or a random key)
keeps landing on the same endpoint while the set is stable, only the keys of a removed
endpoint move, and no endpoint takes more than `capacity` of the outstanding load.

This file is both twins. As plain Python it is the pure twin; `_ring_c.py` is a symlink to
it that Cython compiles with the C types declared in `_ring_c.pxd`, so keep it to code
Cython types well: no closures, no builtin `hash()`, plain loops over typed arrays.
The ring is built off the hot path (construction sorts and allocates); `lookup` and
`lookup_bounded` allocate nothing.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from hashlib import blake2b

RING_KEY = b"gwfast-ring-v1"
DEFAULT_VNODES = 160


def key_hash(data: bytes) -> int:
    """A fixed keyed 64-bit hash: the same in every process (STYLE.md, hot-path hygiene)."""
    return int.from_bytes(blake2b(data, digest_size=8, key=RING_KEY).digest(), "little")


def capacity(total_load: int, n_eligible: int, factor: float) -> int:
    """Per-node load bound ceil(factor * (total_load + 1) / n_eligible), the paper's c*m/n
    counting the item being placed; any factor > 1 leaves room on some eligible node."""
    if n_eligible <= 0:
        raise ValueError("capacity needs at least one eligible node")
    return math.ceil(factor * (total_load + 1) / n_eligible)


class HashRing:
    """`vnodes` points per node on a 64-bit circle, sorted; ties broken by node index."""

    def __init__(self, node_ids: Sequence[bytes], *, vnodes: int = DEFAULT_VNODES) -> None:
        if vnodes < 1:
            raise ValueError("vnodes must be >= 1")
        ids = []
        for node_id in node_ids:
            if not isinstance(node_id, (bytes, bytearray, memoryview)):
                raise TypeError(f"node ids must be bytes, not {type(node_id).__name__}")
            ids.append(bytes(node_id))
        if len(set(ids)) != len(ids):
            raise ValueError("node ids must be distinct")
        points = sorted(
            (key_hash(node_id + b"#" + str(v).encode()), index)
            for index, node_id in enumerate(ids)
            for v in range(vnodes)
        )
        self.node_ids = tuple(ids)
        self.n_nodes = len(ids)
        self.vnodes = vnodes
        self._n_points = len(points)
        self._hashes = array("Q", [h for h, _ in points])
        self._owners = array("q", [index for _, index in points])
        # lookup_bounded marks a node as seen by writing the call's generation number
        # here, so nothing is cleared or allocated per call
        self._stamps = array("Q", bytes(8 * len(ids)))
        self._gen = 0

    def _position(self, key: int) -> int:
        """Index of the first point at or after `key`, wrapping to 0 past the last."""
        lo = 0
        hi = self._n_points
        while lo < hi:
            mid = (lo + hi) >> 1
            if self._hashes[mid] < key:
                lo = mid + 1
            else:
                hi = mid
        if lo == self._n_points:
            return 0
        return lo

    def lookup(self, key: int) -> int:
        """The node owning `key` (an unsigned 64-bit int); -1 if the ring is empty."""
        if self._n_points == 0:
            return -1
        return self._owners[self._position(key)]

    def lookup_bounded(self, key: int, loads, eligible, capacity: int) -> int:
        """The first node clockwise from `key` that is eligible with load < capacity.

        `loads` (e.g. array('q')) and `eligible` (e.g. bytearray, nonzero = usable) are
        indexed by node; both twins take any int sequence (the compiled one reads them
        item by item: acquiring typed memoryviews would cost more than a short walk). If every eligible node is at or over capacity, the least loaded eligible node
        (the first met on the walk among equals); -1 if no node is eligible. The walk stops
        once it has met every node, so each node is judged once.
        """
        n_nodes = self.n_nodes
        if len(loads) != n_nodes or len(eligible) != n_nodes:
            raise ValueError("loads and eligible need one entry per node")
        if n_nodes == 0:
            return -1
        self._gen += 1
        gen = self._gen
        n_points = self._n_points
        i = self._position(key)
        seen = 0
        best = -1
        best_load = 0
        for _step in range(n_points):
            node = self._owners[i]
            if self._stamps[node] != gen:
                self._stamps[node] = gen
                seen += 1
                if eligible[node]:
                    load = loads[node]
                    if load < capacity:
                        return node
                    if best < 0 or load < best_load:
                        best = node
                        best_load = load
                if seen == n_nodes:
                    break
            i += 1
            if i == n_points:
                i = 0
        return best
