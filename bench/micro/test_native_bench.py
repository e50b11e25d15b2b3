"""Micro benchmarks of the native twins, compiled against pure (STYLE.md, two-tier benchmarks).

Not part of the default test run (testpaths is `tests`). Run:

    python3 setup.py build_ext --inplace
    python3 -m pytest bench/micro -q --benchmark-group-by=group --benchmark-columns=min,median,ops

The compiled parameters are skipped when the extensions are not built.
"""

from __future__ import annotations

from array import array

import pytest

from gwfast._native import ring, ring_py
from gwfast._native.headscan import HeadScannerC, HeadScannerPy
from gwfast._native.ring import HashRingC, HashRingPy

KEY_HASH_C = ring.key_hash if ring.COMPILED else None

# A typical MCP POST from the python SDK (httpx), ~450 bytes.
MCP_POST = (
    b"POST /mcp HTTP/1.1\r\n"
    b"Host: mcp-gateway.tools.svc.cluster.local:8080\r\n"
    b"Accept: application/json, text/event-stream\r\n"
    b"Accept-Encoding: gzip, deflate\r\n"
    b"Connection: keep-alive\r\n"
    b"User-Agent: python-httpx/0.28.1\r\n"
    b"mcp-protocol-version: 2025-06-18\r\n"
    b"mcp-session-id: 8c7f3e2a9b1d4f6e0a5c2b7d9e1f3a4b\r\n"
    b"Mcp-Method: tools/call\r\n"
    b"Mcp-Name: search_documents\r\n"
    b"Authorization: Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhZ2VudC03In0.sig\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: 187\r\n"
    b"\r\n"
)
assert 430 <= len(MCP_POST) <= 470, len(MCP_POST)

NODES = [f"10.0.0.{i}:8080".encode() for i in range(1, 6)]
KEY = ring_py.key_hash(b"8c7f3e2a9b1d4f6e0a5c2b7d9e1f3a4b")

IMPLS = ["c", "py"]


def pick(impl: str, compiled: object, pure: object) -> object:
    if impl == "py":
        return pure
    if compiled is None:
        pytest.skip("compiled twin not built")
    return compiled


@pytest.mark.parametrize("impl", IMPLS)
def test_headscan_mcp_post(benchmark, impl: str) -> None:
    benchmark.group = "headscan: 450-byte MCP POST head"
    scanner = pick(impl, HeadScannerC, HeadScannerPy)()
    buf = bytearray(MCP_POST + b"x" * 187)  # the connection's reused read buffer
    end = len(buf)
    assert benchmark(scanner.scan, buf, 0, end) == len(MCP_POST)
    assert scanner.content_length == 187


@pytest.mark.parametrize("impl", IMPLS)
def test_ring_lookup_bounded(benchmark, impl: str) -> None:
    benchmark.group = "ring: lookup_bounded, 5 nodes x 160 vnodes, owner has room"
    hash_ring = pick(impl, HashRingC, HashRingPy)(NODES)
    loads = array("q", [4, 7, 5, 6, 5])
    eligible = bytearray(b"\x01" * 5)
    node = benchmark(hash_ring.lookup_bounded, KEY, loads, eligible, 9)
    assert node == hash_ring.lookup(KEY)


@pytest.mark.parametrize("impl", IMPLS)
def test_ring_lookup_bounded_walk(benchmark, impl: str) -> None:
    benchmark.group = "ring: lookup_bounded, 5 nodes, all but one at capacity"
    hash_ring = pick(impl, HashRingC, HashRingPy)(NODES)
    loads = array("q", [9, 9, 9, 9, 9])
    loads[(hash_ring.lookup(KEY) + 4) % 5] = 0  # the walk must find this one
    eligible = bytearray(b"\x01" * 5)
    node = benchmark(hash_ring.lookup_bounded, KEY, loads, eligible, 9)
    assert loads[node] == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_key_hash(benchmark, impl: str) -> None:
    benchmark.group = "ring: key_hash of a 32-byte session id"
    key_hash = pick(impl, KEY_HASH_C, ring_py.key_hash)
    assert benchmark(key_hash, b"8c7f3e2a9b1d4f6e0a5c2b7d9e1f3a4b") == KEY
