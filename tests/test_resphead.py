"""The response head scanner: both twins, real and hostile heads, whole and byte at a time.

Every corpus entry is scanned by each twin whole, byte at a time (end growing by one), in a
growing bytearray and in random chunks; all must agree on the end offset and every
attribute, or on the HeadError message. Without GWFAST_NO_EXTENSIONS a missing compiled
twin fails these tests (test_native_loaded says why); with it, the compiled parameters are
skipped.
"""

from __future__ import annotations

import random

import pytest

from gwfast._native import headscan_py, resphead_py
from gwfast._native.resphead import (
    DROPPED_HEADERS,
    NO_EXTENSIONS,
    HeadError,
    ResponseScannerC,
    ResponseScannerPy,
)
from gwfast._testbase.scanfeed import Feeding

ATTRS = (
    "status",
    "http_minor",
    "line_end",
    "n_headers",
    "n_kept",
    "content_length",
    "chunked",
    "conn_close",
    "conn_keep_alive",
    "conn_other",
    "session_start",
    "session_end",
)


def compiled_twin() -> type:
    if ResponseScannerC is None:
        pytest.fail(
            "compiled ResponseScanner did not load: run `python3 setup.py build_ext --inplace`"
        )
    return ResponseScannerC


@pytest.fixture(params=["py", "c"])
def scanner_cls(request: pytest.FixtureRequest) -> type:
    if request.param == "py":
        return ResponseScannerPy
    if NO_EXTENSIONS:
        pytest.skip("GWFAST_NO_EXTENSIONS is set: pure twin only")
    return compiled_twin()


def twins() -> list[type]:
    return [ResponseScannerPy] if NO_EXTENSIONS else [ResponseScannerPy, compiled_twin()]


_FEED = Feeding(ATTRS)
snapshot, outcome, whole = _FEED.snapshot, _FEED.outcome, _FEED.whole
bytewise, growing, chunked_feed = _FEED.bytewise, _FEED.growing, _FEED.chunked_feed


# --------------------------------------------------------------------------- corpus


def resp(*lines: bytes | str, status: bytes | str = b"HTTP/1.1 200 OK") -> bytes:
    raw = [x.encode() if isinstance(x, str) else x for x in (status, *lines)]
    return b"\r\n".join(raw) + b"\r\n\r\n"


def padded(size: int) -> bytes:
    """A head of exactly `size` bytes."""
    pad = size - len(resp("Content-Length: 0", "X-Pad: "))
    return resp("Content-Length: 0", "X-Pad: " + "p" * pad)


DATE = "date: Tue, 25 Nov 2025 11:48:00 GMT"
SID = "6d3b5a0e9f2c4b8a9e1d7c3f5a2b4e60"

