"""HTTP/1.1 request head scanner, pure-Python twin of `_headscan_c.pyx`.

Why it exists: the proxy must find the end of a request head, reject the heads that let
requests be smuggled or misread (RFC 9112), and learn the few fields routing needs, without
building a dict of headers per request. The scanner reports absolute offsets into the
caller's reused buffer as plain int/bool attributes of one reused object per connection.

This twin is the reference: the compiled twin must behave exactly alike (same end offset,
same attributes, same HeadError status and message). The tables, the error messages and
HeadError itself live here and are imported by the compiled twin, so there is one copy.

Scanning is in two steps. Until the head is complete only the line endings are checked
(every LF preceded by CR, every CR followed by LF) and CRLFCRLF is searched for, resuming
where the previous call stopped; once complete, the head is parsed once.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Sequence
from typing import NoReturn

__all__ = [
    "DEFAULT_MAX_HEADERS",
    "DEFAULT_MAX_HEAD_BYTES",
    "DROPPED_HEADERS",
    "HeadError",
    "HeadScanner",
]

DEFAULT_MAX_HEADERS = 100
DEFAULT_MAX_HEAD_BYTES = 16384

# Header lines the proxy does not forward (they are left out of the kept runs): the
# hop-by-hop fields of RFC 9110 §7.6.1 and RFC 9112 §6.1 (TE, Trailer, Upgrade, Connection
# and the legacy Keep-Alive / Proxy-Connection), the fields the proxy rewrites itself
# (Host, Mcp-Session-Id, X-Forwarded-*, Forwarded), and Expect (the proxy answers
# 100-continue itself). Transfer-Encoding and Content-Length are kept.
DROPPED_HEADERS = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
        b"host",
        b"mcp-session-id",
        b"expect",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"forwarded",
    }
)

# ---------------------------------------------------------------- byte classes (shared)
# tchar, RFC 9110 §5.6.2: field names and methods are tokens.
_TCHARS = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
TCHAR_TABLE = bytes(1 if i in _TCHARS else 0 for i in range(256))
# request-target, RFC 9112 §3.2: visible ASCII only (anything else must be percent-encoded),
# and no "#": a fragment is never part of a request target (RFC 9110 §7.1).
TARGET_TABLE = bytes(1 if 0x21 <= i <= 0x7E and i != 0x23 else 0 for i in range(256))
# field-value bytes, RFC 9110 §5.5: HTAB, SP, VCHAR and obs-text; every other CTL rejected.
VALUE_TABLE = bytes(1 if i == 0x09 or 0x20 <= i <= 0x7E or i >= 0x80 else 0 for i in range(256))


def _byte_class(table: bytes) -> bytes:
    return b"[" + b"".join(re.escape(bytes([i])) for i in range(256) if table[i]) + b"]"


def _negated_class(table: bytes) -> bytes:
    return b"[" + b"".join(re.escape(bytes([i])) for i in range(256) if not table[i]) + b"]"


_TOKEN_RE = re.compile(_byte_class(TCHAR_TABLE) + b"+")
_TARGET_RE = re.compile(_byte_class(TARGET_TABLE) + b"+")
_BAD_VALUE_RE = re.compile(_negated_class(VALUE_TABLE))
_DIGITS_RE = re.compile(b"[0-9]+")
_VERSION_RE = re.compile(b"HTTP/[0-9][.][0-9]")  # RFC 9112 §2.3; HTTP-name is case-sensitive
# Fast paths: one match per line accepts exactly the lines the step-by-step checks accept
# (those run only to name the error). A field value is OWS, then value bytes ending in a
# non-OWS byte (group 2, the trimmed value), then OWS (RFC 9110 §5.5).
_REQUEST_LINE_RE = re.compile(
    b"(" + _byte_class(TCHAR_TABLE) + b"+) " + _byte_class(TARGET_TABLE) + b"+ HTTP/1[.]([01])\r\n"
)
_VALUE_WORD = bytes(VALUE_TABLE[i] if i not in (0x09, 0x20) else 0 for i in range(256))
_FIELD_RE = re.compile(
    b"("
    + _byte_class(TCHAR_TABLE)
    + b"+):[ \t]*((?:"
    + _byte_class(VALUE_TABLE)
    + b"*"
    + _byte_class(_VALUE_WORD)
    + b")?)[ \t]*\r\n"
)

# ---------------------------------------------------------------- messages (shared)
E_RANGE = "scan needs 0 <= start <= end <= len(buf)"
E_SPAN = "a span needs 0 <= start <= end <= len(buf)"
E_PARTS = "parts are bytes, None, or tuples of them one level deep"
E_KEPT_PART = "a None part stands for kept lines of buf: buf is needed"
E_LINE_ENDING = "request head has a bare LF or a lone CR; end every line with CRLF (RFC 9112 §2.2)"
E_TOO_LARGE = (
    "request head is larger than {} bytes; send fewer or shorter header fields (RFC 6585 §5)"
)
E_TOO_MANY = "request has more than {} header fields; send fewer header fields (RFC 6585 §5)"
E_REQUEST_LINE = (
    "malformed request line; send 'METHOD SP request-target SP HTTP/1.1' CRLF (RFC 9112 §3)"
)
E_METHOD = "request method is empty or not a token; send e.g. POST or GET (RFC 9112 §3.1)"
E_TARGET = (
    "request target is empty, has a fragment ('#') or bytes outside visible ASCII; send an"
    " absolute path such as /name/mcp and percent-encode other bytes (RFC 9112 §3.2)"
)
E_VERSION_UNSUPPORTED = (
    "unsupported HTTP version: only HTTP/1.x (HTTP/1.1 or HTTP/1.0) is supported here"
)
E_VERSION = "malformed HTTP version; send exactly HTTP/1.1 (RFC 9112 §2.3)"
E_OBS_FOLD = (
    "header line starts with whitespace (obsolete line folding); put each field on one line"
    " (RFC 9112 §5.2)"
)
E_NO_COLON = "header line has no colon; send fields as 'Name: value' (RFC 9112 §5)"
E_EMPTY_NAME = "header line has an empty field name; send fields as 'Name: value' (RFC 9112 §5)"
E_NAME_SPACE = "whitespace between a header field name and its colon; remove it (RFC 9112 §5.1)"
E_NAME = "header field name has a byte that is not a token character (RFC 9110 §5.1)"
E_VALUE = (
    "header field value has a control character; only HTAB, SP, visible ASCII and"
    " obs-text are allowed (RFC 9110 §5.5)"
)
E_CL = "Content-Length must be one or more ASCII digits, e.g. 'Content-Length: 42' (RFC 9110 §8.6)"
E_CL_BIG = "Content-Length has more than 18 digits; send a smaller body"  # (unused: see CL_HUGE)
# A Content-Length too long for 64 bits is valid syntax (RFC 9110 §8.6 asks recipients to
# anticipate large numerals): it reads as CL_HUGE, which every body limit refuses (413).
CL_HUGE = 10**18
E_CL_DUP = "more than one Content-Length header; send exactly one (RFC 9112 §6.3)"
E_TE = (
    "unsupported Transfer-Encoding; only 'Transfer-Encoding: chunked' is accepted (RFC 9112 §6.1)"
)
E_TE_DUP = "more than one Transfer-Encoding header; send one 'Transfer-Encoding: chunked'"
E_CL_TE = (
    "request has both Content-Length and Transfer-Encoding; send only one of them"
    " (RFC 9112 §6.1: request smuggling defence)"
)
E_HOST_DUP = "more than one Host header; send exactly one (RFC 9112 §3.2)"
E_SESSION_DUP = "more than one Mcp-Session-Id header; send exactly one"


class HeadError(Exception):
    """A request head the proxy refuses: answer `status` (400 or 431) and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return f"{self.status}: {self.message}"


