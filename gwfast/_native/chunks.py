"""Selects the chunked framing reader: the compiled twin, else the pure-Python one.

GWFAST_NO_EXTENSIONS=1 forces the pure twin. Both twins are exported so tests and
benchmarks can run each; ChunkError and TrailersTooLarge are one class each, shared by both.
"""

from __future__ import annotations

import os

from .chunks_py import MAX_BODY_CAP, MAX_LINE, ChunkError, TrailersTooLarge
from .chunks_py import ChunkReader as ChunkReaderPy

__all__ = [
    "COMPILED",
    "MAX_BODY_CAP",
    "MAX_LINE",
    "ChunkError",
    "ChunkReader",
    "ChunkReaderC",
    "ChunkReaderPy",
    "TrailersTooLarge",
]

NO_EXTENSIONS = os.environ.get("GWFAST_NO_EXTENSIONS", "") not in ("", "0")

ChunkReaderC: type[ChunkReaderPy] | None = None
if not NO_EXTENSIONS:
    try:
        from ._chunks_c import ChunkReader as ChunkReaderC  # type: ignore[no-redef]
    except ImportError:  # not built: fall back to the pure twin
        ChunkReaderC = None

ChunkReader = ChunkReaderC or ChunkReaderPy
COMPILED: bool = ChunkReaderC is not None
