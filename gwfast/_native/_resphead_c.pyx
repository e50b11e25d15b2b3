# cython: language_level=3
"""HTTP/1.x response head scanner, compiled twin of `resphead_py.py`.

Why it exists: every response through the relay is scanned, so this is pointer-level C over
the caller's buffer: memchr to find line ends, 256-byte lookup tables to validate, and no
Python object made per header. The behaviour (offsets, attributes, HeadError message) is
exactly that of resphead_py, the reference; its docstrings explain the design and the order
in which errors are found. HeadError, the byte tables and the messages are imported from
the pure twins: one copy of each.
"""

from ._spans cimport borrow, field_value_ok, give_back

from ._headbase_c cimport HeadBase
from libc.string cimport memchr

from . import headscan_py as _hs

from .headscan_py import E_RANGE, HeadError
from .resphead_py import (
    DEFAULT_MAX_HEAD_BYTES,
    DEFAULT_MAX_HEADERS,
    E_CL,
    E_CL_BIG,
    E_CL_DUP,
    E_CL_TE,
    E_EMPTY_NAME,
    E_LINE_ENDING,
    E_NAME,
    E_NAME_SPACE,
    E_NO_COLON,
    E_OBS_FOLD,
    E_REASON,
    E_SESSION_DUP,
    E_STATUS,
    E_STATUS_LINE,
    E_TE,
    E_TE_DUP,
    E_TE_HTTP10,
    E_TOO_LARGE,
    E_TOO_MANY,
    E_VALUE,
    E_VERSION,
    STATUS,
)

cdef enum:
    CR = 13
    LF = 10
    SP = 32
    HT = 9

# byte classes copied from the reference tables once, at import
cdef unsigned char TCHAR[256]
cdef unsigned char VALUE[256]
cdef unsigned char LOWER[256]
cdef int _i
for _i in range(256):
    TCHAR[_i] = _hs.TCHAR_TABLE[_i]
    VALUE[_i] = _hs.VALUE_TABLE[_i]
    LOWER[_i] = _i + 32 if 65 <= _i <= 90 else _i

cdef const char* PREFIX = b"HTTP/1.1 "
# Content-Length bound: resphead_py.CL_MAX, 2**63 - 1
cdef long long CL_MAX = 9223372036854775807LL


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
    """The field name p[:n] as one of the names the relay cares about."""
    if n == 2:
        if _ieq(p, b"te", 2): return F_HOP
    elif n == 7:
        if _ieq(p, b"upgrade", 7): return F_HOP
        if _ieq(p, b"trailer", 7): return F_HOP
    elif n == 10:
        if _ieq(p, b"connection", 10): return F_CONNECTION
        if _ieq(p, b"keep-alive", 10): return F_HOP
    elif n == 14:
        if _ieq(p, b"content-length", 14): return F_CONTENT_LENGTH
        if _ieq(p, b"mcp-session-id", 14): return F_SESSION
    elif n == 16:
        if _ieq(p, b"proxy-connection", 16): return F_HOP
    elif n == 17:
        if _ieq(p, b"transfer-encoding", 17): return F_TRANSFER_ENCODING
    return F_OTHER


cdef int _check_prefix(const unsigned char* d, Py_ssize_t start, Py_ssize_t limit) except -1:
    """Raise unless the bytes present of d[start:start+9] begin `HTTP/1.0 ` or `HTTP/1.1 `."""
    cdef Py_ssize_t i, n = limit - start
    cdef unsigned char c
    if n > 9:
        n = 9
    for i in range(n):
        c = d[start + i]
        if i == 5:
            if c != b'1':
                raise HeadError(STATUS, E_VERSION)
        elif i == 7:
            if c != b'1' and c != b'0':
                raise HeadError(STATUS, E_VERSION)
        elif c != <unsigned char>PREFIX[i]:
            raise HeadError(STATUS, E_VERSION if i == 6 else E_STATUS_LINE)
    return 0