# ---------------------------------------------------------------- field names
_OTHER = 0
_HOST = 1
_SESSION = 2
_CONTENT_LENGTH = 3
_TRANSFER_ENCODING = 4
_CONNECTION = 5
_HOP = 6  # dropped, nothing recorded
# value spans recorded (first one wins); DROP_SPAN ones are also dropped
_SPAN = 7
_DROP_SPAN = 8

_NAMES: dict[bytes, tuple[int, str]] = {
    b"host": (_HOST, "host"),
    b"mcp-session-id": (_SESSION, "session"),
    b"content-length": (_CONTENT_LENGTH, ""),
    b"transfer-encoding": (_TRANSFER_ENCODING, ""),
    b"connection": (_CONNECTION, ""),
    b"mcp-protocol-version": (_SPAN, "protocol"),
    b"mcp-method": (_SPAN, "mcp_method"),
    b"mcp-name": (_SPAN, "mcp_name"),
    b"authorization": (_SPAN, "authorization"),
    b"accept": (_SPAN, "accept"),
    b"last-event-id": (_SPAN, "last_event_id"),
    b"origin": (_SPAN, "origin"),
    b"content-type": (_SPAN, "content_type"),
    b"expect": (_DROP_SPAN, "expect"),
    b"x-forwarded-for": (_DROP_SPAN, "xff"),
}
_OTHER_FIELD = (_OTHER, "")
for _name in DROPPED_HEADERS - _NAMES.keys():
    _NAMES[_name] = (_HOP, "")
