"""Request-duration histograms in a metrics region: the one metrics cost paid per request.

Why a twin: observing a duration is a clock read, a bucket search and two int64 stores. As
Python bytecode that is some fifty interpreter steps and a few big-int allocations on every
proxied request (about 0.8 µs of the proxy's CPU in the load driver); compiled, it is one
call. This is the pure twin and the reference; `_hist_c.pyx` is the compiled one, with the
clock read in C.

Layout, from a backend's block (`gwfast.metrics`): at `hist`, for each status class 2xx,
3xx, 4xx, 5xx, NBUCKETS counters (`le` 1 ms ... 10 s, then +Inf) and the sum of the
durations in nanoseconds. Counters are not cumulative here; the renderer adds them up.
Single writer: only the worker that owns the region calls `observe`.
"""

from __future__ import annotations

from time import perf_counter_ns as now  # `t0` for observe: take it from the same twin

# upper bounds (seconds) of the buckets; `observe` has them as nanoseconds, unrolled
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0)
NBUCKETS = 12  # and +Inf
HSUM = 12  # after a class's buckets: the sum of its durations in nanoseconds
HSTRIDE = 13
CLASSES = ("2xx", "3xx", "4xx", "5xx")


class Histograms:
    """The histograms of one backend: `slots` is its region's int64 view, `at` where they
    start in it (the backend's block plus the histograms' offset)."""

    def __init__(self, slots: memoryview, at: int) -> None:
        if not 0 <= at <= len(slots) - len(CLASSES) * HSTRIDE:
            raise IndexError(f"histogram slots from {at} out of range")
        self.m = slots
        self.at = at

    def clock(self) -> int:
        """`now()`, as a method: the compiled relay reads it with a C call."""
        return now()

    def observe(self, status: int, t0: int) -> None:
        """A response with `status` relayed; its request head was complete at `t0` (this
        twin's `now()`)."""
        ns = now() - t0
        c = status // 100 - 2
        if c < 0:  # 1xx is never relayed as a final answer
            c = 0
        elif c > 3:  # 600 and above are no HTTP statuses: counted with 5xx
            c = 3
        off = self.at + c * HSTRIDE
        # Prometheus `le`: the first bucket whose bound is at or above the duration
        if ns <= 1_000_000:
            i = 0
        elif ns <= 2_500_000:
            i = 1
        elif ns <= 5_000_000:
            i = 2
        elif ns <= 10_000_000:
            i = 3
        elif ns <= 25_000_000:
            i = 4
        elif ns <= 50_000_000:
            i = 5
        elif ns <= 100_000_000:
            i = 6
        elif ns <= 250_000_000:
            i = 7
        elif ns <= 1_000_000_000:
            i = 8
        elif ns <= 2_500_000_000:
            i = 9
        elif ns <= 10_000_000_000:
            i = 10
        else:
            i = 11
        m = self.m
        m[off + i] += 1
        m[off + HSUM] += ns
