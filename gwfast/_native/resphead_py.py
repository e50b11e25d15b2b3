"""HTTP/1.x response head scanner, pure-Python twin of `_resphead_c.pyx`.

Why it exists: the relay must find the end of an endpoint's response head, learn its framing
(Content-Length or chunked, RFC 9112 §6.3), drop the hop-by-hop fields and the session id it
rewrites, and forward everything else untouched, without a parser callback or a dict of
headers per response. The scanner reports absolute offsets into the caller's buffer as
plain int/bool attributes of one reused object per upstream connection; the relay then
writes `b"HTTP/1.1" + buf[start + 8 : line_end]`, the kept runs, its own session id line
and CRLF.

An endpoint is trusted more than a client but not blindly: it is read leniently where RFC
9112 lets a recipient be lenient (obs-text in values, an empty reason phrase, a status line
without the SP before an empty reason) and strictly wherever a mistake could desynchronise
the connection (line endings, framing fields). Every refusal is a HeadError with status 502
(the one HeadError class of headscan_py) whose message names what the endpoint sent wrong.

This twin is the reference: the compiled twin must behave exactly alike (same end offset,
same attributes, same message). The messages live here and are imported by the compiled
twin. Scanning is in three steps, and errors are reported in that order, so that feeding a
head byte at a time gives the same result as scanning it whole:

1. the first 9 bytes must read `HTTP/1.0 ` or `HTTP/1.1 `, checked on every call over the
   bytes present (an endpoint speaking anything else is refused at once);
2. until the head is complete only line endings are checked (every LF preceded by CR,
   every CR followed by LF) and CRLFCRLF is searched for, resuming where the last call
   stopped; a head over `max_head_bytes` is refused;
3. once complete, the head is parsed once, line by line, the first error winning.
"""

from __future__ import annotations

import re
from typing import NoReturn

from .headscan_py import (
    _BAD_VALUE_RE,
    _DIGITS_RE,
    _FIELD_RE,
    _TOKEN_RE,
    E_RANGE,
    VALUE_TABLE,
    HeadBase,
    HeadError,
    _byte_class,
)

__all__ = [
    "DEFAULT_MAX_HEADERS",
    "DEFAULT_MAX_HEAD_BYTES",
    "DROPPED_HEADERS",
    "HeadError",
    "ResponseScanner",
]

DEFAULT_MAX_HEAD_BYTES = 65536
DEFAULT_MAX_HEADERS = 200
STATUS = 502  # every refusal: the endpoint, not the client, is at fault

# Header lines not forwarded to the client (left out of the kept runs): the hop-by-hop
# fields of RFC 9110 §7.6.1 and RFC 9112 §6.1 (Connection, TE, Trailer, Upgrade and the
# legacy Keep-Alive / Proxy-Connection), and Mcp-Session-Id, which the relay rewrites.
# Content-Length and Transfer-Encoding are kept: the body is relayed with its framing.
DROPPED_HEADERS = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
        b"mcp-session-id",
    }
)

# Content-Length must fit a signed 64-bit integer; longer numerals are refused (an endpoint
# announcing exabytes is broken, and the relay counts the body down in 64 bits).
CL_MAX = 2**63 - 1

