"""Selects the consistent-hash ring: the compiled twin, else the pure-Python one.

`_ring_c.py` is a symlink to `ring_py.py` that Cython compiles with the types of
`_ring_c.pxd` (aiohttp's reader_py/reader_c trick). When it is not built, that module
still imports, as plain Python: it counts as compiled only if its file is not a `.py`.
GWFAST_NO_EXTENSIONS=1 forces the pure twin. Both twins are exported for tests and
benchmarks.
"""

from __future__ import annotations

import os

from . import ring_py
from .ring_py import DEFAULT_VNODES, RING_KEY
from .ring_py import HashRing as HashRingPy

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

NO_EXTENSIONS = os.environ.get("GWFAST_NO_EXTENSIONS", "") not in ("", "0")

HashRingC: type[HashRingPy] | None = None
_impl = ring_py
if not NO_EXTENSIONS:
    try:
        from . import _ring_c
    except ImportError:  # not even the source (a pure install leaves it out)
        pass
    else:
        if not (_ring_c.__file__ or "").endswith(".py"):
            HashRingC = _ring_c.HashRing
            _impl = _ring_c

HashRing = HashRingC or HashRingPy
COMPILED: bool = HashRingC is not None
key_hash = _impl.key_hash
capacity = _impl.capacity