# the MCP python SDK (starlette on uvicorn, CORS exposing the session id as its docs
# advise), json_response=True: a typical ~250-byte head
UVICORN_JSON = resp(
    DATE,
    "server: uvicorn",
    "content-length: 232",
    "content-type: application/json",
    f"mcp-session-id: {SID}",
    "access-control-allow-origin: *",
    "access-control-expose-headers: Mcp-Session-Id",
)
# the same server answering with an SSE stream (sse-starlette's EventSourceResponse)
UVICORN_SSE = resp(
    DATE,
    "server: uvicorn",
    "cache-control: no-store",
    "connection: keep-alive",
    "x-accel-buffering: no",
    "content-type: text/event-stream",
    f"mcp-session-id: {SID}",
    "Transfer-Encoding: chunked",
)
UVICORN_202 = resp(DATE, "server: uvicorn", "content-length: 0", status="HTTP/1.1 202 Accepted")
UVICORN_404 = resp(
    DATE,
    "server: uvicorn",
    "content-type: application/json",
    "content-length: 84",
    status="HTTP/1.1 404 Not Found",
)
UVICORN_401 = resp(
    DATE,
    "server: uvicorn",
    'www-authenticate: Bearer error="invalid_token", error_description="expired",'
    ' resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource"',
    "content-type: application/json",
    "content-length: 61",
    status="HTTP/1.1 401 Unauthorized",
)
# server-everything: the TypeScript SDK's StreamableHTTPServerTransport on express
EXPRESS_SSE = resp(
    "X-Powered-By: Express",
    "Access-Control-Allow-Origin: *",
    "Access-Control-Expose-Headers: mcp-session-id,mcp-protocol-version",
    "mcp-session-id: 3f8b2c1e-7d4a-4e9b-a6f0-1c2d3e4f5a6b",
    "Content-Type: text/event-stream",
    "Cache-Control: no-cache",
    "Connection: keep-alive",
    "Date: Tue, 25 Nov 2025 11:48:00 GMT",
    "Keep-Alive: timeout=5",
    "Transfer-Encoding: chunked",
)
EXPRESS_JSON = resp(
    "X-Powered-By: Express",
    "Access-Control-Allow-Origin: *",
    "Content-Type: application/json; charset=utf-8",
    "Content-Length: 147",
    'ETag: W/"93-Qh0t3yGxRz7oSgZ2hHkJ9bA0cDe"',
    "Date: Tue, 25 Nov 2025 11:48:00 GMT",
    "Connection: keep-alive",
    "Keep-Alive: timeout=5",
)
NGINX = resp(
    "Server: nginx/1.24.0 (Ubuntu)",
    "Date: Tue, 25 Nov 2025 11:48:00 GMT",
    "Content-Type: application/json",
    "Content-Length: 123",
    "Connection: keep-alive",
    f"Mcp-Session-Id: {SID}",
)
NGINX_502 = resp(
    "Server: nginx/1.24.0",
    "Date: Tue, 25 Nov 2025 11:48:00 GMT",
    "Content-Type: text/html",
    "Content-Length: 157",
    "Connection: close",
    status="HTTP/1.1 502 Bad Gateway",
)
GO_JSON = resp(  # net/http, the Go MCP SDK
    "Content-Type: application/json",
    f"Mcp-Session-Id: {SID}",
    "Date: Tue, 25 Nov 2025 11:48:00 GMT",
    "Content-Length: 97",
)
GO_SSE = resp(
    "Cache-Control: no-cache, no-transform",
    "Content-Type: text/event-stream",
    f"Mcp-Session-Id: {SID}",
    "Date: Tue, 25 Nov 2025 11:48:00 GMT",
    "Transfer-Encoding: chunked",
)
HTTP10_CLOSE = resp(  # python's http.server: close-delimited
    "Server: BaseHTTP/0.6 Python/3.11.7",
    "Date: Tue, 25 Nov 2025 11:48:00 GMT",
    "Content-Type: application/json",
    status="HTTP/1.0 200 OK",
)

OK = {
    "uvicorn-json": UVICORN_JSON,
    "uvicorn-sse": UVICORN_SSE,
    "uvicorn-202": UVICORN_202,
    "uvicorn-404": UVICORN_404,
    "uvicorn-401": UVICORN_401,
    "express-sse": EXPRESS_SSE,
    "express-json": EXPRESS_JSON,
    "nginx": NGINX,
    "nginx-502": NGINX_502,
    "go-json": GO_JSON,
    "go-sse": GO_SSE,
    "http10-close-delimited": HTTP10_CLOSE,
    "http10-keep-alive": resp(
        "Connection: Keep-Alive", "Content-Length: 2", status="HTTP/1.0 200 OK"
    ),
    "100-continue": b"HTTP/1.1 100 Continue\r\n\r\n",
    "103-early-hints": resp(
        "Link: </style.css>; rel=preload; as=style", status="HTTP/1.1 103 Early Hints"
    ),
    "101-switching": resp("Connection: Upgrade", "Upgrade: websocket", status="HTTP/1.1 101 X"),
    "no-reason-no-sp": resp("Content-Length: 0", status="HTTP/1.1 200"),
    "empty-reason": resp("Content-Length: 0", status="HTTP/1.1 204 "),
    "reason-obs-text-tab": resp("Content-Length: 0", status=b"HTTP/1.1 200 D\xc3\xa9j\xe0\tvu OK"),
    "no-headers": b"HTTP/1.1 200 OK\r\n\r\n",
    "status-599": resp(status="HTTP/1.1 599 Whatever"),
    "status-100-lowest": b"HTTP/1.1 100 \r\n\r\n",
    "with-body": UVICORN_JSON + b'{"jsonrpc":"2.0"}\n\r\rbody bytes are not head bytes',
    "pipelined": b"HTTP/1.1 100 Continue\r\n\r\n" + UVICORN_JSON,
    "te-ows-trimmed": resp("Transfer-Encoding: \t chunked \t"),
    "te-case": resp("transfer-encoding: ChUnKeD"),
    "obs-text-value": resp(b"X-Name: caf\xc3\xa9 \x80\xff", "Content-Length: 0"),
    "empty-value": resp("X-Empty:", "X-Blank:   ", "Content-Length: 0"),
    "no-ows": resp("Content-Length:7", "mcp-session-id:s1"),
    "set-cookie-twice": resp("Set-Cookie: a=1; Path=/", "Set-Cookie: b=2; HttpOnly"),
    "conn-mixed": resp("Connection: Keep-Alive ,, close , X-Custom,", "X-Custom: 1"),
    "all-dropped": resp(
        "Connection: close",
        "Keep-Alive: timeout=5",
        "Proxy-Connection: keep-alive",
        "TE: trailers",
        "Trailer: Expires",
        "Upgrade: h2c",
        "Mcp-Session-Id: s",
    ),
    "dropped-between-kept": resp("A: 1", "Connection: close", "B: 2", "C: 3", "TE: x", "D: 4"),
    "cl-zero-padded": resp("Content-Length: 000042"),
    "cl-max-64": resp("Content-Length: 9223372036854775807"),
    "cl-max-64-padded": resp("Content-Length: 00000009223372036854775807"),
    "200-headers": resp(*(f"X-H{i}: {i}" for i in range(200))),
    "65536-bytes": padded(65536),
}
assert len(OK["65536-bytes"]) == 65536

