"""The compiled twins must load unless GWFAST_NO_EXTENSIONS asks for the pure ones.

Like aiohttp's test_c_parser_loaded: a build that silently fell back to pure Python would
still pass every behaviour test, only slower, so this test is what notices.
"""

from __future__ import annotations

import os

from gwfast._native import headscan, headscan_py, ring, ring_py

NO_EXTENSIONS = os.environ.get("GWFAST_NO_EXTENSIONS", "") not in ("", "0")
HINT = "compiled twin did not load: run `python3 setup.py build_ext --inplace`"


def test_headscan_twin_selected() -> None:
    assert headscan.HeadScannerPy is headscan_py.HeadScanner
    if NO_EXTENSIONS:
        assert headscan.HeadScannerC is None
        assert headscan.HeadScanner is headscan.HeadScannerPy
        assert not headscan.COMPILED
    else:
        assert headscan.HeadScannerC is not None, HINT
        assert headscan.HeadScanner is headscan.HeadScannerC
        assert headscan.COMPILED
        assert not headscan.HeadScannerC.__module__.endswith("_py")


def test_ring_twin_selected() -> None:
    assert ring.HashRingPy is ring_py.HashRing
    if NO_EXTENSIONS:
        assert ring.HashRingC is None
        assert ring.HashRing is ring.HashRingPy
        assert ring.key_hash is ring_py.key_hash
        assert not ring.COMPILED
    else:
        # the symlinked source imports as plain Python when not built: check the file
        from gwfast._native import _ring_c

        assert not _ring_c.__file__.endswith(".py"), HINT
        assert ring.HashRingC is _ring_c.HashRing
        assert ring.HashRing is ring.HashRingC
        assert ring.key_hash is _ring_c.key_hash
        assert ring.COMPILED


def test_one_head_error_class() -> None:
    assert headscan.HeadError is headscan_py.HeadError
    if headscan.HeadScannerC is not None:
        from gwfast._native import _headscan_c

        assert _headscan_c.HeadError is headscan_py.HeadError
