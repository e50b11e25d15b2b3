# Byte-span helpers shared by the compiled head scanners (cimported, inlined: no module).
# One copy of what both need to hand a span of the caller's buffer back as bytes.

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.string cimport memcpy


cdef inline bytes span_bytes(object buf, Py_ssize_t start, Py_ssize_t end, str error):
    """bytes(buf[start:end]) in one allocation; ValueError(error) if the span is not in buf."""
    cdef Py_buffer view
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        if not 0 <= start <= end <= view.len:
            raise ValueError(error)
        return PyBytes_FromStringAndSize(<const char*>view.buf + start, end - start)
    finally:
        PyBuffer_Release(&view)


cdef inline bytes join_runs(object buf, const Py_ssize_t* runs, Py_ssize_t n, str error):
    """The (start, end) runs of buf, joined, in one allocation."""
    cdef Py_buffer view
    cdef Py_ssize_t i, total = 0
    cdef bytes out
    cdef char* p
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        for i in range(n):
            if not 0 <= runs[2 * i] <= runs[2 * i + 1] <= view.len:
                raise ValueError(error)
            total += runs[2 * i + 1] - runs[2 * i]
        out = PyBytes_FromStringAndSize(NULL, total)
        p = PyBytes_AS_STRING(out)
        for i in range(n):
            memcpy(p, <const char*>view.buf + runs[2 * i], runs[2 * i + 1] - runs[2 * i])
            p += runs[2 * i + 1] - runs[2 * i]
        return out
    finally:
        PyBuffer_Release(&view)
