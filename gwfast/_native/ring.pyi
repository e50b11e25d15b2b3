"""Types of the consistent-hash ring with bounded loads (both twins share this surface)."""

from collections.abc import Sequence
from typing import Final

__all__ = [
    "COMPILED",
    "DEFAULT_VNODES",
    "RING_KEY",
    "HashRing",
    "HashRingC",
    "HashRingPy",
    "capacity",
    "key_hash",
]

RING_KEY: Final[bytes]
DEFAULT_VNODES: Final[int]
NO_EXTENSIONS: Final[bool]
COMPILED: Final[bool]

def key_hash(data: bytes) -> int:
    """Unsigned 64-bit keyed BLAKE2b of `data`: the same in every process."""

def capacity(total_load: int, n_eligible: int, factor: float) -> int:
    """ceil(factor * (total_load + 1) / n_eligible)."""

class HashRing:
    @property
    def node_ids(self) -> tuple[bytes, ...]: ...
    @property
    def n_nodes(self) -> int: ...
    @property
    def vnodes(self) -> int: ...
    def __init__(self, node_ids: Sequence[bytes], *, vnodes: int = 160) -> None: ...
    def lookup(self, key: int) -> int: ...
    def lookup_bounded(
        self, key: int, loads: Sequence[int], eligible: Sequence[int], capacity: int
    ) -> int:
        """First node clockwise from `key` eligible with load < capacity, else the least
        loaded eligible node; -1 if none is eligible."""

HashRingPy: type[HashRing]
HashRingC: type[HashRing] | None