cdef class ResponseScanner(HeadBase):
    """Scans one response head at a time; reuse one per upstream connection (see
    resphead_py)."""

    def __cinit__(self, *args, **kwargs):
        self._pend_start = -1

    def __init__(self, Py_ssize_t max_head_bytes=DEFAULT_MAX_HEAD_BYTES,
                 Py_ssize_t max_headers=DEFAULT_MAX_HEADERS):
        if max_headers < 0 or max_head_bytes < 1:
            raise ValueError("max_headers must be >= 0 and max_head_bytes >= 1")
        self._alloc_runs(max_headers)
        self.max_head_bytes = max_head_bytes
        self.max_headers = max_headers
        self._pend_start = -1
        self._clear()

    cdef void _clear(self) noexcept:
        self.status = self.http_minor = -1
        self.line_end = -1
        self.n_headers = self.n_kept = 0
        self.content_length = -1
        self.chunked = self.conn_close = self.conn_keep_alive = self.conn_other = False
        self.session_start = self.session_end = -1

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
        cdef Py_ssize_t limit, pos, i
        cdef const unsigned char* lf
        cdef const unsigned char* cr
        if start < 0 or end < start or end > size:
            raise ValueError(E_RANGE)
        limit = end if end - start <= self.max_head_bytes else start + self.max_head_bytes
        _check_prefix(d, start, limit)
        if self._pend_start == start and self._pend_pos <= end:
            pos = self._pend_pos  # bytes before pos are checked; d[pos-1] is no pending CR
        else:
            pos = start
        self._pend_start = -1  # saved again only when returning 0
        while True:
            lf = <const unsigned char*>memchr(d + pos, LF, limit - pos)
            if lf == NULL:
                cr = <const unsigned char*>memchr(d + pos, CR, limit - pos)
                if cr == NULL:
                    pos = limit
                elif cr - d + 1 < limit:
                    raise HeadError(STATUS, E_LINE_ENDING)  # lone CR
                else:
                    pos = cr - d  # judged when the next byte arrives
                break
            i = lf - d
            # RFC 9112 §2.2: the first CR since pos must be the one just before this LF
            cr = <const unsigned char*>memchr(d + pos, CR, i - pos)
            if cr == NULL or cr - d != i - 1:
                raise HeadError(STATUS, E_LINE_ENDING)
            pos = i + 1
            if i - 3 >= start and d[i - 2] == LF and d[i - 3] == CR:
                return self._parse(d, start, pos)
        if limit - start >= self.max_head_bytes:
            raise HeadError(STATUS, E_TOO_LARGE.format(self.max_head_bytes))
        self._pend_start = start
        self._pend_pos = pos
        return 0

    cdef Py_ssize_t _parse(self, const unsigned char* d, Py_ssize_t start,
                           Py_ssize_t hend) except -1:
        """Parse the complete head [start, hend): prefix and line endings are known good."""
        cdef Py_ssize_t le, cs, ls, lend, colon, vs, ve, i, last, n = 0, nk = 0
        cdef Py_ssize_t* kept = self._kept
        cdef bint cl_seen = False, te_seen = False, drop
        cdef long long cl
        cdef int digit, code
        cdef Field kind
        self._clear()
        # RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ];
        # the prefix check guarantees 9 bytes `HTTP/1.x ` before the line's CR
        le = <const unsigned char*>memchr(d + start, CR, hend - start) - d
        cs = start + 9
        if (le - cs < 3 or not (b'1' <= d[cs] <= b'5') or not (b'0' <= d[cs + 1] <= b'9')
                or not (b'0' <= d[cs + 2] <= b'9') or (le > cs + 3 and d[cs + 3] != SP)):
            raise HeadError(STATUS, E_STATUS)
        code = (d[cs] - 48) * 100 + (d[cs + 1] - 48) * 10 + (d[cs + 2] - 48)
        for i in range(cs + 4, le):
            if not VALUE[d[i]]:
                raise HeadError(STATUS, E_REASON)
        self.http_minor = d[start + 7] - 48
        self.status = code
        self.line_end = ls = le + 2

        last = hend - 2  # start of the empty line that ends the head
        while ls < last:
            lend = <const unsigned char*>memchr(d + ls, CR, hend - ls) - d
            n += 1
            if n > self.max_headers:
                raise HeadError(STATUS, E_TOO_MANY.format(self.max_headers))
            if _ows(d[ls]):
                raise HeadError(STATUS, E_OBS_FOLD)  # RFC 9112 §5.2
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
                raise HeadError(STATUS, E_VALUE)
            kind = _classify(d + ls, colon - ls)
            drop = True
            if kind == F_OTHER:
                drop = False
            elif kind == F_SESSION:
                if self.session_start >= 0:
                    raise HeadError(STATUS, E_SESSION_DUP)
                self.session_start = vs
                self.session_end = ve
            elif kind == F_CONTENT_LENGTH:
                # RFC 9110 §8.6, RFC 9112 §6.3 rule 5: 1*DIGIT; from an endpoint, exactly one
                drop = False
                if cl_seen:
                    raise HeadError(STATUS, E_CL_DUP)
                cl_seen = True
                if ve == vs:
                    raise HeadError(STATUS, E_CL)
                for i in range(vs, ve):
                    if d[i] < b'0' or d[i] > b'9':
                        raise HeadError(STATUS, E_CL)
                cl = 0
                for i in range(vs, ve):
                    digit = d[i] - 48
                    if cl > (CL_MAX - digit) // 10:
                        raise HeadError(STATUS, E_CL_BIG)
                    cl = cl * 10 + digit
                self.content_length = cl
            elif kind == F_TRANSFER_ENCODING:
                # RFC 9112 §6.1/§6.3 rule 4: chunked must be final; we relay chunked only
                drop = False
                if te_seen:
                    raise HeadError(STATUS, E_TE_DUP)
                te_seen = True
                if ve - vs != 7 or not _ieq(d + vs, b"chunked", 7):
                    raise HeadError(STATUS, E_TE)
                self.chunked = True
            elif kind == F_CONNECTION:
                self._connection_tokens(d, vs, ve)
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
        if self.chunked:
            if cl_seen:
                raise HeadError(STATUS, E_CL_TE)  # RFC 9112 §6.1, §11.2
            if self.http_minor == 0:
                raise HeadError(STATUS, E_TE_HTTP10)  # RFC 9112 §6.1
        return hend

    cdef int _name_error(self, const unsigned char* d, Py_ssize_t ls,
                         Py_ssize_t lend) except -1:
        """Raise the reference twin's error for a header line whose name is not `token:`."""
        cdef const unsigned char* p = <const unsigned char*>memchr(d + ls, b':', lend - ls)
        if p == NULL:
            raise HeadError(STATUS, E_NO_COLON)
        if p == d + ls:
            raise HeadError(STATUS, E_EMPTY_NAME)
        # RFC 9112 §5.1: whitespace before the colon is an error
        raise HeadError(STATUS, E_NAME_SPACE if _ows(d[p - d - 1]) else E_NAME)

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
