"""The compiled twins must load unless GWFAST_NO_EXTENSIONS asks for the pure ones.

Like aiohttp's test_c_parser_loaded: a build that silently fell back to pure Python would
still pass every behaviour test, only slower, so this test is what notices.
"""

from __future__ import annotations

import os

from gwfast._native import (
    chunks,
    chunks_py,
    headscan,
    headscan_py,
    hist,
    hist_py,
    resphead,
    resphead_py,
    ring,
    ring_py,
)

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


def test_hist_twin_selected() -> None:
    assert hist.HistogramsPy is hist_py.Histograms
    assert hist.now_py is hist_py.now
    if NO_EXTENSIONS:
        assert hist.HistogramsC is None and hist.now_c is None
        assert hist.Histograms is hist.HistogramsPy and hist.now is hist.now_py
        assert not hist.COMPILED
    else:
        assert hist.HistogramsC is not None, HINT
        assert hist.Histograms is hist.HistogramsC and hist.now is hist.now_c
        assert hist.COMPILED
        assert not hist.HistogramsC.__module__.endswith("_py")


def test_resphead_twin_selected() -> None:
    assert resphead.ResponseScannerPy is resphead_py.ResponseScanner
    if NO_EXTENSIONS:
        assert resphead.ResponseScannerC is None
        assert resphead.ResponseScanner is resphead.ResponseScannerPy
        assert not resphead.COMPILED
    else:
        assert resphead.ResponseScannerC is not None, HINT
        assert resphead.ResponseScanner is resphead.ResponseScannerC
        assert resphead.COMPILED
        assert not resphead.ResponseScannerC.__module__.endswith("_py")


def test_chunks_twin_selected() -> None:
    assert chunks.ChunkReaderPy is chunks_py.ChunkReader
    if NO_EXTENSIONS:
        assert chunks.ChunkReaderC is None
        assert chunks.ChunkReader is chunks.ChunkReaderPy
        assert not chunks.COMPILED
    else:
        assert chunks.ChunkReaderC is not None, HINT
        assert chunks.ChunkReader is chunks.ChunkReaderC
        assert chunks.COMPILED
        assert not chunks.ChunkReaderC.__module__.endswith("_py")


def test_one_head_error_class() -> None:
    assert headscan.HeadError is headscan_py.HeadError
    if headscan.HeadScannerC is not None:
        from gwfast._native import _headscan_c

        assert _headscan_c.HeadError is headscan_py.HeadError
    assert resphead.HeadError is headscan_py.HeadError
    if resphead.ResponseScannerC is not None:
        from gwfast._native import _resphead_c

        assert _resphead_c.HeadError is headscan_py.HeadError


def test_one_chunk_error_class() -> None:
    assert chunks.ChunkError is chunks_py.ChunkError
    assert chunks.TrailersTooLarge is chunks_py.TrailersTooLarge
    if chunks.ChunkReaderC is not None:
        from gwfast._native import _chunks_c

        assert _chunks_c.ChunkError is chunks_py.ChunkError
        assert _chunks_c.TrailersTooLarge is chunks_py.TrailersTooLarge


def test_model_twin_selected() -> None:
    from gwfast import model, model_py

    if NO_EXTENSIONS:
        assert not model.COMPILED
        assert model.Backend is model_py.Backend and model.Endpoint is model_py.Endpoint
    else:
        # the symlinked source imports as plain Python when not built: check the file
        from gwfast import _model_c

        assert not _model_c.__file__.endswith(".py"), HINT
        assert model.COMPILED
        assert model.Backend is _model_c.Backend and model.Endpoint is _model_c.Endpoint
        assert model.Snapshot is _model_c.Snapshot


def test_relay_twin_selected() -> None:
    from gwfast import proxy, relay, upstream

    if NO_EXTENSIONS:
        assert not relay.COMPILED
        assert relay.ClientConnection is proxy.ClientConnection
        assert relay.Pool is upstream.Pool
    else:
        # the symlinked sources import as plain Python when not built: check the files
        from gwfast import _proxy_c, _upstream_c

        assert not _proxy_c.__file__.endswith(".py"), HINT
        assert not _upstream_c.__file__.endswith(".py"), HINT
        assert relay.COMPILED
        assert relay.ClientConnection is _proxy_c.ClientConnection
        assert relay.Pool is _upstream_c.Pool
        assert relay.Upstream is _upstream_c.Upstream
