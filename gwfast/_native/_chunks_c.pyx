# cython: language_level=3
"""Chunked framing reader (RFC 9112 §7.1), compiled twin of `chunks_py.py`.

Why it exists: an SSE response is a long run of small chunks, each a size line, a few
hundred data bytes and a CRLF, and every one passes through this reader. Here chunk data
is skipped by its length (never read), the CRLF after it and a plain `hex CRLF` size line
are recognised in place by a short C loop, and only a line split across two reads is copied
(into one 4 KiB buffer, allocated the first time a line is split). No Python object is made
per chunk. The behaviour is exactly that of chunks_py, the reference: same return values,
same exceptions with the same messages at the same call; the fast paths only shortcut
cases whose outcome the general path would give too. ChunkError, TrailersTooLarge and the
messages are imported from there: one copy of each.
"""

from cpython.mem cimport PyMem_Free, PyMem_Malloc
from ._spans cimport borrow, give_back
from libc.string cimport memchr, memcpy

from .chunks_py import (
    E_CRLF,
    E_DATA_LONG,
    E_EXT,
    E_LINE_LONG,
    E_RANGE,
    E_SIZE,
    E_TRAILER,
    E_TRAILER_BYTES,
    E_TRAILER_COUNT,
    E_TRAILER_NAME,
    MAX_BODY_CAP,
    ChunkError,
    TrailersTooLarge,
)
from .chunks_py import MAX_LINE as _MAX_LINE
from .chunks_py import MAX_SIZE_DIGITS as _MAX_SIZE_DIGITS

cdef enum:
    CR = 13
    LF = 10
    SP = 32
    HT = 9

cdef enum State:
    S_SIZE, S_DATA, S_DATA_CRLF, S_TRAILER, S_DONE

cdef Py_ssize_t MAX_LINE = _MAX_LINE
cdef Py_ssize_t MAX_SIZE_DIGITS = _MAX_SIZE_DIGITS

# HEX[c]: 1 + the value of hex digit c, 0 when c is not one
cdef unsigned char HEX[256]
# EXT_OK[c]: c may appear in a chunk extension (no CTL but HTAB, no DEL)
cdef unsigned char EXT_OK[256]
cdef unsigned char LOWER[256]
cdef int _i
for _i in range(256):
    HEX[_i] = 0
    EXT_OK[_i] = _i == 0x09 or 0x20 <= _i <= 0x7E or _i >= 0x80
    LOWER[_i] = _i + 32 if 65 <= _i <= 90 else _i
for _i in range(10):
    HEX[48 + _i] = 1 + _i
for _i in range(6):
    HEX[65 + _i] = HEX[97 + _i] = 11 + _i


