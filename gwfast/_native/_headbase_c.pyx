# cython: language_level=3
"""The part the compiled request and response scanners share (`HeadBase`, subclassed by
both): the kept runs of the last head scanned and the accessors that copy spans of the
scanned buffer, for the relay to write. The pure twins share `headscan_py.HeadBase`."""

from cpython.mem cimport PyMem_Free, PyMem_Malloc

from ._spans cimport assemble, join_runs, span_as, span_bytes

from .headscan_py import E_SPAN


cdef class HeadBase:
    def __cinit__(self, *args, **kwargs):
        self._kept = NULL

    def __dealloc__(self):
        PyMem_Free(self._kept)

    cdef int _alloc_runs(self, Py_ssize_t max_headers) except -1:
        """Room for the kept runs of a head of up to max_headers lines: (start, end) pairs;
        a run needs a kept line, so max_headers bounds them (as in headscan_py)."""
        cdef Py_ssize_t* kept = <Py_ssize_t*>PyMem_Malloc(
            2 * (max_headers + 1) * sizeof(Py_ssize_t))
        if kept == NULL:
            raise MemoryError()
        PyMem_Free(self._kept)
        self._kept = kept
        self.n_kept = 0
        return 0

    cpdef Py_ssize_t kept_start(self, Py_ssize_t i) except -1:
        if i < 0 or i >= self.n_kept:
            raise IndexError("kept run index out of range")
        return self._kept[2 * i]

    cpdef Py_ssize_t kept_end(self, Py_ssize_t i) except -1:
        if i < 0 or i >= self.n_kept:
            raise IndexError("kept run index out of range")
        return self._kept[2 * i + 1]

    cpdef bytes span(self, object buf, Py_ssize_t start, Py_ssize_t end):
        """bytes(buf[start:end]): a span this scanner found, as one new bytes object."""
        return span_bytes(buf, start, end, E_SPAN)

    cpdef bytes span_as(self, object buf, Py_ssize_t start, Py_ssize_t end, bytes known):
        """`known` itself when buf[start:end] equals it (no allocation), else span()."""
        return span_as(buf, start, end, known, E_SPAN)

    cpdef bytes kept(self, object buf):
        """The kept header lines of the last head scanned from buf, joined."""
        return join_runs(buf, self._kept, self.n_kept, E_SPAN)

    cpdef bytes assemble(self, tuple parts, object buf, Py_ssize_t start, Py_ssize_t end):
        """b"".join(parts) + buf[start:end] in one allocation (nothing from buf when it is
        None). A part may be None: the kept header lines of the head last scanned from buf
        (`kept(buf)`, not copied twice); or a tuple of parts. How the relay builds a head and
        the body after it."""
        return assemble(parts, buf, start, end, E_SPAN, self._kept, self.n_kept)
