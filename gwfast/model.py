"""Selects the runtime snapshot's classes: the compiled twin, else the pure-Python one.

`model_py.py` is the source of both. Cython compiles it through the symlink `_model_c.py`
with the C types of `_model_c.pxd`, so the compiled relay (gwfast/relay.py) reads an
endpoint's or a backend's fields as C fields. GWFAST_NO_EXTENSIONS=1 or no build: the pure
module. Both are exported for tests.
"""

from __future__ import annotations

from gwfast import model_py
from gwfast._native import compiled_source

__all__ = [
    "CHECK_FAILING",
    "CHECK_PASSING",
    "COMPILED",
    "PANIC_ENTERED",
    "PANIC_LEFT",
    "Backend",
    "Endpoint",
    "Snapshot",
    "endpoint_ident",
]

_impl = compiled_source("gwfast._model_c") or model_py

COMPILED: bool = _impl is not model_py
Backend = _impl.Backend
Endpoint = _impl.Endpoint
Snapshot = _impl.Snapshot
endpoint_ident = _impl.endpoint_ident
# what `Backend.record_check` reports (the same in both twins)
CHECK_FAILING = model_py.CHECK_FAILING
CHECK_PASSING = model_py.CHECK_PASSING
PANIC_ENTERED = model_py.PANIC_ENTERED
PANIC_LEFT = model_py.PANIC_LEFT