E502 = {
    "cl-and-te": resp("Content-Length: 5", "Transfer-Encoding: chunked"),
    "te-and-cl": resp("Transfer-Encoding: chunked", "Content-Length: 5"),
    "double-cl": resp("Content-Length: 5", "Content-Length: 5"),
    "double-cl-differ": resp("Content-Length: 5", "Content-Length: 6"),
    "cl-plus": resp("Content-Length: +5"),
    "cl-minus": resp("Content-Length: -5"),
    "cl-inner-space": resp("Content-Length: 1 2"),
    "cl-list": resp("Content-Length: 5, 5"),
    "cl-hex": resp("Content-Length: 0x10"),
    "cl-empty": resp("Content-Length:"),
    "cl-64-bit-overflow": resp("Content-Length: 9223372036854775808"),
    "cl-20-digits": resp("Content-Length: 99999999999999999999"),
    "cl-5000-digits": resp("Content-Length: " + "9" * 5000),
    "te-chunked-chunked": resp("Transfer-Encoding: chunked, chunked"),
    "te-gzip": resp("Transfer-Encoding: gzip"),
    "te-identity": resp("Transfer-Encoding: identity"),
    "te-gzip-chunked": resp("Transfer-Encoding: gzip, chunked"),
    "te-repeated": resp("Transfer-Encoding: chunked", "Transfer-Encoding: chunked"),
    "te-empty": resp("Transfer-Encoding:"),
    "te-http10": resp("Transfer-Encoding: chunked", status="HTTP/1.0 200 OK"),
    "obs-fold": resp("X-Long: one", " two"),
    "obs-fold-tab": resp("X-Long: one", "\ttwo"),
    "space-before-colon": resp("Content-Length : 5"),
    "tab-before-colon": resp("Content-Length\t: 5"),
    "space-in-name": resp("Content Length: 5"),
    "bad-name-char": resp("X(y): z"),
    "non-ascii-name": resp(b"X-\xc3\xa9: z"),
    "empty-name": resp(": z"),
    "no-colon": resp("X-No-Colon"),
    "bare-lf-status-line": b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
    "bare-lf-header": b"HTTP/1.1 200 OK\r\nA: 1\nB: 2\r\n\r\n",
    "bare-lf-end": b"HTTP/1.1 200 OK\r\nA: 1\n\n",
    "lone-cr-value": b"HTTP/1.1 200 OK\r\nA: 1\rb\r\n\r\n",
    "cr-cr-lf": b"HTTP/1.1 200 OK\r\r\nA: 1\r\n\r\n",
    "nul-value": resp(b"X: a\x00b"),
    "del-value": resp(b"X: a\x7fb"),
    "esc-value": resp(b"X: \x1b[31m"),
    "status-2000": resp(status="HTTP/1.1 2000 OK"),
    "status-20": resp(status="HTTP/1.1 20 OK"),
    "status-20-no-reason": resp(status="HTTP/1.1 20"),
    "status-099": resp(status="HTTP/1.1 099 Low"),
    "status-600": resp(status="HTTP/1.1 600 High"),
    "status-letters": resp(status="HTTP/1.1 2xx OK"),
    "status-double-space": resp(status="HTTP/1.1  200 OK"),
    "status-tab": resp(status="HTTP/1.1 200\tOK"),
    "reason-ctl": resp(status=b"HTTP/1.1 200 O\x01K"),
    "reason-del": resp(status=b"HTTP/1.1 200 OK\x7f"),
    "http-2": resp(status="HTTP/2 200"),
    "http-2.0": resp(status="HTTP/2.0 200 OK"),
    "http-1.2": resp(status="HTTP/1.2 200 OK"),
    "http-0.9": resp(status="HTTP/0.9 200 OK"),
    "http-11": resp(status="HTTP/11 200 OK"),
    "http-1.10": resp(status="HTTP/1.10 200 OK"),
    "http-lowercase": resp(status="http/1.1 200 OK"),
    "http-tab": resp(status="HTTP/1.1\t200 OK"),
    "version-only": resp(status="HTTP/1.1"),
    "version-sp-only": resp(status="HTTP/1.1 "),
    "leading-space": resp(status=" HTTP/1.1 200 OK"),
    "leading-empty-line": b"\r\n" + UVICORN_JSON,
    "ssh-banner": b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n",
    "tls-alert": b"\x15\x03\x01\x00\x02\x02\x50",
    "http2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "http2-settings-frame": b"\x00\x00\x12\x04\x00\x00\x00\x00\x00",
    "repeated-session": resp("Mcp-Session-Id: s1", "mcp-session-id: s1"),
    "201-headers": resp(*(f"X-H{i}: {i}" for i in range(201))),
    "65537-bytes": padded(65537),
    "endless-head": b"HTTP/1.1 200 OK\r\n" + b"X-Pad: xxxxxxxxxxxx\r\n" * 4000,
    "endless-status-line": b"HTTP/1.1 200 " + b"O" * 70000,
}
PENDING = {
    "empty": b"",
    "prefix-only": b"HTTP/1.",
    "status-line-only": b"HTTP/1.1 200 OK\r\n",
    "half-terminator": UVICORN_JSON[:-1],
    "pending-cr": b"HTTP/1.1 200 OK\r",
}
CORPUS = {**OK, **E502, **PENDING}
EXPECTED = {
    **{k: "done" for k in OK},
    **{k: 502 for k in E502},
    **{k: "pending" for k in PENDING},
}


