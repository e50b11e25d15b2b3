# C types for proxy.py, compiled through the _proxy_c.py symlink (see relay.py).

cimport cython

from gwfast._model_c cimport Backend as CBackend
from gwfast._model_c cimport Endpoint as CEndpoint
from gwfast._native._headscan_c cimport HeadScanner as CHeadScanner
from gwfast._upstream_c cimport Pool as CPool
from gwfast._upstream_c cimport Upstream as CUpstream

cdef int IDLE, HEAD, CONNECTING, FORWARD, CLOSED
cdef int P_BUFFER, P_UPSTREAM
cdef bytes POST, CONTINUE, TARGET_REST
cdef Py_ssize_t KEEP_FREE, COPY_MAX, SESSIONS_KEPT


cdef class ClientConnection:
    cdef public object gw
    cdef public object loop, clock, send
    cdef public CHeadScanner scanner
    cdef public Py_ssize_t size, std
    cdef public bytearray buf
    cdef public object mv
    cdef public Py_ssize_t start, end, scan_pos
    cdef public int state
    cdef public object transport
    cdef public bytes peer, xff_line
    cdef public CUpstream upstream
    cdef public CEndpoint ep
    cdef public CBackend backend
    cdef public long long body_left
    cdef public object chunks
    cdef public bint request_done, close_after, sent_head
    cdef public bytes session_token, backend_sid
    cdef public int paused
    cdef public double deadline, timer_at
    cdef public object timer
    cdef public object connect_task
    cdef public bytes method, target_rest
    cdef public tuple head_rest
    cdef public list free
    cdef public tuple lease
    cdef public bytes host_ok
    cdef public object host_ok_by
    cdef public bytes route_path
    cdef public object route_table, settings_of
    cdef public CBackend route_backend
    cdef public long long max_body
    cdef public dict routes
    cdef public object hosts, origins
    cdef public CPool pool
    cdef public object timeouts
    cdef public double t_idle, t_header, t_body, t_response, t_read
    cdef public bytes place_key
    cdef public long long t0

    cpdef internal_error(self)
    cpdef pause_reading(self, int reason)
    cpdef resume_reading(self, int reason)
    cpdef _process(self)
    @cython.locals(n=cython.longlong, done=bint)
    cdef bint _advance(self) except -1
    cdef _body(self, double now)
    cdef _send_body(self, tuple head=*)
    cdef _release_buffer(self)
    cdef _new_buffer(self)
    cdef _make_room(self, bint force=*)
    @cython.locals(
        known=tuple, method=bytes, target=bytes, path=bytes, qs=Py_ssize_t, host=bytes,
        token=bytes, routes=dict, sessions=dict, backend=CBackend, ep=CEndpoint,
    )
    cdef _on_head(self, Py_ssize_t head_end)
    cdef tuple _open_session(self, CBackend backend, bytes token)
    cdef tuple _head_rest(self, bytes host)
    cdef _keep_head(self)
    cdef _header_value(self, bytes name)
    cdef CEndpoint _choose(self, CBackend backend, object exclude)
    @cython.locals(now=double)
    cdef _dispatch(self, CEndpoint ep)
    cdef _attach(self, CUpstream up, double now)
    cdef _local(self, bytes method, bytes path)
    cdef _answer(self, bytes response)
    @cython.locals(now=double)
    cpdef double upstream_activity(self) except? -1.0
    cpdef bytes session_for_client(self, bytes value)
    cpdef response_head(self, bytes head, object body)
    cpdef write_upstream(self, object data)
    cpdef response_done(self, CUpstream up, bint reusable, double now)
    cpdef upstream_failed(self, CUpstream up, str why, int up_state)
    cdef _request_finished(self, double now)
    cdef _end_request(self)
    cdef _drop_upstream(self)
    cpdef close(self)
    cdef _close(self)
    cdef str _too_large(self)
    cdef _arm(self, double deadline)
    cdef _load_settings(self)
