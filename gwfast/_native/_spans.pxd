# Buffer helpers shared by the compiled scanners and chunk reader (cimported, inlined: no
# module): one copy of how they read the caller's buffer and hand spans of it back as bytes.

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memcpy


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
