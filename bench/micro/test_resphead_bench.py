"""Micro benchmarks of the response side: head scanning and chunked framing.

Compiled twin against pure twin, and both against httptools.HttpResponseParser used as
gwfast/upstream.py uses it today (an on_header callback collecting (name, value) pairs).
Not part of the default test run (testpaths is `tests`). Run:

    python3 setup.py build_ext --inplace
    python3 -m pytest bench/micro/test_resphead_bench.py -q \
        --benchmark-group-by=group --benchmark-columns=min,median,ops

The compiled parameters are skipped when the extensions are not built.
"""

from __future__ import annotations

import httptools
import pytest

from gwfast._native.chunks import ChunkReaderC, ChunkReaderPy
from gwfast._native.resphead import ResponseScannerC, ResponseScannerPy

# What the MCP python SDK (starlette on uvicorn, CORS exposing the session id) answers to a
# JSON tools/call: a ~250-byte head, then a 232-byte body.
SID = b"6d3b5a0e9f2c4b8a9e1d7c3f5a2b4e60"
UVICORN_JSON = (
    b"HTTP/1.1 200 OK\r\n"
    b"date: Tue, 25 Nov 2025 11:48:00 GMT\r\n"
    b"server: uvicorn\r\n"
    b"content-length: 232\r\n"
    b"content-type: application/json\r\n"
    b"mcp-session-id: " + SID + b"\r\n"
    b"access-control-allow-origin: *\r\n"
    b"access-control-expose-headers: Mcp-Session-Id\r\n"
    b"\r\n"
)
assert 240 <= len(UVICORN_JSON) <= 260, len(UVICORN_JSON)
BODY = b"x" * 232

# An SSE answer: the same server streaming 50 progress notifications, one chunk each.
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"date: Tue, 25 Nov 2025 11:48:00 GMT\r\n"
    b"server: uvicorn\r\n"
    b"cache-control: no-store\r\n"
    b"connection: keep-alive\r\n"
    b"content-type: text/event-stream\r\n"
    b"mcp-session-id: " + SID + b"\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"\r\n"
)
EVENTS = [
    b"event: message\r\nid: %d\r\ndata: "
    b'{"jsonrpc":"2.0","method":"notifications/progress","params":'
    b'{"progressToken":"t-1","progress":%d,"total":50}}\r\n\r\n' % (i, i)
    for i in range(50)
]
CHUNKS = [b"%x\r\n%s\r\n" % (len(e), e) for e in EVENTS] + [b"0\r\n\r\n"]
SSE_BODY = b"".join(CHUNKS)

HOP_BY_HOP = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade")
)
IMPLS = ["c", "py"]


def pick(impl: str, compiled: object, pure: object) -> object:
    if impl == "py":
        return pure
    if compiled is None:
        pytest.skip("compiled twin not built")
    return compiled


class Collector:
    """The callbacks gwfast/upstream.py gives httptools."""

    __slots__ = ("headers", "headers_done", "complete")

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_message_complete(self) -> None:
        self.complete = True


# --------------------------------------------------------------------------- response head


@pytest.mark.parametrize("impl", IMPLS)
def test_resphead_scan(benchmark, impl: str) -> None:
    benchmark.group = "response head: scan a 253-byte uvicorn JSON head"
    scanner = pick(impl, ResponseScannerC, ResponseScannerPy)()
    buf = bytearray(UVICORN_JSON + BODY)  # the upstream connection's read buffer
    assert benchmark(scanner.scan, buf, 0, len(buf)) == len(UVICORN_JSON)
    assert scanner.content_length == 232 and scanner.status == 200


def test_resphead_httptools(benchmark) -> None:
    benchmark.group = "response head: scan a 253-byte uvicorn JSON head"
    cb = Collector()
    parser = httptools.HttpResponseParser(cb)

    def parse() -> None:
        cb.headers = []
        parser.feed_data(UVICORN_JSON)
        parser.feed_data(BODY)  # ends the message, so the parser takes the next head

    benchmark(parse)
    assert cb.complete and len(cb.headers) == 7 and parser.get_status_code() == 200