del _name

SPAN_NAMES = (
    "host",
    "session",
    "protocol",
    "mcp_method",
    "mcp_name",
    "authorization",
    "accept",
    "last_event_id",
    "origin",
    "expect",
    "content_type",
    "xff",
)
_SPAN_ATTRS = {name: (name + "_start", name + "_end") for name in SPAN_NAMES}

_CR = 13
_LF = 10
_OWS = (0x20, 0x09)  # RFC 9110 §5.6.3


def _request_line_error(buf: bytes | bytearray, line: int, le: int) -> NoReturn:
    """Raise the error for a request line that is not `token SP target SP HTTP/1.x`."""
    sp1 = buf.find(b" ", line, le)
    if sp1 < 0:
        raise HeadError(400, E_REQUEST_LINE)
    if _TOKEN_RE.fullmatch(buf, line, sp1) is None:
        raise HeadError(400, E_METHOD)
    sp2 = buf.find(b" ", sp1 + 1, le)
    if sp2 < 0:
        raise HeadError(400, E_REQUEST_LINE)
    if _TARGET_RE.fullmatch(buf, sp1 + 1, sp2) is None:
        raise HeadError(400, E_TARGET)
    if _VERSION_RE.fullmatch(buf, sp2 + 1, le) is not None:
        raise HeadError(400, E_VERSION_UNSUPPORTED)
    raise HeadError(400, E_VERSION)


def _field_error(buf: bytes | bytearray, ls: int, lend: int) -> NoReturn:
    """Raise the error for a header line [ls, lend) that is not `token ":" value`."""
    # RFC 9112 §5.2: obs-fold is rejected with 400
    if buf[ls] in _OWS:
        raise HeadError(400, E_OBS_FOLD)
    colon = buf.find(b":", ls, lend)
    if colon < 0:
        raise HeadError(400, E_NO_COLON)
    if colon == ls:
        raise HeadError(400, E_EMPTY_NAME)
    if _TOKEN_RE.fullmatch(buf, ls, colon) is None:
        # RFC 9112 §5.1: whitespace before the colon MUST be rejected with 400
        raise HeadError(400, E_NAME_SPACE if buf[colon - 1] in _OWS else E_NAME)
    if _BAD_VALUE_RE.search(buf, colon + 1, lend) is not None:
        raise HeadError(400, E_VALUE)
    raise AssertionError("unreachable: the line matches the field syntax")


def span_bytes(buf: bytes | bytearray, start: int, end: int) -> bytes:
    """bytes(buf[start:end]); ValueError when the span is not in buf (both scanners' span())."""
    if not 0 <= start <= end <= len(buf):
        raise ValueError(E_SPAN)
    return bytes(buf[start:end])


def span_as(buf: bytes | bytearray, start: int, end: int, known: bytes | None) -> bytes:
    """`known` itself when buf[start:end] equals it, else span_bytes() (both scanners')."""
    value = span_bytes(buf, start, end)
    return known if value == known else value


