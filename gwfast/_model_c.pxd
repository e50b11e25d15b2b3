# C types for model_py.py, compiled through the _model_c.py symlink (see model.py).

cimport cython

from gwfast._native._hist_c cimport Histograms as CHistograms


cdef class Endpoint:
    cdef public str url, host
    cdef public int port
    cdef public bytes path, authority, ident
    cdef public Py_ssize_t index
    cdef public Backend backend
    cdef public bint healthy, checked
    cdef public long long outstanding
    cdef public int fails, oks
    cdef public tuple carried
    cdef public str last_check
    cdef public bint reachable, passing

    cpdef long long load(self)


cdef class Backend:
    cdef public str name, placement
    cdef public bytes name_b, placement_header
    cdef public object cfg
    cdef public bint session_affinity
    cdef public tuple endpoints
    cdef public dict by_ident, sessions
    cdef public object ring, loads, _rand, m
    cdef public CHistograms hist
    cdef public bytearray eligible
    cdef public Py_ssize_t m_base
    cdef public str note
    cdef public bint panic

    cpdef set_health(self, Endpoint ep, bint healthy)
    cpdef bint any_healthy(self)
    @cython.locals(e=Endpoint, was=bint, passing=bint, panic=bint, changed=int)
    cpdef int record_check(self, Endpoint ep, str why, bint reachable)
    cdef _route(self, Endpoint ep, bint routable)
    @cython.locals(e=Endpoint)
    cpdef str unavailable_message(self)
    cpdef Endpoint place(self, object key, object exclude=*)
    @cython.locals(n=Py_ssize_t, i=Py_ssize_t, j=Py_ssize_t, k=Py_ssize_t, e=Endpoint, a=Endpoint, b=Endpoint)
    cpdef Endpoint pick_least_loaded(self, object exclude=*)
