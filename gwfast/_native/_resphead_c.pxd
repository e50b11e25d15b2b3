# The response head scanner's C interface: the compiled relay (gwfast/_upstream_c.pxd)
# reads its spans as C fields and calls scan() without a Python call.

from gwfast._native._headbase_c cimport HeadBase

cdef enum Field:
    F_OTHER, F_SESSION, F_CONTENT_LENGTH, F_TRANSFER_ENCODING, F_CONNECTION, F_HOP


cdef class ResponseScanner(HeadBase):
    cdef readonly Py_ssize_t max_head_bytes, max_headers
    cdef readonly int status, http_minor
    cdef readonly Py_ssize_t line_end, n_headers
    cdef readonly long long content_length
    cdef readonly bint chunked, conn_close, conn_keep_alive, conn_other
    cdef readonly Py_ssize_t session_start, session_end
    cdef Py_ssize_t _pend_start, _pend_pos

    cdef void _clear(self) noexcept
    cdef Py_ssize_t _scan(self, const unsigned char* d, Py_ssize_t size, Py_ssize_t start, Py_ssize_t end) except -1
    cdef Py_ssize_t _parse(self, const unsigned char* d, Py_ssize_t start, Py_ssize_t hend) except -1
    cdef int _name_error(self, const unsigned char* d, Py_ssize_t ls, Py_ssize_t lend) except -1
    cdef void _connection_tokens(self, const unsigned char* d, Py_ssize_t vs, Py_ssize_t ve) noexcept
    cpdef reset(self)
    cpdef Py_ssize_t scan(self, object buf, Py_ssize_t start, Py_ssize_t end) except -1
