"""Selects the HTTP/1.x response head scanner: the compiled twin, else the pure-Python one.

GWFAST_NO_EXTENSIONS=1 forces the pure twin. Both twins are exported so tests and
benchmarks can run each; errors are the one HeadError class of headscan_py (status 502
here), so the relay catches a single type for requests and responses alike.
"""

from __future__ import annotations

import os

from .headscan_py import HeadError
from .resphead_py import DEFAULT_MAX_HEAD_BYTES, DEFAULT_MAX_HEADERS, DROPPED_HEADERS
from .resphead_py import ResponseScanner as ResponseScannerPy

__all__ = [
    "COMPILED",
    "DEFAULT_MAX_HEADERS",
    "DEFAULT_MAX_HEAD_BYTES",
    "DROPPED_HEADERS",
    "HeadError",
    "ResponseScanner",
    "ResponseScannerC",
    "ResponseScannerPy",
]

NO_EXTENSIONS = os.environ.get("GWFAST_NO_EXTENSIONS", "") not in ("", "0")

ResponseScannerC: type[ResponseScannerPy] | None = None
if not NO_EXTENSIONS:
    try:
        from ._resphead_c import ResponseScanner as ResponseScannerC  # type: ignore[no-redef]
    except ImportError:  # not built: fall back to the pure twin
        ResponseScannerC = None

ResponseScanner = ResponseScannerC or ResponseScannerPy
COMPILED: bool = ResponseScannerC is not None