# ---------------------------------------------------------------- messages (shared)
E_LINE_ENDING = (
    "the endpoint's response head has a bare LF or a lone CR; every line must end with CRLF"
    " (RFC 9112 §2.2)"
)
E_TOO_LARGE = "the endpoint's response head is larger than {} bytes"
E_TOO_MANY = "the endpoint's response has more than {} header fields"
E_STATUS_LINE = (
    "the endpoint's response does not start with a status line"
    " 'HTTP/1.1 SP status-code SP reason' (RFC 9112 §4)"
)
E_VERSION = (
    "the endpoint answered in an unsupported HTTP version; only HTTP/1.1 and HTTP/1.0"
    " responses can be relayed (RFC 9112 §2.3)"
)
E_STATUS = (
    "the endpoint's status code is not three digits from 100 to 599 (RFC 9112 §4, RFC 9110 §15)"
)
E_REASON = (
    "the endpoint's reason phrase has a control character; only HTAB, SP, visible ASCII and"
    " obs-text are allowed (RFC 9112 §4)"
)
E_OBS_FOLD = (
    "the endpoint sent a header line starting with whitespace (obsolete line folding)"
    " (RFC 9112 §5.2)"
)
E_NO_COLON = "the endpoint sent a header line without a colon (RFC 9112 §5)"
E_EMPTY_NAME = "the endpoint sent a header line with an empty field name (RFC 9112 §5)"
E_NAME_SPACE = (
    "the endpoint sent whitespace between a header field name and its colon (RFC 9112 §5.1)"
)
E_NAME = "the endpoint sent a header field name with a non-token byte (RFC 9110 §5.1)"
E_VALUE = (
    "the endpoint sent a header field value with a control character; only HTAB, SP,"
    " visible ASCII and obs-text are allowed (RFC 9110 §5.5)"
)
E_CL = "the endpoint sent a Content-Length that is not one or more ASCII digits (RFC 9110 §8.6)"
E_CL_BIG = "the endpoint sent a Content-Length too large for 64 bits"
E_CL_DUP = "the endpoint sent more than one Content-Length header (RFC 9112 §6.3)"
E_TE = (
    "the endpoint sent a Transfer-Encoding other than 'chunked'; only chunked responses can"
    " be relayed (RFC 9112 §6.1)"
)
E_TE_DUP = "the endpoint sent more than one Transfer-Encoding header (RFC 9112 §6.1)"
E_CL_TE = (
    "the endpoint sent both Content-Length and Transfer-Encoding, a response smuggling"
    " sign (RFC 9112 §6.1, §11.2)"
)
E_TE_HTTP10 = (
    "the endpoint sent Transfer-Encoding in an HTTP/1.0 response, whose framing is then"
    " faulty (RFC 9112 §6.1)"
)
E_SESSION_DUP = "the endpoint sent more than one Mcp-Session-Id header"

# ---------------------------------------------------------------- field names
_OTHER = 0
_SESSION = 1
_CONTENT_LENGTH = 2
_TRANSFER_ENCODING = 3
_CONNECTION = 4
_HOP = 5  # dropped, nothing recorded

_NAMES: dict[bytes, int] = {
    b"mcp-session-id": _SESSION,
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"connection": _CONNECTION,
    b"keep-alive": _HOP,
    b"proxy-connection": _HOP,
    b"te": _HOP,
    b"trailer": _HOP,
    b"upgrade": _HOP,
}
assert {k for k, v in _NAMES.items() if v not in (_CONTENT_LENGTH, _TRANSFER_ENCODING)} == (
    DROPPED_HEADERS
)

_CR = 13
_LF = 10
_SP = 32
_OWS = (0x20, 0x09)  # RFC 9110 §5.6.3
_PREFIX = b"HTTP/1.1 "
_PREFIXES = (b"HTTP/1.1 ", b"HTTP/1.0 ")

# after "HTTP/1.x ": status-code [ SP reason-phrase ] CRLF (RFC 9112 §4; the SP before an
# empty reason is sometimes left out, and tolerated)
_STATUS_RE = re.compile(b"([1-5][0-9][0-9])(?: " + _byte_class(VALUE_TABLE) + b"*)?\r\n")


def _check_prefix(buf: bytes | bytearray, start: int, limit: int) -> None:
    """Raise unless the bytes present of buf[start:start+9] begin `HTTP/1.0 ` or `HTTP/1.1 `.

    RFC 9112 §2.3: HTTP-name is case-sensitive. Judged on every call, so an endpoint that
    speaks something else (TLS, HTTP/2, a banner) is refused as soon as it shows it.
    """
    if buf.startswith(_PREFIXES, start, limit):
        return
    for i in range(min(limit - start, 9)):
        c = buf[start + i]
        if i in (5, 7):  # the version digits: '1' then '0' or '1'
            if c != 0x31 and (i == 5 or c != 0x30):
                raise HeadError(STATUS, E_VERSION)
        elif c != _PREFIX[i]:
            raise HeadError(STATUS, E_VERSION if i == 6 else E_STATUS_LINE)


