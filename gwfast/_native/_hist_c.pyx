# cython: language_level=3
"""Request-duration histograms, compiled twin of `hist_py.py` (the reference, whose
docstrings explain the layout).

Why it exists: observing a duration runs on every proxied request. Here it is one call that
reads the monotonic clock in C (the clock of time.perf_counter_ns on Linux), picks the
bucket with a few compares and adds to two int64 slots of the shared region: no Python
object is made. `now()` must come from the same twin as `observe`.
"""

from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from .hist_py import BUCKETS, CLASSES, HSTRIDE, HSUM, NBUCKETS

cdef Py_ssize_t C_HSUM = HSUM
cdef Py_ssize_t C_HSTRIDE = HSTRIDE


cdef inline long long _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <long long>ts.tv_sec * 1000000000 + ts.tv_nsec


def now():
    """Nanoseconds on the monotonic clock: the `t0` that `observe` takes."""
    return _now()


cdef class Histograms:  # its fields: _hist_c.pxd
    def __init__(self, slots, Py_ssize_t at):
        self.m = slots
        if not 0 <= at <= self.m.shape[0] - len(CLASSES) * C_HSTRIDE:
            raise IndexError(f"histogram slots from {at} out of range")
        self.at = at

    cpdef long long clock(self):
        """`now()`, as a method: the compiled relay reads it with a C call."""
        return _now()

    cpdef observe(self, long status, long long t0):
        cdef long long ns = _now() - t0
        cdef Py_ssize_t c = status // 100 - 2
        cdef Py_ssize_t off, i
        if c < 0:
            c = 0
        elif c > 3:
            c = 3
        off = self.at + c * C_HSTRIDE  # in range: checked once, in __init__
        if ns <= 1000000:
            i = 0
        elif ns <= 2500000:
            i = 1
        elif ns <= 5000000:
            i = 2
        elif ns <= 10000000:
            i = 3
        elif ns <= 25000000:
            i = 4
        elif ns <= 50000000:
            i = 5
        elif ns <= 100000000:
            i = 6
        elif ns <= 250000000:
            i = 7
        elif ns <= 1000000000:
            i = 8
        elif ns <= 2500000000:
            i = 9
        elif ns <= 10000000000:
            i = 10
        else:
            i = 11
        self.m[off + i] += 1
        self.m[off + C_HSUM] += ns
