# C types for ring_py.py, compiled through the _ring_c.py symlink (see ring.py).
import cython


cdef class HashRing:
    cdef readonly tuple node_ids
    cdef readonly Py_ssize_t n_nodes
    cdef readonly Py_ssize_t vnodes
    cdef Py_ssize_t _n_points
    cdef unsigned long long[::1] _hashes  # sorted point hashes
    cdef long long[::1] _owners  # node index of each point
    cdef unsigned long long[::1] _stamps  # per node: generation that last saw it
    cdef unsigned long long _gen

    @cython.locals(lo=Py_ssize_t, hi=Py_ssize_t, mid=Py_ssize_t)
    cdef Py_ssize_t _position(self, unsigned long long key) noexcept

    cpdef Py_ssize_t lookup(self, unsigned long long key)

    @cython.locals(
        n_nodes=Py_ssize_t,
        n_points=Py_ssize_t,
        gen="unsigned long long",
        i=Py_ssize_t,
        seen=Py_ssize_t,
        best=Py_ssize_t,
        best_load="long long",
        _step=Py_ssize_t,
        node=Py_ssize_t,
        load="long long",
    )
    cpdef Py_ssize_t lookup_bounded(
        self,
        unsigned long long key,
        object loads,
        object eligible,
        long long capacity,
    ) except -2
