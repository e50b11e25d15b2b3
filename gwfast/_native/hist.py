"""Selects the request-duration histograms: the compiled twin, else the pure-Python one.

`_hist_c.pyx` is the compiled twin of `hist_py.py`; GWFAST_NO_EXTENSIONS=1 forces the pure
one. Both twins are exported for tests and benchmarks. `now` is the selected twin's clock:
the `t0` that its `observe` takes.
"""

from __future__ import annotations

import os

from .hist_py import BUCKETS, CLASSES, HSTRIDE, HSUM, NBUCKETS
from .hist_py import Histograms as HistogramsPy
from .hist_py import now as now_py

__all__ = [
    "BUCKETS",
    "CLASSES",
    "COMPILED",
    "HSTRIDE",
    "HSUM",
    "NBUCKETS",
    "Histograms",
    "HistogramsC",
    "HistogramsPy",
    "now",
    "now_c",
    "now_py",
]

NO_EXTENSIONS = os.environ.get("GWFAST_NO_EXTENSIONS", "") not in ("", "0")

HistogramsC: type[HistogramsPy] | None = None
now_c = None
if not NO_EXTENSIONS:
    try:
        from . import _hist_c
    except ImportError:
        pass
    else:
        HistogramsC = _hist_c.Histograms
        now_c = _hist_c.now

Histograms = HistogramsC or HistogramsPy
now = now_c or now_py
COMPILED: bool = HistogramsC is not None