def join_runs(buf: bytes | bytearray, runs: Sequence[int], n: int) -> bytes:
    """The first n (start, end) runs of buf, joined (both scanners' kept())."""
    spans = [(runs[i], runs[i + 1]) for i in range(0, 2 * n, 2)]
    if not all(0 <= s <= e <= len(buf) for s, e in spans):
        raise ValueError(E_SPAN)
    return b"".join([buf[s:e] for s, e in spans])


def assemble(
    parts: tuple,
    buf: bytes | bytearray | None,
    start: int,
    end: int,
    runs: Sequence[int] = (),
    n_runs: int = 0,
) -> bytes:
    """b"".join(parts) + buf[start:end], nothing from buf when it is None. A part is bytes,
    None for the `runs` of buf joined (a scanner's kept lines), or a tuple of those one level
    deep; TypeError for other parts (both scanners' assemble())."""
    if type(parts) is not tuple:
        raise TypeError(E_PARTS)
    flat: list[bytes | None] = []
    for p in parts:
        if type(p) is tuple:
            flat.extend(p)
            if not all(q is None or type(q) is bytes for q in p):
                raise TypeError(E_PARTS)
        elif p is None or type(p) is bytes:
            flat.append(p)
        else:
            raise TypeError(E_PARTS)
    if buf is None:
        if None in flat:
            raise TypeError(E_KEPT_PART)
        return b"".join(flat)  # type: ignore[arg-type]
    tail = span_bytes(buf, start, end)
    if None in flat:
        kept = join_runs(buf, runs, n_runs)
        flat = [kept if p is None else p for p in flat]
    return b"".join(flat) + tail  # type: ignore[arg-type]


class HeadBase:
    """What the request and response scanners share (both subclass it; `_headbase_c` is the
    compiled twin): the kept runs of the last head scanned, and the accessors that copy
    spans of the scanned buffer for the relay to write."""

    n_kept: int
    _kept: array

    def _alloc_runs(self, max_headers: int) -> None:
        # kept runs as (start, end) pairs; a run needs a kept line, so max_headers bounds it
        self._kept = array("q", bytes(8 * 2 * (max_headers + 1)))
        self.n_kept = 0

    def kept_start(self, i: int) -> int:
        if not 0 <= i < self.n_kept:
            raise IndexError("kept run index out of range")
        return self._kept[2 * i]

    def kept_end(self, i: int) -> int:
        if not 0 <= i < self.n_kept:
            raise IndexError("kept run index out of range")
        return self._kept[2 * i + 1]

    def span(self, buf: bytes | bytearray, start: int, end: int) -> bytes:
        """bytes(buf[start:end]): a span this scanner found, as one new bytes object."""
        return span_bytes(buf, start, end)

    def span_as(self, buf: bytes | bytearray, start: int, end: int, known: bytes | None) -> bytes:
        """`known` itself when buf[start:end] equals it (no allocation), else span()."""
        return span_as(buf, start, end, known)

    def kept(self, buf: bytes | bytearray) -> bytes:
        """The kept header lines of the last head scanned from buf, joined."""
        return join_runs(buf, self._kept, self.n_kept)

    def assemble(self, parts: tuple, buf: bytes | bytearray | None, start: int, end: int) -> bytes:
        """b"".join(parts) + buf[start:end] in one allocation (nothing from buf when it is
        None). A part may be None: the kept header lines of the head last scanned from buf
        (`kept(buf)`, not copied twice); or a tuple of parts. How the relay builds a head and
        the body after it."""
        return assemble(parts, buf, start, end, self._kept, self.n_kept)


