# The request head scanner's C interface: the compiled relay (gwfast/_proxy_c.pxd) reads
# its spans as C fields and calls scan() without a Python call.

from gwfast._native._headbase_c cimport HeadBase

cdef enum Field:
    F_OTHER, F_HOST, F_SESSION, F_CONTENT_LENGTH, F_TRANSFER_ENCODING, F_CONNECTION, F_HOP
    F_PROTOCOL, F_MCP_METHOD, F_MCP_NAME, F_AUTHORIZATION, F_ACCEPT, F_LAST_EVENT_ID
    F_ORIGIN, F_CONTENT_TYPE, F_EXPECT, F_XFF


cdef class HeadScanner(HeadBase):
    cdef readonly Py_ssize_t max_headers, max_head_bytes
    cdef readonly Py_ssize_t line_start, method_start, method_end, target_start, target_end
    cdef readonly Py_ssize_t query_start
    cdef readonly int http_minor
    cdef readonly Py_ssize_t n_headers
    cdef readonly long long content_length
    cdef readonly bint chunked, conn_close, conn_keep_alive, conn_other
    cdef readonly Py_ssize_t host_start, host_end, session_start, session_end
    cdef readonly Py_ssize_t protocol_start, protocol_end, mcp_method_start, mcp_method_end
    cdef readonly Py_ssize_t mcp_name_start, mcp_name_end
    cdef readonly Py_ssize_t authorization_start, authorization_end, accept_start, accept_end
    cdef readonly Py_ssize_t last_event_id_start, last_event_id_end, origin_start, origin_end
    cdef readonly Py_ssize_t expect_start, expect_end, content_type_start, content_type_end
    cdef readonly Py_ssize_t xff_start, xff_end
    cdef Py_ssize_t _pend_start, _pend_pos, _pend_line, _pend_lines

    cdef void _clear(self) noexcept
    cdef Py_ssize_t _scan(self, const unsigned char* d, Py_ssize_t size, Py_ssize_t start, Py_ssize_t end) except -1
    cdef Py_ssize_t _parse(self, const unsigned char* d, Py_ssize_t line, Py_ssize_t hend) except -1
    cdef int _name_error(self, const unsigned char* d, Py_ssize_t ls, Py_ssize_t lend) except -1
    cdef void _first_span(self, Field kind, Py_ssize_t vs, Py_ssize_t ve) noexcept
    cdef void _connection_tokens(self, const unsigned char* d, Py_ssize_t vs, Py_ssize_t ve) noexcept
    cpdef reset(self)
    cpdef Py_ssize_t scan(self, object buf, Py_ssize_t start, Py_ssize_t end) except -1
