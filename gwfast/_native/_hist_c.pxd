# The histograms' C interface: the compiled relay (gwfast/_proxy_c.pxd, through the model's
# Backend.hist) reads the clock and observes a duration without a Python call.

cdef class Histograms:
    cdef long long[::1] m
    cdef readonly Py_ssize_t at

    cpdef long long clock(self)
    cpdef observe(self, long status, long long t0)
