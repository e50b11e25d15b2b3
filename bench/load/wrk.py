"""Run wrk once, pinned, and read its summary (throughput, latency percentiles, errors)."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

LUA = Path(__file__).with_name("sticky.lua")
UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6}


@dataclass
class WrkResult:
    rps: float
    p50_us: float
    p99_us: float
    requests: int
    non2xx: int
    socket_errors: int
    output: str

    @property
    def errors(self) -> int:
        return self.non2xx + self.socket_errors


def _latency(text: str, pct: str) -> float:
    m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    if not m:
        raise ValueError(f"no {pct}% latency in wrk output:\n{text}")
    return float(m.group(1)) * UNITS[m.group(2)]


def parse(text: str) -> WrkResult:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    total = re.search(r"^\s+(\d+) requests in", text, re.M)
    if not rps or not total:
        raise ValueError(f"unreadable wrk output:\n{text}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return WrkResult(
        rps=float(rps.group(1)),
        p50_us=_latency(text, "50"),
        p99_us=_latency(text, "99"),
        requests=int(total.group(1)),
        non2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=sum(map(int, sock.groups())) if sock else 0,
        output=text,
    )


def run_wrk(
    wrk: str,
    url: str,
    sessions_file: Path,
    *,
    cpus: set[int],
    duration: float,
    connections: int,
    threads: int = 1,
    tool: str = "echo",
    events: int = 10,
) -> WrkResult:
    argv = [
        "taskset",
        "-c",
        ",".join(map(str, sorted(cpus))),
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        url,
        "--",
        str(sessions_file),
        tool,
        str(events),
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
    return parse(out.stdout)
