"""Hot-path code with a compiled twin and a pure-Python twin of the same API.

Import from the selectors (`headscan`, `ring`): they pick the compiled twin unless
GWFAST_NO_EXTENSIONS is set, and export both twins for tests and benchmarks.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

NO_EXTENSIONS = os.environ.get("GWFAST_NO_EXTENSIONS", "") not in ("", "0")


def compiled_source(name: str) -> ModuleType | None:
    """The compiled build of a module Cython makes from Python source through a symlink
    (`_ring_c.py`, `gwfast._proxy_c`, ...), or None: GWFAST_NO_EXTENSIONS is set, or it is
    not built (its source then imports as plain Python, so the file is what tells)."""
    if NO_EXTENSIONS:
        return None
    try:
        module = importlib.import_module(name)
    except ImportError:  # not even the source (a pure install leaves it out)
        return None
    return None if (module.__file__ or "").endswith(".py") else module
