# Buffer helpers shared by the compiled scanners and chunk reader (cimported, inlined: no
# module): one copy of how they read the caller's buffer and hand spans of it back as bytes.

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint64_t
from libc.string cimport memcmp, memcpy


cdef inline int borrow(object buf, Py_buffer* view) except -1:
    """Point `view` at buf's bytes: directly for bytes and bytearray (what the relay passes),
    else through the buffer protocol. Returns 1 when the buffer was taken (give_back(view, 1)
    releases it). No Python code may run in between, so the bytes cannot move."""
    if type(buf) is bytearray:
        view.buf = PyByteArray_AS_STRING(buf)
        view.len = PyByteArray_GET_SIZE(buf)
        return 0
    if type(buf) is bytes:
        view.buf = PyBytes_AS_STRING(buf)
        view.len = PyBytes_GET_SIZE(buf)
        return 0
    PyObject_GetBuffer(buf, view, PyBUF_SIMPLE)
    return 1


cdef inline void give_back(Py_buffer* view, int taken) noexcept:
    if taken:
        PyBuffer_Release(view)


cdef inline bytes _join(const char* d, Py_ssize_t size, const Py_ssize_t* runs, Py_ssize_t n,
                        str error):
    cdef Py_ssize_t i, total = 0
    cdef bytes out
    cdef char* p
    for i in range(n):
        if not 0 <= runs[2 * i] <= runs[2 * i + 1] <= size:
            raise ValueError(error)
        total += runs[2 * i + 1] - runs[2 * i]
    out = PyBytes_FromStringAndSize(NULL, total)
    p = PyBytes_AS_STRING(out)
    for i in range(n):
        memcpy(p, d + runs[2 * i], runs[2 * i + 1] - runs[2 * i])
        p += runs[2 * i + 1] - runs[2 * i]
    return out


cdef inline bytes join_runs(object buf, const Py_ssize_t* runs, Py_ssize_t n, str error):
    """The (start, end) runs of buf, joined, in one allocation; ValueError(error) if a run
    is not in buf."""
    cdef Py_buffer view
    cdef int taken = borrow(buf, &view)
    try:
        return _join(<const char*>view.buf, view.len, runs, n, error)
    finally:
        give_back(&view, taken)


cdef inline bytes span_bytes(object buf, Py_ssize_t start, Py_ssize_t end, str error):
    """bytes(buf[start:end]) in one allocation; ValueError(error) if the span is not in buf."""
    cdef Py_ssize_t run[2]
    run[0] = start
    run[1] = end
    return join_runs(buf, run, 1, error)


cdef inline bytes span_as(object buf, Py_ssize_t start, Py_ssize_t end, bytes known, str error):
    """`known` itself when buf[start:end] has its bytes, else span_bytes(): a value that
    repeats (a connection's Host, its last path) costs no allocation and compares by
    identity."""
    cdef Py_buffer view
    cdef int taken = borrow(buf, &view)
    cdef bint same
    try:
        if not 0 <= start <= end <= view.len:
            raise ValueError(error)
        same = known is not None and PyBytes_GET_SIZE(known) == end - start and memcmp(
            <const char*>view.buf + start, PyBytes_AS_STRING(known), end - start) == 0
    finally:
        give_back(&view, taken)
    return known if same else span_bytes(buf, start, end, error)


cdef inline Py_ssize_t _parts_size(tuple parts, bint nested, Py_ssize_t* n_kept_parts) except -1:
    """The bytes of the parts; the None parts are counted in n_kept_parts."""
    cdef Py_ssize_t total = 0
    for p in parts:
        if type(p) is bytes:
            total += PyBytes_GET_SIZE(p)
        elif p is None:
            n_kept_parts[0] += 1
        elif nested and type(p) is tuple:
            total += _parts_size(<tuple>p, False, n_kept_parts)
        else:
            raise TypeError("parts are bytes, None, or tuples of them one level deep")
    return total


cdef inline char* _copy_parts(char* out, tuple parts, const char* d, const Py_ssize_t* runs,
                              Py_ssize_t n_runs) noexcept:
    cdef Py_ssize_t n, i
    for p in parts:
        if type(p) is bytes:
            n = PyBytes_GET_SIZE(p)
            memcpy(out, PyBytes_AS_STRING(p), n)
            out += n
        elif p is None:
            for i in range(n_runs):
                n = runs[2 * i + 1] - runs[2 * i]
                memcpy(out, d + runs[2 * i], n)
                out += n
        else:
            out = _copy_parts(out, <tuple>p, d, runs, n_runs)
    return out


cdef inline bytes assemble(tuple parts, object buf, Py_ssize_t start, Py_ssize_t end,
                           str error, const Py_ssize_t* runs, Py_ssize_t n_runs):
    """The parts then buf[start:end] (nothing when buf is None), joined in one allocation: a
    rebuilt head and the body bytes that follow it become one write without intermediate
    copies. A part is bytes, or None for the (start, end) `runs` of buf (a scanner's kept
    header lines, copied straight from the buffer they were scanned in), or a tuple of those
    one level deep. ValueError(error) if the span or a run used is not in buf, TypeError if
    a part is anything else or a None part comes without buf."""
    cdef Py_ssize_t n_kept_parts = 0, kept = 0, i
    cdef Py_ssize_t total = _parts_size(parts, True, &n_kept_parts)
    cdef Py_buffer view
    cdef int taken = 0
    cdef bytes out
    cdef char* p
    if buf is None:
        if n_kept_parts:
            raise TypeError("a None part stands for kept lines of buf: buf is needed")
        out = PyBytes_FromStringAndSize(NULL, total)
        _copy_parts(PyBytes_AS_STRING(out), parts, NULL, NULL, 0)
        return out
    taken = borrow(buf, &view)
    try:
        if not 0 <= start <= end <= view.len:
            raise ValueError(error)
        if n_kept_parts:
            for i in range(n_runs):
                if not 0 <= runs[2 * i] <= runs[2 * i + 1] <= view.len:
                    raise ValueError(error)
                kept += runs[2 * i + 1] - runs[2 * i]
        out = PyBytes_FromStringAndSize(NULL, total + n_kept_parts * kept + end - start)
        p = _copy_parts(PyBytes_AS_STRING(out), parts, <const char*>view.buf, runs, n_runs)
        memcpy(p, <const char*>view.buf + start, end - start)
        return out
    finally:
        give_back(&view, taken)


cdef inline bint field_value_ok(const unsigned char* d, Py_ssize_t vs, Py_ssize_t ve,
                                const unsigned char* table) noexcept:
    """Every byte of d[vs:ve] allowed by `table` (a field-value: HTAB, SP, VCHAR, obs-text).
    Eight bytes at a time while none is below 0x20 or is DEL, the only bytes the table
    refuses; from the first word with such a byte on, byte by byte (HTAB is allowed)."""
    cdef uint64_t w, x
    cdef Py_ssize_t i = vs
    while i + 8 <= ve:
        memcpy(&w, d + i, 8)
        x = w ^ 0x7F7F7F7F7F7F7F7FULL  # a DEL byte becomes zero
        if ((w - 0x2020202020202020ULL) | (x - 0x0101010101010101ULL)) & ~w & 0x8080808080808080ULL:
            break
        i += 8
    while i < ve:
        if not table[d[i]]:
            return False
        i += 1
    return True
