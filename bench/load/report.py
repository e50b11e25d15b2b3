"""Turn the samples of a load run into one table of medians, with ratios to nginx.

Absolute numbers on a shared 2-core machine move from run to run; ratios measured in the
same run, with targets alternating round by round, are what can be compared across runs.
Hence medians over rounds, and every figure also as a multiple of nginx's.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass

SCHEMES = {
    "one-core": "wrk, proxy and backend all on the load CPU",
    "proxy-core": "proxy alone on the proxy CPU; wrk and backend on the load CPU",
    "latency": "as one-core, with 1 connection",
}


@dataclass
class Sample:
    round: int
    scheme: str
    target: str
    rps: float
    p50_us: float
    p99_us: float
    requests: int
    non2xx: int
    socket_errors: int
    proxy_cpu_us: float | None  # proxy CPU time per request, µs (None for direct)
    backend_cpu_us: float


class Results:
    def __init__(self, targets: list[str]) -> None:
        self.targets = targets
        self.samples: list[Sample] = []

    def add(self, sample: Sample) -> None:
        self.samples.append(sample)

    def errors(self) -> int:
        return sum(s.non2xx + s.socket_errors for s in self.samples)

    def median(self, scheme: str, target: str, field: str) -> float | None:
        values = [
            getattr(s, field)
            for s in self.samples
            if s.scheme == scheme and s.target == target and getattr(s, field) is not None
        ]
        return statistics.median(values) if values else None

    def summary(self) -> str:
        """The one table: medians over rounds and ratios to nginx."""
        cols = [
            "target",
            "req/s 1-core",
            "×nginx",
            "req/s proxy-core",
            "×nginx",
            "proxy µs/req",
            "×nginx",
            "p50 µs 1-conn",
            "+p50 µs",
            "p99 µs 1-conn",
            "+p99 µs",
            "errors",
        ]
        errors: dict[str, int] = defaultdict(int)
        for s in self.samples:
            errors[s.target] += s.non2xx + s.socket_errors
        direct50 = self.median("latency", "direct", "p50_us")
        direct99 = self.median("latency", "direct", "p99_us")
        rows = []
        for t in self.targets:
            rps1 = self.median("one-core", t, "rps")
            rps2 = self.median("proxy-core", t, "rps")
            cpu = self.median("proxy-core", t, "proxy_cpu_us")
            p50 = self.median("latency", t, "p50_us")
            p99 = self.median("latency", t, "p99_us")
            rows.append(
                [
                    t,
                    _num(rps1),
                    self._ratio("one-core", "rps", rps1),
                    _num(rps2),
                    self._ratio("proxy-core", "rps", rps2),
                    _num(cpu, 1),
                    self._ratio("proxy-core", "proxy_cpu_us", cpu),
                    _num(p50),
                    _diff(p50, direct50),
                    _num(p99),
                    _diff(p99, direct99),
                    str(errors[t]),
                ]
            )
        return _table(cols, rows)

    def _ratio(self, scheme: str, field: str, value: float | None) -> str:
        ref = self.median(scheme, "nginx", field)
        if value is None or not ref:
            return "—"
        return f"{value / ref:.2f}"

    def runs(self) -> str:
        """Every run, for checking the medians and the per-run error counts."""
        cols = [
            "round",
            "scheme",
            "target",
            "req/s",
            "p50 µs",
            "p99 µs",
            "requests",
            "non-2xx",
            "socket errors",
            "proxy µs/req",
            "backend µs/req",
        ]
        rows = [
            [
                str(s.round),
                s.scheme,
                s.target,
                _num(s.rps),
                _num(s.p50_us),
                _num(s.p99_us),
                str(s.requests),
                str(s.non2xx),
                str(s.socket_errors),
                _num(s.proxy_cpu_us, 1),
                _num(s.backend_cpu_us, 1),
            ]
            for s in self.samples
        ]
        return _table(cols, rows)


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def _diff(value: float | None, ref: float | None) -> str:
    if value is None or ref is None:
        return "—"
    return f"{value - ref:+,.0f}"


def _table(cols: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)
    ]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(cols), sep, *(line(r) for r in rows)])
