# What the compiled request and response scanners share (both subclass HeadBase): the kept
# runs of the last head scanned, and the accessors that copy spans of the scanned buffer.

cdef class HeadBase:
    cdef readonly Py_ssize_t n_kept
    cdef Py_ssize_t* _kept  # (start, end) pairs, room for max_headers + 1 runs

    cdef int _alloc_runs(self, Py_ssize_t max_headers) except -1
    cpdef bytes span(self, object buf, Py_ssize_t start, Py_ssize_t end)
    cpdef bytes span_as(self, object buf, Py_ssize_t start, Py_ssize_t end, bytes known)
    cpdef bytes kept(self, object buf)
    cpdef bytes assemble(self, tuple parts, object buf, Py_ssize_t start, Py_ssize_t end)
    cpdef Py_ssize_t kept_start(self, Py_ssize_t i) except -1
    cpdef Py_ssize_t kept_end(self, Py_ssize_t i) except -1
