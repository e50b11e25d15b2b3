# C types for upstream.py, compiled through the _upstream_c.py symlink (see relay.py).

cimport cython

from gwfast._model_c cimport Endpoint as CEndpoint
from gwfast._native._resphead_c cimport ResponseScanner as CResponseScanner
from gwfast._proxy_c cimport ClientConnection as CClient

cdef int HEAD, BODY, DONE
cdef Py_ssize_t COPY_MAX
cdef CResponseScanner RESPONSE


cdef class Pool:
    cdef public object loop
    cdef public double keepalive
    cdef public Py_ssize_t max_idle
    cdef public dict idle
    cdef public Py_ssize_t open
    cdef object _reaper

    @cython.locals(q=list, up=Upstream)
    cpdef Upstream acquire(self, CEndpoint ep, double now)
    @cython.locals(q=list)
    cpdef release(self, Upstream up, double now)
    @cython.locals(q=list)
    cpdef forget(self, Upstream up)


cdef class Upstream:
    cdef public CEndpoint ep
    cdef public Pool pool
    cdef public object transport, send, is_closing
    cdef public CClient client
    cdef public int state
    cdef public bytearray head_buf
    cdef public long long body_left
    cdef public object chunks
    cdef public bint reframe, keep_alive, closed, streaming
    cdef public double idle_since
    cdef public int status
    cdef public bytes status_line

    cpdef begin(self, CClient client)
    cpdef close(self)
    cdef _received(self, bytes data)
    @cython.locals(has_sid=bint)
    cdef tuple _client_head(self, CClient client, CResponseScanner sc, bytes data)
    cdef bytes _status_line(self, CResponseScanner sc, bytes data)
    @cython.locals(n=Py_ssize_t, stop=Py_ssize_t, done=bint)
    cdef _body(self, CClient client, bytes data, Py_ssize_t pos, double now, tuple head=*)
    cdef _finish(self, CClient client, double now)
    cdef _bad(self, CClient client, str why)
