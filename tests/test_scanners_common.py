"""What the request and response scanners share, on both twins of each: `assemble` (how the
relay writes a head and the body after it), `span_as` (repeated values without allocation)
and the field-value check, which the compiled twins make eight bytes at a time."""

from __future__ import annotations

import pytest

from gwfast._native import headscan, resphead
from gwfast._native.headscan_py import HeadError
from gwfast._testbase.scanfeed import check_assemble, check_span_as, value_probes

# the pure twin, the compiled one (None when it did not load) and the line a head starts with
KINDS = {
    "request": (headscan.HeadScannerPy, headscan.HeadScannerC, b"POST /mcp HTTP/1.1"),
    "response": (resphead.ResponseScannerPy, resphead.ResponseScannerC, b"HTTP/1.1 200 OK"),
}


@pytest.fixture(params=[(k, t) for k in KINDS for t in ("py", "c")], ids=lambda p: "-".join(p))
def twin(request: pytest.FixtureRequest) -> tuple[type, type, bytes]:
    """(the twin under test, the pure twin, the first line of a head)."""
    kind, which = request.param
    pure, compiled, first = KINDS[kind]
    if which == "py":
        return pure, pure, first
    if headscan.NO_EXTENSIONS:
        pytest.skip("GWFAST_NO_EXTENSIONS is set: pure twin only")
    if compiled is None:
        pytest.fail(f"compiled {kind} scanner did not load: run `python3 setup.py build_ext`")
    return compiled, pure, first


def outcome(cls: type, data: bytes) -> tuple:
    try:
        return ("done", cls().scan(data, 0, len(data)))
    except HeadError as e:
        return ("error", e.status, e.message)


def test_assemble(twin: tuple[type, type, bytes]) -> None:
    cls, _, first = twin
    check_assemble(cls(), first + b"\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}")


def test_span_as(twin: tuple[type, type, bytes]) -> None:
    cls, _, first = twin
    check_span_as(cls(), first + b"\r\nContent-Length: 2\r\n\r\n{}")


def test_value_bytes_at_every_offset(twin: tuple[type, type, bytes]) -> None:
    """A refused byte is found at every offset of every length, an allowed one is never
    refused, and both twins give the same answer (status and message)."""
    cls, pure, first = twin
    for data, allowed in value_probes(lambda v: first + b"\r\nX-Probe: " + v + b"\r\n\r\n"):
        got = outcome(cls, data)
        assert (got[0] == "done") == allowed, data
        assert got == outcome(pure, data), data