def client_head_scanned(scanner: object, buf: bytearray, end: int) -> bytes:
    """The client head as the relay will build it from the scanner's offsets."""
    hend = scanner.scan(buf, 0, end)
    parts = [b"HTTP/1.1", buf[8 : scanner.line_end]]
    for i in range(scanner.n_kept):
        parts.append(buf[scanner.kept_start(i) : scanner.kept_end(i)])
    parts.append(b"mcp-session-id: sealed-" + buf[scanner.session_start : scanner.session_end])
    parts.append(b"\r\n\r\n")
    assert hend
    return b"".join(parts)


def client_head_httptools(parser: object, cb: Collector, data: bytes) -> bytes:
    """The client head as gwfast/upstream.py builds it today (without its Connection line)."""
    cb.headers = []
    end = data.find(b"\r\n\r\n") + 4
    parser.feed_data(data[:end])
    line_end = data.find(b"\r\n") + 2
    parts = [b"HTTP/1.1" + data[8:line_end]]
    for name, value in cb.headers:
        low = name.lower()
        if low in HOP_BY_HOP:
            continue
        if low == b"mcp-session-id":
            value = b"sealed-" + value
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    parser.feed_data(data[end:])
    return b"".join(parts)


@pytest.mark.parametrize("impl", IMPLS)
def test_client_head_scanned(benchmark, impl: str) -> None:
    benchmark.group = "response head: scan and build the client head"
    scanner = pick(impl, ResponseScannerC, ResponseScannerPy)()
    buf = bytearray(UVICORN_JSON + BODY)
    head = benchmark(client_head_scanned, scanner, buf, len(buf))
    assert head.startswith(b"HTTP/1.1 200 OK\r\ndate:") and b"sealed-" + SID in head


def test_client_head_httptools(benchmark) -> None:
    benchmark.group = "response head: scan and build the client head"
    cb = Collector()
    parser = httptools.HttpResponseParser(cb)
    head = benchmark(client_head_httptools, parser, cb, UVICORN_JSON + BODY)
    assert head.startswith(b"HTTP/1.1 200 OK\r\ndate:") and b"sealed-" + SID in head


# --------------------------------------------------------------------------- chunked body


@pytest.mark.parametrize("impl", IMPLS)
def test_chunks_sse_whole(benchmark, impl: str) -> None:
    benchmark.group = f"chunked: 50-event SSE body ({len(SSE_BODY)} bytes) in one read"
    cls = pick(impl, ChunkReaderC, ChunkReaderPy)

    def read() -> object:
        reader = cls(1 << 30)
        reader.feed(SSE_BODY, 0, len(SSE_BODY))
        return reader

    assert benchmark(read).done


def test_chunks_sse_whole_httptools(benchmark) -> None:
    benchmark.group = f"chunked: 50-event SSE body ({len(SSE_BODY)} bytes) in one read"
    cb = Collector()
    parser = httptools.HttpResponseParser(cb)

    def read() -> None:  # the head too: httptools cannot start in the body
        cb.complete = False
        parser.feed_data(SSE_HEAD)
        parser.feed_data(SSE_BODY)

    benchmark(read)
    assert cb.complete


@pytest.mark.parametrize("impl", IMPLS)
def test_chunks_sse_per_event(benchmark, impl: str) -> None:
    benchmark.group = "chunked: 50-event SSE body, one read per event (51 feeds)"
    cls = pick(impl, ChunkReaderC, ChunkReaderPy)

    def read() -> object:
        reader = cls(1 << 30)
        for chunk in CHUNKS:
            reader.feed(chunk, 0, len(chunk))
        return reader

    assert benchmark(read).done


def test_chunks_sse_per_event_httptools(benchmark) -> None:
    benchmark.group = "chunked: 50-event SSE body, one read per event (51 feeds)"
    cb = Collector()
    parser = httptools.HttpResponseParser(cb)

    def read() -> None:  # the head too: httptools cannot start in the body
        cb.complete = False
        parser.feed_data(SSE_HEAD)
        for chunk in CHUNKS:
            parser.feed_data(chunk)

    benchmark(read)
    assert cb.complete


def test_sse_head_httptools(benchmark) -> None:
    """httptools on the SSE head alone, to subtract from the two runs above."""
    benchmark.group = "chunked: httptools on the SSE head alone (subtract it)"
    cb = Collector()
    parser = httptools.HttpResponseParser(cb)

    def read() -> None:
        parser.feed_data(SSE_HEAD)
        parser.feed_data(b"0\r\n\r\n")

    benchmark(read)
    assert cb.headers_done