cdef inline bint _ieq(const unsigned char* p, const char* lower, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if LOWER[p[i]] != <unsigned char>lower[i]:
            return False
    return True


cdef inline bint _space(unsigned char c) noexcept nogil:
    """c is ASCII whitespace as bytes.strip() sees it."""
    return c == SP or 9 <= c <= 13


cdef bint _not_trailer(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    """p[:n] names a field that cannot be a trailer (chunks_py.NOT_TRAILERS)."""
    if n == 2:
        return _ieq(p, b"te", 2)
    if n == 4:
        return _ieq(p, b"host", 4)
    if n == 7:
        return _ieq(p, b"trailer", 7) or _ieq(p, b"upgrade", 7)
    if n == 10:
        return _ieq(p, b"connection", 10) or _ieq(p, b"keep-alive", 10)
    if n == 12:
        return _ieq(p, b"content-type", 12)
    if n == 13:
        return _ieq(p, b"authorization", 13)
    if n == 14:
        return _ieq(p, b"content-length", 14) or _ieq(p, b"mcp-session-id", 14)
    if n == 17:
        return _ieq(p, b"transfer-encoding", 17)
    return False


cdef class ChunkReader:
    """Feed raw bytes; learn how many belong to the body and when it is complete (see
    chunks_py)."""

    cdef readonly long long total, max_body
    cdef readonly Py_ssize_t max_trailer_bytes, max_trailers
    cdef State _state
    cdef long long _remaining
    cdef Py_ssize_t _trailer_bytes, _trailers
    cdef unsigned char* _line  # a line split across reads; NULL until one is
    cdef Py_ssize_t _line_len
    cdef const unsigned char* _lp  # the line _take_line found (NULL: none yet)
    cdef Py_ssize_t _ln  # its length, CRLF excluded

    def __cinit__(self):
        self._line = NULL

    def __init__(self, max_body, *, Py_ssize_t max_trailer_bytes=16384,
                 Py_ssize_t max_trailers=100):
        self._state = S_SIZE
        self._remaining = 0
        self._line_len = 0
        self.total = 0
        self.max_body = min(max_body, MAX_BODY_CAP)
        self.max_trailer_bytes = max_trailer_bytes
        self.max_trailers = max_trailers
        self._trailer_bytes = 0
        self._trailers = 0

    def __dealloc__(self):
        PyMem_Free(self._line)

    @property
    def done(self):
        return self._state == S_DONE

    def feed(self, object buf, Py_ssize_t pos, Py_ssize_t end):
        """Consume buf[pos:end]; return the offset where the body ended (or `end`)."""
        cdef Py_buffer view
        cdef int taken = borrow(buf, &view)  # no Python code runs while reading
        try:
            return self._feed(<const unsigned char*>view.buf, view.len, pos, end)
        finally:
            give_back(&view, taken)

    cdef Py_ssize_t _feed(self, const unsigned char* d, Py_ssize_t size, Py_ssize_t pos,
                          Py_ssize_t end) except -1:
        cdef Py_ssize_t before, i
        cdef long long rem, value
        cdef State st
        cdef unsigned char h
        if pos < 0 or end < pos or end > size:
            raise ValueError(E_RANGE)
        while pos < end:
            st = self._state
            if st == S_DATA:
                # chunk data is skipped by its length, never looked at
                rem = self._remaining
                if rem > end - pos:
                    self._remaining = rem - (end - pos)
                    pos = end
                else:
                    pos += rem
                    self._remaining = 0
                    self._state = S_DATA_CRLF
            elif st == S_DATA_CRLF:
                if self._line_len == 0 and end - pos >= 2 and d[pos] == CR and d[pos + 1] == LF:
                    pos += 2  # the usual case: the CRLF ending the data, whole in this read
                    self._state = S_SIZE
                    continue
                pos = self._take_line(d, pos, end)
                if self._lp == NULL:
                    continue
                if self._ln:
                    raise ChunkError(E_DATA_LONG)
                self._state = S_SIZE
            elif st == S_SIZE:
                if self._line_len == 0:
                    # the usual case: `1*15HEXDIG CRLF`, whole in this read
                    i = pos
                    value = 0
                    while i < end and i - pos < MAX_SIZE_DIGITS:
                        h = HEX[d[i]]
                        if h == 0:
                            break
                        value = value * 16 + (h - 1)
                        i += 1
                    if i > pos and i + 1 < end and d[i] == CR and d[i + 1] == LF:
                        pos = i + 2
                        self._got_size(value)
                        continue
                pos = self._take_line(d, pos, end)
                if self._lp == NULL:
                    continue
                self._size_line(self._lp, self._ln)
            elif st == S_TRAILER:
                before = pos
                pos = self._take_line(d, pos, end)
                self._trailer_bytes += pos - before
                if self._trailer_bytes > self.max_trailer_bytes:
                    raise TrailersTooLarge(E_TRAILER_BYTES.format(self.max_trailer_bytes))
                if self._lp == NULL:
                    continue
                if self._ln == 0:
                    self._state = S_DONE
                else:
                    self._trailers += 1
                    if self._trailers > self.max_trailers:
                        raise TrailersTooLarge(E_TRAILER_COUNT.format(self.max_trailers))
                    self._trailer_line(self._lp, self._ln)
            else:  # S_DONE
                break
        return pos

    cdef Py_ssize_t _take_line(self, const unsigned char* d, Py_ssize_t pos,
                               Py_ssize_t end) except -1:
        """Take one line from d[pos:end] (joined to a part kept from earlier reads).

        Sets _lp/_ln to the line without its CRLF, or _lp to NULL when the line goes on
        past `end` (its part is kept); returns the offset after what was taken.
        """
        cdef const unsigned char* nl = <const unsigned char*>memchr(d + pos, LF, end - pos)
        cdef Py_ssize_t n, length
        cdef const unsigned char* p
        if nl == NULL:
            n = end - pos
            if self._line_len + n > MAX_LINE:
                raise ChunkError(E_LINE_LONG)
            if self._line == NULL:
                self._line = <unsigned char*>PyMem_Malloc(MAX_LINE)
                if self._line == NULL:
                    raise MemoryError()
            memcpy(self._line + self._line_len, d + pos, n)
            self._line_len += n
            self._lp = NULL
            return end
        n = nl - d + 1 - pos
        if self._line_len:
            length = self._line_len + n
            self._line_len = 0
            if length > MAX_LINE:
                raise ChunkError(E_LINE_LONG)
            memcpy(self._line + length - n, d + pos, n)
            p = self._line
        else:
            length = n
            if length > MAX_LINE:
                raise ChunkError(E_LINE_LONG)
            p = d + pos
        # RFC 9112 §7.1: CRLF ends every framing line; no bare LF, no CR elsewhere
        if length < 2 or p[length - 2] != CR or memchr(p, CR, length - 2) != NULL:
            raise ChunkError(E_CRLF)
        self._lp = p
        self._ln = length - 2
        return pos + n

    cdef int _size_line(self, const unsigned char* p, Py_ssize_t n) except -1:
        """chunk-size [ chunk-ext ]: hex digits, BWS, then `;` and extensions."""
        cdef const unsigned char* semi = <const unsigned char*>memchr(p, b';', n)
        cdef Py_ssize_t k = n if semi == NULL else semi - p, i
        cdef long long value = 0
        cdef unsigned char h
        while k > 0 and (p[k - 1] == SP or p[k - 1] == HT):
            k -= 1
        if k == 0 or k > MAX_SIZE_DIGITS:
            raise ChunkError(E_SIZE.format((<const char*>p)[:min(k, 20)]))
        for i in range(k):
            h = HEX[p[i]]
            if h == 0:
                raise ChunkError(E_SIZE.format((<const char*>p)[:min(k, 20)]))
            value = value * 16 + (h - 1)
        if semi != NULL:
            for i in range(semi - p + 1, n):
                if not EXT_OK[p[i]]:
                    raise ChunkError(E_EXT)
        return self._got_size(value)

    cdef int _got_size(self, long long size) except -1:
        # wraps (instead of overflowing) only if fed on after an OverflowError
        self.total = <long long>(<unsigned long long>self.total + <unsigned long long>size)
        if self.total > self.max_body:
            raise OverflowError(self.total)
        if size == 0:
            self._state = S_TRAILER
        else:
            self._remaining = size
            self._state = S_DATA
        return 0

    cdef int _trailer_line(self, const unsigned char* p, Py_ssize_t n) except -1:
        """A trailer field: `name ":" value`, no CTL but HTAB, not a framing field."""
        cdef const unsigned char* colon = <const unsigned char*>memchr(p, b':', n)
        cdef Py_ssize_t i, a, b
        if colon == NULL or p[0] == SP or p[0] == HT:
            raise ChunkError(E_TRAILER)
        for i in range(n):
            if p[i] < 0x20 and p[i] != HT:
                raise ChunkError(E_TRAILER)
        a = 0
        b = colon - p
        while a < b and _space(p[a]):
            a += 1
        while b > a and _space(p[b - 1]):
            b -= 1
        if _not_trailer(p + a, b - a):
            # RFC 9110 §6.5.1: framing and routing fields cannot be trailers
            raise ChunkError(E_TRAILER_NAME)
        return 0
