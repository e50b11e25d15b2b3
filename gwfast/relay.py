"""Selects the request relay: the compiled twin, else the pure-Python one.

`proxy.py` (the client side) and `upstream.py` (the endpoint side) are the sources of both.
Cython compiles them through the symlinks `_proxy_c.py` and `_upstream_c.py` with the C
types of `_proxy_c.pxd` and `_upstream_c.pxd` (as `gwfast._native.ring` does), so the
per-request path runs as C calls on typed attributes. The two compiled modules go
together, and with the compiled `gwfast.model`: a compiled `ClientConnection` takes only
compiled `Upstream`s (which only the compiled `Pool` makes) and compiled endpoints. Not built (their sources import as plain Python) or
GWFAST_NO_EXTENSIONS=1: the pure modules. Both are exported for tests.
"""

from __future__ import annotations

from gwfast import model, proxy, upstream
from gwfast._native import compiled_source

__all__ = ["COMPILED", "ClientConnection", "Pool", "Upstream"]

_client, _upstream = proxy, upstream
if model.COMPILED:  # the compiled relay types the compiled model
    _proxy_c = compiled_source("gwfast._proxy_c")
    _upstream_c = compiled_source("gwfast._upstream_c")
    if _proxy_c is not None and _upstream_c is not None:
        _client, _upstream = _proxy_c, _upstream_c

COMPILED: bool = _client is not proxy
ClientConnection = _client.ClientConnection
Pool = _upstream.Pool
Upstream = _upstream.Upstream
