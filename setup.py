"""Builds gwfast's native extensions; all metadata lives in pyproject.toml.

Switches:
  GWFAST_NO_EXTENSIONS=1   build nothing: a pure-Python install
  GWFAST_DEBUG_BUILD=1     bounds checks on, no optimisation, line tracing
  GWFAST_CYTHON_ALWAYS=1   re-cythonize even when the C files look fresh
"""

import os

from setuptools import Extension, setup


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


NATIVE = [
    # hand-written scanners: pointer-level work (both subclass _headbase_c.HeadBase)
    ("gwfast._native._headbase_c", "gwfast/_native/_headbase_c.pyx"),
    ("gwfast._native._headscan_c", "gwfast/_native/_headscan_c.pyx"),
    ("gwfast._native._resphead_c", "gwfast/_native/_resphead_c.pyx"),
    ("gwfast._native._chunks_c", "gwfast/_native/_chunks_c.pyx"),
    ("gwfast._native._hist_c", "gwfast/_native/_hist_c.pyx"),
    # typed Python compiled as is (twin of ring_py.py, typed by _ring_c.pxd)
    ("gwfast._native._ring_c", "gwfast/_native/_ring_c.py"),
    # the snapshot's classes and the request relay, compiled as they are (see
    # gwfast/model.py and gwfast/relay.py)
    ("gwfast._model_c", "gwfast/_model_c.py"),
    ("gwfast._upstream_c", "gwfast/_upstream_c.py"),
    ("gwfast._proxy_c", "gwfast/_proxy_c.py"),
]


def _extensions() -> list:
    if _flag("GWFAST_NO_EXTENSIONS"):
        return []
    from Cython.Build import cythonize

    debug = _flag("GWFAST_DEBUG_BUILD")
    directives = {
        "language_level": 3,
        "boundscheck": debug,
        "wraparound": debug,
        "initializedcheck": debug,
        "linetrace": debug,
        # the .pxd files give the C types; Python annotations stay Python (an `int`
        # annotation would otherwise clash with a C `int` declared in the .pxd)
        "annotation_typing": False,
    }
    macros = [("CYTHON_TRACE", "1")] if debug else []
    flags = ["-O0", "-g"] if debug else ["-O2"]
    exts = [
        Extension(name, [src], define_macros=macros, extra_compile_args=flags)
        for name, src in NATIVE
    ]
    return cythonize(exts, compiler_directives=directives, force=_flag("GWFAST_CYTHON_ALWAYS"))


setup(ext_modules=_extensions())
