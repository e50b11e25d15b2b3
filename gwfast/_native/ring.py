"""Selects the consistent-hash ring: the compiled twin, else the pure-Python one.

`_ring_c.py` is a symlink to `ring_py.py` that Cython compiles with the types of
`_ring_c.pxd` (aiohttp's reader_py/reader_c trick). When it is not built, that module
still imports, as plain Python: it counts as compiled only if its file is not a `.py`.
GWFAST_NO_EXTENSIONS=1 forces the pure twin. Both twins are exported for tests and
benchmarks.
"""

from __future__ import annotations

from . import NO_EXTENSIONS, compiled_source, ring_py
from .ring_py import DEFAULT_VNODES, RING_KEY
from .ring_py import HashRing as HashRingPy

__all__ = [
    "COMPILED",
    "NO_EXTENSIONS",
    "DEFAULT_VNODES",
    "RING_KEY",
    "HashRing",
    "HashRingC",
    "HashRingPy",
    "capacity",
    "key_hash",
]

_ring_c = compiled_source("gwfast._native._ring_c")
HashRingC: type[HashRingPy] | None = None if _ring_c is None else _ring_c.HashRing
_impl = _ring_c or ring_py

HashRing = HashRingC or HashRingPy
COMPILED: bool = HashRingC is not None
key_hash = _impl.key_hash
capacity = _impl.capacity
