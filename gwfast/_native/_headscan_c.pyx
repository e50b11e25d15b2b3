# cython: language_level=3
"""HTTP/1.1 request head scanner, compiled twin of `headscan_py.py`.

Why it exists: every request through the proxy is scanned, so this is pointer-level C over
the caller's buffer: memchr to find line ends, 256-byte lookup tables to validate, and no
Python object made per header. The behaviour (offsets, attributes, HeadError status and
message) is exactly that of headscan_py, the reference; its docstrings explain the design.
HeadError, the byte tables and the messages are imported from there: one copy of each.
"""

from libc.string cimport memchr, memcmp

from ._spans cimport borrow, field_value_ok, give_back

from . import headscan_py as _py

from .headscan_py import (
    DEFAULT_MAX_HEAD_BYTES,
    DEFAULT_MAX_HEADERS,
    E_CL,
    CL_HUGE,
    E_CL_DUP,
    E_CL_TE,
    E_EMPTY_NAME,
    E_HOST_DUP,
    E_LINE_ENDING,
    E_METHOD,
    E_NAME,
    E_NAME_SPACE,
    E_NO_COLON,
    E_OBS_FOLD,
    E_RANGE,
    E_REQUEST_LINE,
    E_SESSION_DUP,
    E_TARGET,
    E_TE,
    E_TE_DUP,
    E_TOO_LARGE,
    E_TOO_MANY,
    E_VALUE,
    E_VERSION,
    E_VERSION_UNSUPPORTED,
    HeadError,
)

cdef enum:
    CR = 13
    LF = 10
    SP = 32
    HT = 9

# byte classes copied from the reference tables once, at import
cdef unsigned char TCHAR[256]
cdef unsigned char TARGET[256]
cdef unsigned char VALUE[256]
cdef unsigned char LOWER[256]
cdef int _i
for _i in range(256):
    TCHAR[_i] = _py.TCHAR_TABLE[_i]
    TARGET[_i] = _py.TARGET_TABLE[_i]
    VALUE[_i] = _py.VALUE_TABLE[_i]
    LOWER[_i] = _i + 32 if 65 <= _i <= 90 else _i


cdef inline bint _ieq(const unsigned char* p, const char* lower, Py_ssize_t n) noexcept nogil:
    """p[:n] equals the lower-case ASCII `lower`, ignoring case (RFC 9110 §5.1)."""
    cdef Py_ssize_t i
    for i in range(n):
        if LOWER[p[i]] != <unsigned char>lower[i]:
            return False
    return True


cdef inline bint _ows(unsigned char c) noexcept nogil:
    return c == SP or c == HT  # RFC 9110 §5.6.3


