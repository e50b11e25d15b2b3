"""Selects the runtime snapshot's classes: the compiled twin, else the pure-Python one.

`model_py.py` is the source of both. Cython compiles it through the symlink `_model_c.py`
with the C types of `_model_c.pxd`, so the compiled relay (gwfast/relay.py) reads an
endpoint's or a backend's fields as C fields. GWFAST_NO_EXTENSIONS=1 or no build: the pure
module. Both are exported for tests.
"""

from __future__ import annotations

import os

from gwfast import model_py

__all__ = ["COMPILED", "Backend", "Endpoint", "Snapshot", "endpoint_ident"]

NO_EXTENSIONS = os.environ.get("GWFAST_NO_EXTENSIONS", "") not in ("", "0")

_impl = model_py
if not NO_EXTENSIONS:
    try:
        from gwfast import _model_c
    except ImportError:  # not even the source (a pure install leaves it out)
        pass
    else:
        if not (_model_c.__file__ or "").endswith(".py"):
            _impl = _model_c

COMPILED: bool = _impl is not model_py
Backend = _impl.Backend
Endpoint = _impl.Endpoint
Snapshot = _impl.Snapshot
endpoint_ident = _impl.endpoint_ident