def expected_kept_bytes(data: bytes, end: int) -> bytes:
    """The head's header lines minus the dropped ones, computed independently."""
    lines = data[:end].split(b"\r\n")[1:-2]
    return b"".join(
        line + b"\r\n"
        for line in lines
        if line.split(b":", 1)[0].strip().lower() not in DROPPED_HEADERS
    )


def client_head(buf: bytes, s: object, start: int = 0, session: bytes | None = None) -> bytes:
    """What the relay writes to the client (the session id line its own)."""
    parts = [b"HTTP/1.1" + buf[start + 8 : s.line_end]]
    parts += [buf[s.kept_start(i) : s.kept_end(i)] for i in range(s.n_kept)]
    if session is not None:
        parts.append(b"Mcp-Session-Id: " + session + b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


@pytest.mark.parametrize("name", list(CORPUS))
def test_corpus(scanner_cls: type, name: str) -> None:
    data = CORPUS[name]
    result = whole(scanner_cls, data)
    expected = EXPECTED[name]
    if expected in ("done", "pending"):
        assert result[0] == expected, result
    else:
        assert result[:2] == ("error", expected), result
    if result[0] == "done":
        end, snap = result[1], result[2]
        assert data[end - 4 : end] == b"\r\n\r\n"
        assert data[snap["line_end"] - 2 : snap["line_end"]] == b"\r\n"
        assert b"\r\n" not in data[: snap["line_end"] - 2]
        assert snap["status"] == int(data[9:12])
        assert snap["http_minor"] == data[7] - 48
        kept = b"".join(data[a:b] for a, b in snap["kept"])
        assert kept == expected_kept_bytes(data, end)
        for (_, b1), (a2, _) in zip(snap["kept"], snap["kept"][1:], strict=False):
            assert b1 < a2  # adjacent lines are merged into one run
        assert snap["n_headers"] == data[:end].count(b"\r\n") - 2


@pytest.mark.parametrize("name", list(CORPUS))
def test_twins_agree(name: str) -> None:
    data = CORPUS[name]
    results = {cls: whole(cls, data) for cls in twins()}
    assert len(set(map(repr, results.values()))) == 1, results
    # at an offset inside a larger buffer too, with bytes before and after the head
    prefix = b"previous response's body\n\r"
    results = {cls: whole(cls, prefix + data + b"\n\x00", len(prefix)) for cls in twins()}
    assert len(set(map(repr, results.values()))) == 1, results


@pytest.mark.parametrize("name", list(CORPUS))
def test_byte_at_a_time(scanner_cls: type, name: str) -> None:
    data = CORPUS[name]
    full = whole(scanner_cls, data)
    result, stopped = bytewise(scanner_cls, data)
    assert result == full
    if result[0] == "done":
        assert stopped == result[1]  # completes on the byte that completes the head
    assert growing(scanner_cls, data) == full
    rnd = random.Random(name)
    for _ in range(5):
        assert chunked_feed(scanner_cls, data, rnd) == full
    prefix = b"HTTP/1.1 204 No Content\r\n\r\n"  # a previous response before `start`
    assert bytewise(scanner_cls, prefix + data, len(prefix))[0] == whole(
        scanner_cls, prefix + data, len(prefix)
    )


# --------------------------------------------------------------------------- attributes


def test_uvicorn_json(scanner_cls: type) -> None:
    s = scanner_cls()
    buf = bytearray(UVICORN_JSON + b"x" * 232)
    assert s.scan(buf, 0, len(buf)) == len(UVICORN_JSON)
    assert 240 <= len(UVICORN_JSON) <= 260
    assert (s.status, s.http_minor, s.content_length, s.chunked) == (200, 1, 232, False)
    assert s.line_end == len(b"HTTP/1.1 200 OK\r\n")
    assert bytes(buf[s.session_start : s.session_end]) == SID.encode()
    assert (s.conn_close, s.conn_keep_alive, s.conn_other) == (False, False, False)
    assert client_head(bytes(buf), s, session=b"sealed") == resp(
        DATE,
        "server: uvicorn",
        "content-length: 232",
        "content-type: application/json",
        "access-control-allow-origin: *",
        "access-control-expose-headers: Mcp-Session-Id",
        "Mcp-Session-Id: sealed",
    )
    assert s.n_kept == 2  # the session id line split the kept lines in two runs


def test_sse_heads(scanner_cls: type) -> None:
    s = scanner_cls()
    for data in (UVICORN_SSE, EXPRESS_SSE, GO_SSE):
        assert s.scan(data, 0, len(data)) == len(data)
        assert s.status == 200 and s.chunked and s.content_length == -1
        assert data[s.session_start : s.session_end] in (
            SID.encode(),
            b"3f8b2c1e-7d4a-4e9b-a6f0-1c2d3e4f5a6b",
        )
        head = client_head(data, s)
        assert b"Transfer-Encoding: chunked\r\n" in head
        assert b"onnection" not in head and b"Keep-Alive" not in head
        assert b"mcp-session-id:" not in head.lower()
    assert s.scan(EXPRESS_SSE, 0, len(EXPRESS_SSE)) and s.conn_keep_alive


def test_interim_then_final(scanner_cls: type) -> None:
    """A 1xx head is complete on its own; the relay skips it and scans the next one."""
    data = OK["103-early-hints"] + b"HTTP/1.1 100 Continue\r\n\r\n" + GO_JSON + b"{}"
    s = scanner_cls()
    pos = 0
    statuses = []
    while True:
        end = s.scan(data, pos, len(data))
        assert end
        statuses.append(s.status)
        if s.status >= 200:
            break
        pos = end
    assert statuses == [103, 100, 200]
    assert s.content_length == 97 and end == len(data) - 2
    assert client_head(data, s, pos).startswith(b"HTTP/1.1 200 OK\r\nContent-Type:")


def test_status_line_forms(scanner_cls: type) -> None:
    s = scanner_cls()
    for data, status, line in (
        (OK["no-reason-no-sp"], 200, b"HTTP/1.1 200\r\n"),
        (OK["empty-reason"], 204, b"HTTP/1.1 204 \r\n"),
        (HTTP10_CLOSE, 200, b"HTTP/1.1 200 OK\r\n"),
        (OK["status-100-lowest"], 100, b"HTTP/1.1 100 \r\n"),
    ):
        assert s.scan(data, 0, len(data)) == len(data)
        assert s.status == status
        assert client_head(data, s).startswith(line)


def test_http10_close_delimited(scanner_cls: type) -> None:
    s = scanner_cls()
    assert s.scan(HTTP10_CLOSE, 0, len(HTTP10_CLOSE)) == len(HTTP10_CLOSE)
    assert s.http_minor == 0 and s.content_length == -1 and not s.chunked
    assert not s.conn_keep_alive and s.session_start == -1
    data = OK["http10-keep-alive"]
    s.scan(data, 0, len(data))
    assert s.http_minor == 0 and s.conn_keep_alive and s.content_length == 2


def test_connection_tokens(scanner_cls: type) -> None:
    s = scanner_cls()
    data = OK["conn-mixed"]
    s.scan(data, 0, len(data))
    assert (s.conn_close, s.conn_keep_alive, s.conn_other) == (True, True, True)
    s.scan(NGINX_502, 0, len(NGINX_502))
    assert (s.conn_close, s.conn_keep_alive, s.conn_other) == (True, False, False)
    s.scan(NGINX, 0, len(NGINX))
    assert (s.conn_close, s.conn_keep_alive, s.conn_other) == (False, True, False)


def test_kept_runs(scanner_cls: type) -> None:
    s = scanner_cls()
    data = OK["dropped-between-kept"]
    s.scan(data, 0, len(data))
    runs = [data[s.kept_start(i) : s.kept_end(i)] for i in range(s.n_kept)]
    assert runs == [b"A: 1\r\n", b"B: 2\r\nC: 3\r\n", b"D: 4\r\n"]
    data = OK["all-dropped"]
    s.scan(data, 0, len(data))
    assert s.n_kept == 0 and s.n_headers == 7
    assert data[s.session_start : s.session_end] == b"s"
    assert client_head(data, s) == b"HTTP/1.1 200 OK\r\n\r\n"


def test_content_length_bounds(scanner_cls: type) -> None:
    s = scanner_cls()
    for value, expected in ((b"0", 0), (b"000042", 42), (b"9223372036854775807", 2**63 - 1)):
        data = b"HTTP/1.1 200 OK\r\nContent-Length: " + value + b"\r\n\r\n"
        assert s.scan(data, 0, len(data)) == len(data)
        assert s.content_length == expected
    for value in (b"9223372036854775808", b"18446744073709551616", b"1" * 40):
        data = b"HTTP/1.1 200 OK\r\nContent-Length: " + value + b"\r\n\r\n"
        with pytest.raises(HeadError) as err:
            s.scan(data, 0, len(data))
        assert err.value.message == resphead_py.E_CL_BIG


def test_values_trimmed(scanner_cls: type) -> None:
    data = resp("Mcp-Session-Id: \t a b \t ", "Content-Length:  \t 7 \t")
    s = scanner_cls()
    s.scan(data, 0, len(data))
    assert data[s.session_start : s.session_end] == b"a b"
    assert s.content_length == 7
    data = resp("Mcp-Session-Id:   ")
    s.scan(data, 0, len(data))
    assert s.session_start == s.session_end > 0  # empty value, present


@pytest.mark.parametrize(
    "name,message",
    [
        ("cl-and-te", resphead_py.E_CL_TE),
        ("te-and-cl", resphead_py.E_CL_TE),
        ("double-cl", resphead_py.E_CL_DUP),
        ("cl-hex", resphead_py.E_CL),
        ("te-gzip", resphead_py.E_TE),
        ("te-repeated", resphead_py.E_TE_DUP),
        ("te-http10", resphead_py.E_TE_HTTP10),
        ("obs-fold", resphead_py.E_OBS_FOLD),
        ("space-before-colon", resphead_py.E_NAME_SPACE),
        ("bad-name-char", resphead_py.E_NAME),
        ("empty-name", resphead_py.E_EMPTY_NAME),
        ("no-colon", resphead_py.E_NO_COLON),
        ("nul-value", resphead_py.E_VALUE),
        ("bare-lf-header", resphead_py.E_LINE_ENDING),
        ("lone-cr-value", resphead_py.E_LINE_ENDING),
        ("status-2000", resphead_py.E_STATUS),
        ("status-600", resphead_py.E_STATUS),
        ("status-double-space", resphead_py.E_STATUS),
        ("reason-ctl", resphead_py.E_REASON),
        ("http-2", resphead_py.E_VERSION),
        ("http-1.2", resphead_py.E_VERSION),
        ("http-1.10", resphead_py.E_STATUS_LINE),
        ("http-lowercase", resphead_py.E_STATUS_LINE),
        ("version-only", resphead_py.E_STATUS_LINE),
        ("leading-empty-line", resphead_py.E_STATUS_LINE),
        ("ssh-banner", resphead_py.E_STATUS_LINE),
        ("repeated-session", resphead_py.E_SESSION_DUP),
        ("201-headers", resphead_py.E_TOO_MANY.format(200)),
        ("65537-bytes", resphead_py.E_TOO_LARGE.format(65536)),
        ("endless-status-line", resphead_py.E_TOO_LARGE.format(65536)),
    ],
)
def test_error_messages(scanner_cls: type, name: str, message: str) -> None:
    assert whole(scanner_cls, CORPUS[name]) == ("error", 502, message)


def test_other_protocols_fail_at_once(scanner_cls: type) -> None:
    """An endpoint speaking TLS, HTTP/2 or SSH is refused on its first telling byte."""
    for data, at in (
        (E502["tls-alert"], 1),
        (E502["ssh-banner"], 1),
        (E502["http2-preface"], 1),
        (E502["http2-settings-frame"], 1),
        (E502["http-2"], 6),
        (E502["http-lowercase"], 1),
        (E502["http-1.10"], 9),
    ):
        result, stopped = bytewise(scanner_cls, data)
        assert result[:2] == ("error", 502)
        assert stopped == at, data


def test_bare_lf_fails_immediately(scanner_cls: type) -> None:
    data = b"HTTP/1.1 200 OK\r\nA: 1\nrest of a head that never ends"
    result, stopped = bytewise(scanner_cls, data)
    assert result == ("error", 502, resphead_py.E_LINE_ENDING)
    assert stopped == data.index(b"1\n") + 2
    data = b"HTTP/1.1 200 OK\r\nA: 1\rb"
    result, stopped = bytewise(scanner_cls, data)
    assert result[:2] == ("error", 502)
    assert stopped == len(data)  # the CR is judged when the byte after it arrives


def test_too_large_without_waiting_for_more(scanner_cls: type) -> None:
    s = scanner_cls(max_head_bytes=64)
    data = b"HTTP/1.1 200 OK\r\n" + b"X: " + b"y" * 100
    assert s.scan(data, 0, 63) == 0
    with pytest.raises(HeadError) as err:
        s.scan(data, 0, 64)
    assert err.value.status == 502


def test_limits_are_settable(scanner_cls: type) -> None:
    data = resp("A: 1", "B: 2", "C: 3")
    assert whole(scanner_cls, data, max_headers=3)[0] == "done"
    assert whole(scanner_cls, data, max_headers=2) == (
        "error",
        502,
        resphead_py.E_TOO_MANY.format(2),
    )
    assert whole(scanner_cls, data, max_head_bytes=len(data))[0] == "done"
    assert whole(scanner_cls, data, max_head_bytes=len(data) - 1)[:2] == ("error", 502)
    assert whole(scanner_cls, data, max_head_bytes=3) == (
        "error",
        502,
        resphead_py.E_TOO_LARGE.format(3),
    )
    s = scanner_cls(100, 7)  # positional: max_head_bytes, max_headers
    assert (s.max_head_bytes, s.max_headers) == (100, 7)
    s = scanner_cls()
    assert (s.max_head_bytes, s.max_headers) == (65536, 200)
    with pytest.raises(ValueError):
        scanner_cls(max_headers=-1)
    with pytest.raises(ValueError):
        scanner_cls(max_head_bytes=0)


def test_reuse_after_complete_at_same_start(scanner_cls: type) -> None:
    """An upstream connection compacts its buffer and scans the next response at 0 again."""
    s = scanner_cls()
    buf = bytearray(UVICORN_SSE[:30])
    assert s.scan(buf, 0, len(buf)) == 0
    buf += UVICORN_SSE[30:]
    assert s.scan(buf, 0, len(buf)) == len(UVICORN_SSE)
    buf[:] = GO_JSON[:50]
    assert s.scan(buf, 0, len(buf)) == 0
    buf += GO_JSON[50:]
    assert s.scan(buf, 0, len(buf)) == len(GO_JSON)
    assert snapshot(s, buf) == whole(scanner_cls, GO_JSON)[2]


def test_reset_forgets_pending(scanner_cls: type) -> None:
    s = scanner_cls()
    assert s.scan(b"HTTP/1.1 200 OK\r\nX: 1", 0, 21) == 0
    s.reset()
    with pytest.raises(HeadError):
        s.scan(b"HTTP/1.1 200 OK\nX: 1\r\n\r\n", 0, 24)


def test_one_error_class(scanner_cls: type) -> None:
    with pytest.raises(HeadError) as err:
        scanner_cls().scan(E502["cl-and-te"], 0, len(E502["cl-and-te"]))
    assert type(err.value) is headscan_py.HeadError
    assert err.value.status == 502
    assert "Transfer-Encoding" in err.value.message
    assert str(err.value).startswith("502: the endpoint")


def test_bad_arguments(scanner_cls: type) -> None:
    s = scanner_cls()
    for start, end in ((-1, 3), (3, 2), (0, len(GO_JSON) + 1)):
        with pytest.raises(ValueError):
            s.scan(GO_JSON, start, end)
    s.scan(GO_JSON, 0, len(GO_JSON))
    with pytest.raises(IndexError):
        s.kept_start(s.n_kept)
    with pytest.raises(IndexError):
        s.kept_end(-1)
    for start, end in ((-1, 3), (3, 2), (0, len(GO_JSON) + 1)):
        with pytest.raises(ValueError):
            s.span(GO_JSON, start, end)
    with pytest.raises(ValueError):  # a buffer shorter than the head it scanned
        s.kept(GO_JSON[: s.kept_end(s.n_kept - 1) - 1])


# --------------------------------------------------------------------------- fuzzing

ALPHABET = b"\r\n\r\n \t:,;aZ09-/\x00\x7f\x80\xff"
SEEDS = [UVICORN_JSON, UVICORN_SSE, EXPRESS_SSE, NGINX, HTTP10_CLOSE, OK["conn-mixed"]]


def mutate(rnd: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        i = rnd.randrange(len(b))
        op = rnd.random()
        c = ALPHABET[rnd.randrange(len(ALPHABET))]
        if op < 0.4:
            b[i] = c
        elif op < 0.8:
            b.insert(i, c)
        elif len(b) > 20:
            del b[i]
    return bytes(b)


def test_fuzz_twins_and_feeding_agree() -> None:
    """Mutated real heads: the twins agree, and feeding in chunks equals scanning whole."""
    rnd = random.Random(20251125)
    kinds = set()
    for _ in range(3000):
        data = mutate(rnd, rnd.choice(SEEDS))
        kw = {"max_headers": rnd.choice((3, 200)), "max_head_bytes": rnd.choice((120, 65536))}
        results = [whole(cls, data, **kw) for cls in twins()]
        assert all(r == results[0] for r in results), data
        kinds.add(results[0][2] if results[0][0] == "error" else results[0][0])
        for cls in twins():
            assert chunked_feed(cls, data, rnd, **kw) == results[0], data
    assert "done" in kinds
    assert len(kinds) >= 10, kinds  # many different refusals were reached


def test_any_buffer_scans_like_bytes(scanner_cls: type) -> None:
    """bytes and bytearray are read directly; the compiled twin also takes any other buffer
    (through the buffer protocol), the pure one is typed for bytes and bytearray only."""
    expected = whole(scanner_cls, GO_JSON)
    views = (
        []
        if scanner_cls is ResponseScannerPy
        else [memoryview(GO_JSON), memoryview(bytearray(GO_JSON))]
    )
    for buf in (bytearray(GO_JSON), *views):
        assert outcome(scanner_cls(), buf, 0, len(GO_JSON)) == expected, type(buf)