def _status_error(buf: bytes | bytearray, cs: int, le: int) -> NoReturn:
    """Raise the error for the status line's rest buf[cs:le] (after `HTTP/1.x `)."""
    if (
        le - cs < 3
        or _DIGITS_RE.fullmatch(buf, cs, cs + 3) is None
        or (le > cs + 3 and buf[cs + 3] != _SP)
        or not 100 <= int(buf[cs : cs + 3]) <= 599
    ):
        raise HeadError(STATUS, E_STATUS)
    raise HeadError(STATUS, E_REASON)


def _field_error(buf: bytes | bytearray, ls: int, lend: int) -> NoReturn:
    """Raise the error for a header line [ls, lend) that is not `token ":" value`."""
    if buf[ls] in _OWS:
        raise HeadError(STATUS, E_OBS_FOLD)  # RFC 9112 §5.2
    colon = buf.find(b":", ls, lend)
    if colon < 0:
        raise HeadError(STATUS, E_NO_COLON)
    if colon == ls:
        raise HeadError(STATUS, E_EMPTY_NAME)
    if _TOKEN_RE.fullmatch(buf, ls, colon) is None:
        raise HeadError(STATUS, E_NAME_SPACE if buf[colon - 1] in _OWS else E_NAME)
    if _BAD_VALUE_RE.search(buf, colon + 1, lend) is not None:
        raise HeadError(STATUS, E_VALUE)
    raise AssertionError("unreachable: the line matches the field syntax")