class HeadScanner(HeadBase):
    """Scans one request head at a time; reuse one per connection.

    After `scan` returns an offset, the attributes describe that head (offsets are
    absolute into the buffer scanned). A pending scan (one that returned 0) is resumed by
    the next call with the same `start`; `reset` forgets it.
    """

    def __init__(
        self, max_headers: int = DEFAULT_MAX_HEADERS, max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES
    ) -> None:
        if max_headers < 0 or max_head_bytes < 1:
            raise ValueError("max_headers must be >= 0 and max_head_bytes >= 1")
        self.max_headers = max_headers
        self.max_head_bytes = max_head_bytes
        self._alloc_runs(max_headers)
        self._pend_start = -1
        self._pend_pos = 0
        self._pend_line = -1
        self._pend_lines = 0
        self._clear()

    def _clear(self) -> None:
        self.line_start = self.method_start = self.method_end = -1
        self.target_start = self.target_end = self.query_start = -1
        self.http_minor = -1
        self.n_headers = 0
        self.n_kept = 0
        self.content_length = -1
        self.chunked = False
        self.conn_close = self.conn_keep_alive = self.conn_other = False
        self.host_start = self.host_end = -1
        self.session_start = self.session_end = -1
        self.protocol_start = self.protocol_end = -1
        self.mcp_method_start = self.mcp_method_end = -1
        self.mcp_name_start = self.mcp_name_end = -1
        self.authorization_start = self.authorization_end = -1
        self.accept_start = self.accept_end = -1
        self.last_event_id_start = self.last_event_id_end = -1
        self.origin_start = self.origin_end = -1
        self.expect_start = self.expect_end = -1
        self.content_type_start = self.content_type_end = -1
        self.xff_start = self.xff_end = -1

    def reset(self) -> None:
        """Forget a pending scan (the next call scans from `start` afresh)."""
        self._pend_start = -1

    def scan(self, buf: bytes | bytearray, start: int, end: int) -> int:
        """0 if buf[start:end] holds no complete head yet, else the offset past CRLFCRLF."""
        if not 0 <= start <= end <= len(buf):
            raise ValueError(E_RANGE)
        max_bytes = self.max_head_bytes
        limit = end if end - start <= max_bytes else start + max_bytes  # never look past it
        if self._pend_start == start and self._pend_pos <= end:
            pos = self._pend_pos  # bytes before pos are checked; buf[pos-1] is no pending CR
            line = self._pend_line
            lines = self._pend_lines
        else:
            pos = start
            line = -1
            lines = 0
        self._pend_start = -1  # saved again only when returning 0
        if line < 0:
            # RFC 9112 §2.2: ignore empty lines received before the request line.
            while pos + 1 < limit and buf[pos] == _CR and buf[pos + 1] == _LF:
                pos += 2
            if pos < limit:
                c = buf[pos]
                if c == _LF or (c == _CR and pos + 1 < limit):
                    raise HeadError(400, E_LINE_ENDING)
                if c != _CR:
                    line = pos
        if line >= 0:
            he = buf.find(b"\r\n\r\n", pos - 3 if pos - 3 > line else line, limit)
            if he >= 0:
                vend = he + 4
            else:
                vend = limit
                if vend > pos and buf[vend - 1] == _CR:
                    vend -= 1  # judged when the next byte arrives
            if vend > pos:
                # RFC 9112 §2.2: no bare CR, and (our choice, allowed) no bare LF. CRLF
                # cannot overlap itself, so the counts agree iff every CR and LF pair up.
                crlf = buf.count(b"\r\n", pos, vend)
                if buf.count(b"\r", pos, vend) != crlf or buf.count(b"\n", pos, vend) != crlf:
                    raise HeadError(400, E_LINE_ENDING)
                pos = vend
                lines += crlf
                if he < 0 and lines - 1 > self.max_headers:
                    # the request line and more complete header lines than allowed: no need
                    # to wait for the rest (the complete head would get the same 431)
                    raise HeadError(431, E_TOO_MANY.format(self.max_headers))
            if he >= 0:
                return self._parse(buf, line, he + 4)
        if limit - start >= max_bytes:
            raise HeadError(431, E_TOO_LARGE.format(max_bytes))
        self._pend_start = start
        self._pend_pos = pos
        self._pend_line = line
        self._pend_lines = lines
        return 0

    def _parse(self, buf: bytes | bytearray, line: int, hend: int) -> int:
        """Parse the complete head [line, hend): line endings are already known good."""
        self._clear()
        self.line_start = line
        # RFC 9112 §3: request-line = method SP request-target SP HTTP-version
        m = _REQUEST_LINE_RE.match(buf, line)
        if m is None:
            _request_line_error(buf, line, buf.find(b"\r\n", line, hend))
        self.method_start = line
        self.method_end = m.end(1)
        self.target_start = m.end(1) + 1
        self.target_end = m.end() - 11
        self.query_start = buf.find(b"?", self.target_start, self.target_end)  # -1: none
        self.http_minor = buf[m.end() - 3] - 48

        kept = self._kept
        max_headers = self.max_headers
        n = nk = 0
        cl_seen = te_seen = False
        ls = m.end()
        last = hend - 2  # start of the empty line that ends the head
        while ls < last:
            n += 1
            if n > max_headers:
                raise HeadError(431, E_TOO_MANY.format(max_headers))
            m = _FIELD_RE.match(buf, ls)
            if m is None:
                _field_error(buf, ls, buf.find(b"\r\n", ls, hend))
            vs, ve = m.span(2)
            lend = m.end() - 2
            kind, attr = _NAMES.get(m.group(1).lower(), _OTHER_FIELD)
            drop = False
            if kind == _OTHER:
                pass
            elif kind in (_SPAN, _DROP_SPAN):
                drop = kind == _DROP_SPAN
                a_start, a_end = _SPAN_ATTRS[attr]
                if getattr(self, a_start) < 0:
                    setattr(self, a_start, vs)
                    setattr(self, a_end, ve)
            elif kind == _HOST:
                drop = True
                if self.host_start >= 0:
                    raise HeadError(400, E_HOST_DUP)
                self.host_start = vs
                self.host_end = ve
            elif kind == _SESSION:
                drop = True
                if self.session_start >= 0:
                    raise HeadError(400, E_SESSION_DUP)
                self.session_start = vs
                self.session_end = ve
            elif kind == _CONTENT_LENGTH:
                # RFC 9110 §8.6 and RFC 9112 §6.3 rule 5: exactly one, 1*DIGIT
                if cl_seen:
                    raise HeadError(400, E_CL_DUP)
                cl_seen = True
                if _DIGITS_RE.fullmatch(buf, vs, ve) is None:
                    raise HeadError(400, E_CL)
                digits = bytes(buf[vs:ve]).lstrip(b"0")
                self.content_length = int(digits or b"0") if len(digits) <= 18 else CL_HUGE
            elif kind == _TRANSFER_ENCODING:
                # RFC 9112 §6.1/§6.3 rule 4: chunked must be final; we accept chunked only
                if te_seen:
                    raise HeadError(400, E_TE_DUP)
                te_seen = True
                if ve - vs != 7 or bytes(buf[vs:ve]).lower() != b"chunked":
                    raise HeadError(400, E_TE)
                self.chunked = True
            elif kind == _CONNECTION:
                drop = True
                self._connection_tokens(buf, vs, ve)
            else:  # _HOP
                drop = True
            if not drop:
                if nk and kept[2 * nk - 1] == ls:
                    kept[2 * nk - 1] = lend + 2
                else:
                    kept[2 * nk] = ls
                    kept[2 * nk + 1] = lend + 2
                    nk += 1
            ls = lend + 2
        self.n_headers = n
        self.n_kept = nk
        if self.chunked and cl_seen:
            raise HeadError(400, E_CL_TE)  # RFC 9112 §6.1, §11.2
        return hend

    def _connection_tokens(self, buf: bytes | bytearray, vs: int, ve: int) -> None:
        # RFC 9110 §7.6.1: Connection = #connection-option; empty list elements are allowed
        p = vs
        while p <= ve:
            comma = buf.find(b",", p, ve)
            if comma < 0:
                comma = ve
            a = p
            while a < comma and buf[a] in _OWS:
                a += 1
            b = comma
            while b > a and buf[b - 1] in _OWS:
                b -= 1
            if b > a:
                token = bytes(buf[a:b]).lower()
                if token == b"close":
                    self.conn_close = True
                elif token == b"keep-alive":
                    self.conn_keep_alive = True
                else:
                    self.conn_other = True
            p = comma + 1