cdef Field _classify(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    """The field name p[:n] as one of the names the proxy cares about."""
    if n == 2:
        if _ieq(p, b"te", 2): return F_HOP
    elif n == 4:
        if _ieq(p, b"host", 4): return F_HOST
    elif n == 6:
        if _ieq(p, b"accept", 6): return F_ACCEPT
        if _ieq(p, b"origin", 6): return F_ORIGIN
        if _ieq(p, b"expect", 6): return F_EXPECT
    elif n == 7:
        if _ieq(p, b"upgrade", 7): return F_HOP
        if _ieq(p, b"trailer", 7): return F_HOP
    elif n == 8:
        if _ieq(p, b"mcp-name", 8): return F_MCP_NAME
    elif n == 9:
        if _ieq(p, b"forwarded", 9): return F_HOP
    elif n == 10:
        if _ieq(p, b"connection", 10): return F_CONNECTION
        if _ieq(p, b"mcp-method", 10): return F_MCP_METHOD
        if _ieq(p, b"keep-alive", 10): return F_HOP
    elif n == 12:
        if _ieq(p, b"content-type", 12): return F_CONTENT_TYPE
    elif n == 13:
        if _ieq(p, b"authorization", 13): return F_AUTHORIZATION
        if _ieq(p, b"last-event-id", 13): return F_LAST_EVENT_ID
    elif n == 14:
        if _ieq(p, b"content-length", 14): return F_CONTENT_LENGTH
        if _ieq(p, b"mcp-session-id", 14): return F_SESSION
    elif n == 15:
        if _ieq(p, b"x-forwarded-for", 15): return F_XFF
    elif n == 16:
        if _ieq(p, b"proxy-connection", 16): return F_HOP
        if _ieq(p, b"x-forwarded-host", 16): return F_HOP
    elif n == 17:
        if _ieq(p, b"transfer-encoding", 17): return F_TRANSFER_ENCODING
        if _ieq(p, b"x-forwarded-proto", 17): return F_HOP
    elif n == 20:
        if _ieq(p, b"mcp-protocol-version", 20): return F_PROTOCOL
    return F_OTHER


cdef inline bint _has_crlfcrlf(const unsigned char* d, Py_ssize_t pos, Py_ssize_t limit):
    cdef const unsigned char* p
    while pos + 3 < limit:
        p = <const unsigned char*>memchr(d + pos, CR, limit - pos - 3)
        if p == NULL:
            return False
        if p[1] == LF and p[2] == CR and p[3] == LF:
            return True
        pos = p - d + 1
    return False


cdef class HeadScanner(HeadBase):
    """Scans one request head at a time; reuse one per connection (see headscan_py)."""

    def __cinit__(self, *args, **kwargs):
        self._pend_start = -1

    def __init__(self, Py_ssize_t max_headers=DEFAULT_MAX_HEADERS,
                 Py_ssize_t max_head_bytes=DEFAULT_MAX_HEAD_BYTES):
        if max_headers < 0 or max_head_bytes < 1:
            raise ValueError("max_headers must be >= 0 and max_head_bytes >= 1")
        self._alloc_runs(max_headers)
        self.max_headers = max_headers
        self.max_head_bytes = max_head_bytes
        self._pend_start = -1
        self._clear()

    cdef void _clear(self) noexcept:
        self.line_start = self.method_start = self.method_end = -1
        self.target_start = self.target_end = self.query_start = -1
        self.http_minor = -1
        self.n_headers = self.n_kept = 0
        self.content_length = -1
        self.chunked = self.conn_close = self.conn_keep_alive = self.conn_other = False
        self.host_start = self.host_end = self.session_start = self.session_end = -1
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

    cpdef reset(self):
        """Forget a pending scan (the next call scans from `start` afresh)."""
        self._pend_start = -1

    cpdef Py_ssize_t scan(self, object buf, Py_ssize_t start, Py_ssize_t end) except -1:
        """0 if buf[start:end] holds no complete head yet, else the offset past CRLFCRLF."""
        cdef Py_buffer view
        cdef int taken = borrow(buf, &view)  # no Python code runs while scanning
        try:
            return self._scan(<const unsigned char*>view.buf, view.len, start, end)
        finally:
            give_back(&view, taken)

    cdef Py_ssize_t _scan(self, const unsigned char* d, Py_ssize_t size,
                          Py_ssize_t start, Py_ssize_t end) except -1:
        cdef Py_ssize_t limit, pos, line, i, lines
        cdef const unsigned char* lf
        cdef const unsigned char* cr
        if start < 0 or end < start or end > size:
            raise ValueError(E_RANGE)
        limit = end if end - start <= self.max_head_bytes else start + self.max_head_bytes
        if self._pend_start == start and self._pend_pos <= end:
            pos = self._pend_pos  # bytes before pos are checked; d[pos-1] is no pending CR
            line = self._pend_line
            lines = self._pend_lines
        else:
            pos = start
            line = -1
            lines = 0
        self._pend_start = -1  # saved again only when returning 0
        if line < 0:
            # RFC 9112 §2.2: ignore empty lines received before the request line.
            while pos + 1 < limit and d[pos] == CR and d[pos + 1] == LF:
                pos += 2
            if pos < limit:
                if d[pos] == LF or (d[pos] == CR and pos + 1 < limit):
                    raise HeadError(400, E_LINE_ENDING)
                if d[pos] != CR:
                    line = pos
        if line >= 0:
            while True:
                lf = <const unsigned char*>memchr(d + pos, LF, limit - pos)
                if lf == NULL:
                    cr = <const unsigned char*>memchr(d + pos, CR, limit - pos)
                    if cr == NULL:
                        pos = limit
                    elif cr - d + 1 < limit:
                        raise HeadError(400, E_LINE_ENDING)  # lone CR
                    else:
                        pos = cr - d  # judged when the next byte arrives
                    break
                i = lf - d
                # RFC 9112 §2.2: the first CR since pos must be the one just before this LF
                cr = <const unsigned char*>memchr(d + pos, CR, i - pos)
                if cr == NULL or cr - d != i - 1:
                    raise HeadError(400, E_LINE_ENDING)
                pos = i + 1
                if i - 3 >= line and d[i - 2] == LF and d[i - 3] == CR:
                    return self._parse(d, line, pos)
                lines += 1
                if lines - 1 > self.max_headers and not _has_crlfcrlf(d, pos - 2, limit):
                    # more complete header lines than allowed and no end in sight: the whole
                    # head gets 431 too. When the end is already here, parsing decides, so
                    # an earlier error (a bad request line) wins as in the pure twin.
                    raise HeadError(431, E_TOO_MANY.format(self.max_headers))
        if limit - start >= self.max_head_bytes:
            raise HeadError(431, E_TOO_LARGE.format(self.max_head_bytes))
        self._pend_start = start
        self._pend_pos = pos
        self._pend_line = line
        self._pend_lines = lines
        return 0

    cdef Py_ssize_t _parse(self, const unsigned char* d, Py_ssize_t line,
                           Py_ssize_t hend) except -1:
        """Parse the complete head [line, hend): line endings are already known good."""
        cdef Py_ssize_t le, sp1, sp2, ls, lend, colon, vs, ve, i, last, n = 0, nk = 0
        cdef Py_ssize_t* kept = self._kept
        cdef const unsigned char* p
        cdef bint cl_seen = False, te_seen = False, drop
        cdef long long cl
        cdef Py_ssize_t sig
        cdef Field kind
        self._clear()
        self.line_start = line
        le = <const unsigned char*>memchr(d + line, CR, hend - line) - d
        # RFC 9112 §3: request-line = method SP request-target SP HTTP-version
        p = <const unsigned char*>memchr(d + line, SP, le - line)
        if p == NULL:
            raise HeadError(400, E_REQUEST_LINE)
        sp1 = p - d
        if sp1 == line:
            raise HeadError(400, E_METHOD)
        for i in range(line, sp1):
            if not TCHAR[d[i]]:
                raise HeadError(400, E_METHOD)
        p = <const unsigned char*>memchr(d + sp1 + 1, SP, le - sp1 - 1)
        if p == NULL:
            raise HeadError(400, E_REQUEST_LINE)
        sp2 = p - d
        if sp2 == sp1 + 1:
            raise HeadError(400, E_TARGET)
        for i in range(sp1 + 1, sp2):
            if not TARGET[d[i]]:
                raise HeadError(400, E_TARGET)
        p = d + sp2 + 1
        if le - sp2 == 9 and memcmp(p, b"HTTP/1.", 7) == 0 and (p[7] == b'0' or p[7] == b'1'):
            self.http_minor = p[7] - 48
        elif (le - sp2 == 9 and memcmp(p, b"HTTP/", 5) == 0 and b'0' <= p[5] <= b'9'
              and p[6] == b'.' and b'0' <= p[7] <= b'9'):
            raise HeadError(400, E_VERSION_UNSUPPORTED)  # RFC 9112 §2.3
        else:
            raise HeadError(400, E_VERSION)
        self.method_start = line
        self.method_end = sp1
        self.target_start = sp1 + 1
        self.target_end = sp2
        p = <const unsigned char*>memchr(d + sp1 + 1, b'?', sp2 - sp1 - 1)
        self.query_start = -1 if p == NULL else p - d

        ls = le + 2
        last = hend - 2  # start of the empty line that ends the head
        while ls < last:
            lend = <const unsigned char*>memchr(d + ls, CR, hend - ls) - d
            n += 1
            if n > self.max_headers:
                raise HeadError(431, E_TOO_MANY.format(self.max_headers))
            # RFC 9112 §5.2: obs-fold is rejected with 400
            if _ows(d[ls]):
                raise HeadError(400, E_OBS_FOLD)
            colon = ls
            while colon < lend and TCHAR[d[colon]]:
                colon += 1
            if colon == lend or d[colon] != b':' or colon == ls:
                self._name_error(d, ls, lend)
            vs = colon + 1
            while vs < lend and _ows(d[vs]):
                vs += 1
            ve = lend
            while ve > vs and _ows(d[ve - 1]):
                ve -= 1
            if not field_value_ok(d, vs, ve, VALUE):
                raise HeadError(400, E_VALUE)
            kind = _classify(d + ls, colon - ls)
            drop = True
            if kind == F_OTHER:
                drop = False
            elif kind == F_HOST:
                if self.host_start >= 0:
                    raise HeadError(400, E_HOST_DUP)
                self.host_start = vs
                self.host_end = ve
            elif kind == F_SESSION:
                if self.session_start >= 0:
                    raise HeadError(400, E_SESSION_DUP)
                self.session_start = vs
                self.session_end = ve
            elif kind == F_CONTENT_LENGTH:
                # RFC 9110 §8.6 and RFC 9112 §6.3 rule 5: exactly one, 1*DIGIT
                drop = False
                if cl_seen:
                    raise HeadError(400, E_CL_DUP)
                cl_seen = True
                if ve == vs:
                    raise HeadError(400, E_CL)
                cl = 0
                sig = 0  # significant digits: leading zeros do not count
                for i in range(vs, ve):
                    if d[i] < b'0' or d[i] > b'9':
                        raise HeadError(400, E_CL)
                    if sig == 0 and d[i] == b'0':
                        continue
                    sig += 1
                    if sig <= 18:
                        cl = cl * 10 + (d[i] - 48)
                # too long for 64 bits is still valid syntax: CL_HUGE, refused by any limit
                self.content_length = cl if sig <= 18 else CL_HUGE
            elif kind == F_TRANSFER_ENCODING:
                # RFC 9112 §6.1/§6.3 rule 4: chunked must be final; we accept chunked only
                drop = False
                if te_seen:
                    raise HeadError(400, E_TE_DUP)
                te_seen = True
                if ve - vs != 7 or not _ieq(d + vs, b"chunked", 7):
                    raise HeadError(400, E_TE)
                self.chunked = True
            elif kind == F_CONNECTION:
                self._connection_tokens(d, vs, ve)
            elif kind == F_HOP:
                pass
            elif kind == F_EXPECT:
                if self.expect_start < 0:
                    self.expect_start = vs
                    self.expect_end = ve
            elif kind == F_XFF:
                if self.xff_start < 0:
                    self.xff_start = vs
                    self.xff_end = ve
            else:
                drop = False
                self._first_span(kind, vs, ve)
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

    cdef int _name_error(self, const unsigned char* d, Py_ssize_t ls,
                         Py_ssize_t lend) except -1:
        """Raise the reference twin's error for a header line whose name is not `token:`."""
        cdef const unsigned char* p = <const unsigned char*>memchr(d + ls, b':', lend - ls)
        if p == NULL:
            raise HeadError(400, E_NO_COLON)
        if p == d + ls:
            raise HeadError(400, E_EMPTY_NAME)
        # RFC 9112 §5.1: whitespace before the colon MUST be rejected with 400
        raise HeadError(400, E_NAME_SPACE if _ows(d[p - d - 1]) else E_NAME)

    cdef void _first_span(self, Field kind, Py_ssize_t vs, Py_ssize_t ve) noexcept:
        """Record a value span; the first field of a name wins."""
        if kind == F_PROTOCOL:
            if self.protocol_start < 0:
                self.protocol_start = vs
                self.protocol_end = ve
        elif kind == F_MCP_METHOD:
            if self.mcp_method_start < 0:
                self.mcp_method_start = vs
                self.mcp_method_end = ve
        elif kind == F_MCP_NAME:
            if self.mcp_name_start < 0:
                self.mcp_name_start = vs
                self.mcp_name_end = ve
        elif kind == F_AUTHORIZATION:
            if self.authorization_start < 0:
                self.authorization_start = vs
                self.authorization_end = ve
        elif kind == F_ACCEPT:
            if self.accept_start < 0:
                self.accept_start = vs
                self.accept_end = ve
        elif kind == F_LAST_EVENT_ID:
            if self.last_event_id_start < 0:
                self.last_event_id_start = vs
                self.last_event_id_end = ve
        elif kind == F_ORIGIN:
            if self.origin_start < 0:
                self.origin_start = vs
                self.origin_end = ve
        elif kind == F_CONTENT_TYPE:
            if self.content_type_start < 0:
                self.content_type_start = vs
                self.content_type_end = ve

    cdef void _connection_tokens(self, const unsigned char* d, Py_ssize_t vs,
                                 Py_ssize_t ve) noexcept:
        # RFC 9110 §7.6.1: Connection = #connection-option; empty list elements are allowed
        cdef Py_ssize_t p = vs, comma, a, b
        cdef const unsigned char* c
        while p <= ve:
            c = <const unsigned char*>memchr(d + p, b',', ve - p)
            comma = ve if c == NULL else c - d
            a = p
            while a < comma and _ows(d[a]):
                a += 1
            b = comma
            while b > a and _ows(d[b - 1]):
                b -= 1
            if b > a:
                if b - a == 5 and _ieq(d + a, b"close", 5):
                    self.conn_close = True
                elif b - a == 10 and _ieq(d + a, b"keep-alive", 10):
                    self.conn_keep_alive = True
                else:
                    self.conn_other = True
            p = comma + 1
