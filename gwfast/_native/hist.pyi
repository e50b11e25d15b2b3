"""Types of the request-duration histograms (both twins share this surface)."""

from collections.abc import Callable
from typing import Final

__all__ = [
    "BUCKETS",
    "CLASSES",
    "COMPILED",
    "HSTRIDE",
    "HSUM",
    "NBUCKETS",
    "Histograms",
    "HistogramsC",
    "HistogramsPy",
    "now",
    "now_c",
    "now_py",
]

BUCKETS: Final[tuple[float, ...]]
CLASSES: Final[tuple[str, ...]]
NBUCKETS: Final[int]
HSUM: Final[int]
HSTRIDE: Final[int]
NO_EXTENSIONS: Final[bool]
COMPILED: Final[bool]

def now() -> int:
    """Nanoseconds on the monotonic clock: the `t0` that `Histograms.observe` takes."""

class Histograms:
    def __init__(self, slots: memoryview, at: int) -> None:
        """The histograms of one backend in `slots` (int64), from `at`; IndexError if they
        do not fit."""
    @property
    def at(self) -> int: ...
    def clock(self) -> int:
        """`now()`, as a method."""
    def observe(self, status: int, t0: int) -> None:
        """Count one relayed response of `status` whose request head was complete at `t0`
        (`now()`)."""

def now_py() -> int: ...

now_c: Callable[[], int] | None
HistogramsC: type[Histograms] | None
HistogramsPy: type[Histograms]
