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

import os

from gwfast import model, proxy, upstream

__all__ = ["COMPILED", "ClientConnection", "Pool", "Upstream"]

NO_EXTENSIONS = os.environ.get("GWFAST_NO_EXTENSIONS", "") not in ("", "0")

_client, _upstream = proxy, upstream
if not NO_EXTENSIONS and model.COMPILED:  # the compiled relay types the compiled model
    try:
        from gwfast import _proxy_c, _upstream_c
    except ImportError:  # not even the sources (a pure install leaves them out)
        pass
    else:
        if not (_proxy_c.__file__ or "").endswith(".py") and not (
            _upstream_c.__file__ or ""
        ).endswith(".py"):
            _client, _upstream = _proxy_c, _upstream_c

COMPILED: bool = _client is not proxy
ClientConnection = _client.ClientConnection
Pool = _upstream.Pool
Upstream = _upstream.Upstream
