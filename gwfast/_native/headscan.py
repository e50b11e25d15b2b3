"""Selects the HTTP/1.1 request head scanner: the compiled twin, else the pure-Python one.

GWFAST_NO_EXTENSIONS=1 forces the pure twin (as AIOHTTP_NO_EXTENSIONS does in aiohttp).
Both twins are exported so tests and benchmarks can run each; HeadError is one class
shared by both, so callers catch a single type.
"""

from __future__ import annotations

import os

from .headscan_py import (
    DEFAULT_MAX_HEAD_BYTES,
    DEFAULT_MAX_HEADERS,
    DROPPED_HEADERS,
    SPAN_NAMES,
    HeadError,
)
from .headscan_py import HeadScanner as HeadScannerPy

__all__ = [
    "COMPILED",
    "DEFAULT_MAX_HEADERS",
    "DEFAULT_MAX_HEAD_BYTES",
    "DROPPED_HEADERS",
    "SPAN_NAMES",
    "HeadError",
    "HeadScanner",
    "HeadScannerC",
    "HeadScannerPy",
]

NO_EXTENSIONS = os.environ.get("GWFAST_NO_EXTENSIONS", "") not in ("", "0")

HeadScannerC: type[HeadScannerPy] | None = None
if not NO_EXTENSIONS:
    try:
        from ._headscan_c import HeadScanner as HeadScannerC  # type: ignore[no-redef]
    except ImportError:  # not built: fall back to the pure twin
        HeadScannerC = None

HeadScanner = HeadScannerC or HeadScannerPy
COMPILED: bool = HeadScannerC is not None