class ResponseScanner(HeadBase):
    """Scans one response head at a time; reuse one per upstream connection.

    The status line must begin at `start`. After `scan` returns an offset, the attributes
    describe that head (offsets absolute into the buffer scanned, -1 when absent). A
    pending scan (one that returned 0) is resumed by the next call with the same `start`;
    `reset` forgets it. A 1xx interim response is a complete head like any other: the
    caller skips it and scans the next one.
    """

    def __init__(
        self, max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES, max_headers: int = DEFAULT_MAX_HEADERS
    ) -> None:
        if max_headers < 0 or max_head_bytes < 1:
            raise ValueError("max_headers must be >= 0 and max_head_bytes >= 1")
        self.max_head_bytes = max_head_bytes
        self.max_headers = max_headers
        self._alloc_runs(max_headers)
        self._pend_start = -1
        self._pend_pos = 0
        self._clear()

    def _clear(self) -> None:
        self.status = -1
        self.http_minor = -1
        self.line_end = -1
        self.n_headers = 0
        self.n_kept = 0
        self.content_length = -1
        self.chunked = False
        self.conn_close = self.conn_keep_alive = self.conn_other = False
        self.session_start = self.session_end = -1

    def reset(self) -> None:
        """Forget a pending scan (the next call scans from `start` afresh)."""
        self._pend_start = -1

    def scan(self, buf: bytes | bytearray, start: int, end: int) -> int:
        """0 if buf[start:end] holds no complete head yet, else the offset past CRLFCRLF."""
        if not 0 <= start <= end <= len(buf):
            raise ValueError(E_RANGE)
        max_bytes = self.max_head_bytes
        limit = end if end - start <= max_bytes else start + max_bytes  # never look past it
        _check_prefix(buf, start, limit)
        if self._pend_start == start and self._pend_pos <= end:
            pos = self._pend_pos  # bytes before pos are checked; buf[pos-1] is no pending CR
        else:
            pos = start
        self._pend_start = -1  # saved again only when returning 0
        he = buf.find(b"\r\n\r\n", pos - 3 if pos - 3 > start else start, limit)
        if he >= 0:
            vend = he + 4
        else:
            vend = limit
            if vend > pos and buf[vend - 1] == _CR:
                vend -= 1  # judged when the next byte arrives
        if vend > pos:
            # RFC 9112 §2.2: no bare CR, and (our choice, allowed) no bare LF. CRLF cannot
            # overlap itself, so the counts agree iff every CR and LF pair up.
            crlf = buf.count(b"\r\n", pos, vend)
            if buf.count(b"\r", pos, vend) != crlf or buf.count(b"\n", pos, vend) != crlf:
                raise HeadError(STATUS, E_LINE_ENDING)
            pos = vend
        if he >= 0:
            return self._parse(buf, start, he + 4)
        if limit - start >= max_bytes:
            raise HeadError(STATUS, E_TOO_LARGE.format(max_bytes))
        self._pend_start = start
        self._pend_pos = pos
        return 0

    def _parse(self, buf: bytes | bytearray, start: int, hend: int) -> int:
        """Parse the complete head [start, hend): prefix and line endings are known good."""
        self._clear()
        # RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ]
        cs = start + 9
        m = _STATUS_RE.match(buf, cs)
        if m is None:
            _status_error(buf, cs, buf.find(b"\r\n", start, hend))
        self.http_minor = buf[start + 7] - 48
        self.status = int(m.group(1))
        self.line_end = ls = m.end()

        kept = self._kept
        max_headers = self.max_headers
        n = nk = 0
        cl_seen = te_seen = False
        last = hend - 2  # start of the empty line that ends the head
        while ls < last:
            n += 1
            if n > max_headers:
                raise HeadError(STATUS, E_TOO_MANY.format(max_headers))
            m = _FIELD_RE.match(buf, ls)
            if m is None:
                _field_error(buf, ls, buf.find(b"\r\n", ls, hend))
            vs, ve = m.span(2)
            lend = m.end()
            kind = _NAMES.get(m.group(1).lower(), _OTHER)
            drop = True
            if kind == _OTHER:
                drop = False
            elif kind == _SESSION:
                if self.session_start >= 0:
                    raise HeadError(STATUS, E_SESSION_DUP)
                self.session_start = vs
                self.session_end = ve
            elif kind == _CONTENT_LENGTH:
                # RFC 9110 §8.6, RFC 9112 §6.3 rule 5: 1*DIGIT; from an endpoint, exactly one
                drop = False
                if cl_seen:
                    raise HeadError(STATUS, E_CL_DUP)
                cl_seen = True
                if _DIGITS_RE.fullmatch(buf, vs, ve) is None:
                    raise HeadError(STATUS, E_CL)
                digits = bytes(buf[vs:ve]).lstrip(b"0")
                if len(digits) > 19 or int(digits or b"0") > CL_MAX:
                    raise HeadError(STATUS, E_CL_BIG)
                self.content_length = int(digits or b"0")
            elif kind == _TRANSFER_ENCODING:
                # RFC 9112 §6.1/§6.3 rule 4: chunked must be final; we relay chunked only
                drop = False
                if te_seen:
                    raise HeadError(STATUS, E_TE_DUP)
                te_seen = True
                if ve - vs != 7 or bytes(buf[vs:ve]).lower() != b"chunked":
                    raise HeadError(STATUS, E_TE)
                self.chunked = True
            elif kind == _CONNECTION:
                self._connection_tokens(buf, vs, ve)
            if not drop:
                if nk and kept[2 * nk - 1] == ls:
                    kept[2 * nk - 1] = lend
                else:
                    kept[2 * nk] = ls
                    kept[2 * nk + 1] = lend
                    nk += 1
            ls = lend
        self.n_headers = n
        self.n_kept = nk
        if self.chunked:
            if cl_seen:
                raise HeadError(STATUS, E_CL_TE)  # RFC 9112 §6.1, §11.2
            if self.http_minor == 0:
                raise HeadError(STATUS, E_TE_HTTP10)  # RFC 9112 §6.1
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
