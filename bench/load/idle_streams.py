"""Hold N idle MCP GET streams open through one gwfast worker, and through nginx, and measure.

    python -m bench.load.idle_streams --streams 10000

Issue 3's target: 10,000 concurrent idle streams through one worker with no errors, RSS
growth of at most 150 MB, and the per-request figures of the sticky workload unchanged while
they are open. The driver starts the fast backend (its GET stream sends one SSE comment and
then stays silent), then measures each target in turn, gwfast first and nginx second (run.py's
nginx configuration, with the worker's connection and open-file limits raised to hold the
streams): start the proxy, warm it up for 1 s, measure the sticky workload with wrk, open the
streams (each must deliver its priming comment through the proxy), measure RSS and the
workload again, check that every stream is still open, close them, and stop the proxy before
the next target starts. For gwfast it also checks that the gateway holds no connection to the
backend afterwards. nginx tells the proxy's cost from the machine's: a figure that moves as
much for nginx as for gwfast when thousands of sockets are open is the kernel's, not gwfast's.
Everything is on loopback and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import uvloop

from gwfast._testbase.sockets import count_established

from .mcp_client import open_sessions
from .procs import Children, process_tree
from .proxies import Target, start_backend, start_gwfast, start_nginx
from .tools import ensure_tools
from .wrk import run_wrk

PRIMING = b": stream\n\n"
MARGIN = 200  # open files a proxy worker needs besides its streams: listener, wrk, pool, logs


def rss_mb(pid: int) -> float:
    total = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


async def open_stream(
    port: int, path: str, sid: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Accept: text/event-stream\r\nMcp-Session-Id: {sid}\r\n"
        "MCP-Protocol-Version: 2025-06-18\r\n\r\n".encode()
    )
    data = b""
    while PRIMING not in data:
        chunk = await asyncio.wait_for(reader.read(4096), 30)
        if not chunk:
            raise ConnectionError(f"stream closed before its first event: {data[:200]!r}")
        data += chunk
    if not data.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(f"stream refused: {data[:200]!r}")
    return reader, writer


async def hold_streams(port: int, path: str, sessions: list[str], n: int, measure) -> dict:
    sem = asyncio.Semaphore(256)  # bounded concurrent opens: no SYN-queue overflow
    errors: list[str] = []

    async def one(i: int):
        async with sem:
            try:
                return await open_stream(port, path, sessions[i % len(sessions)])
            except (TimeoutError, OSError) as e:
                errors.append(f"{type(e).__name__}: {e}")
                return None

    t0 = time.monotonic()
    streams = [s for s in await asyncio.gather(*[one(i) for i in range(n)]) if s]
    opened_in = time.monotonic() - t0
    loop = asyncio.get_running_loop()
    during = await loop.run_in_executor(None, measure)
    # every stream must still be open and silent: a read that returns at once means EOF
    still_open = 0
    for reader, _ in streams:
        try:
            await asyncio.wait_for(reader.read(1), 0.001)
        except TimeoutError:
            still_open += 1
    for _, writer in streams:
        writer.close()
    # closed before the next target's streams are opened
    await asyncio.gather(*(w.wait_closed() for _, w in streams), return_exceptions=True)
    return {
        "opened": len(streams),
        "errors": errors,
        "opened_in_s": opened_in,
        "still_open": still_open,
        "during": during,
    }


def fit_streams(requested: int) -> int:
    """Raise the open-file limit for `requested` streams; return how many one worker can hold.

    A proxy worker holds two sockets a stream (the client's and the one to the backend), gwfast
    and nginx alike, and inherits the driver's limit (nginx's worker_rlimit_nofile cannot go
    above the hard limit either). The hard limit can only be raised with CAP_SYS_RESOURCE.
    """
    need = 2 * requested + MARGIN
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(need, hard), max(need, hard)))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return requested
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    fit = (hard - MARGIN) // 2
    print(
        f"the open-file limit here is {hard} (raising it needs CAP_SYS_RESOURCE): one "
        f"worker (gwfast's or nginx's) can hold {fit} streams, not {requested}; measuring {fit}",
        file=sys.stderr,
    )
    return fit


def measure_target(
    target: Target, work: Path, wrk: str, streams: int, args: argparse.Namespace
) -> dict:
    """Sticky workload before and while `streams` idle GET streams are open, back to back."""
    proc = target.proc
    assert proc is not None
    url = urlsplit(target.url)
    sessions = open_sessions(target.url, 64)
    sfile = work / f"sessions-{target.name}.txt"
    sfile.write_text("\n".join(sessions) + "\n")

    def measure(duration: float = args.duration) -> dict:
        c0 = proc.cpu_seconds()
        r = run_wrk(
            wrk, target.url, sfile, cpus={0}, duration=duration, connections=args.connections
        )
        cpu = proc.cpu_seconds() - c0
        return {
            "rps": r.rps,
            "us_per_req": cpu * 1e6 / max(r.requests, 1),
            "p50_us": r.p50_us,
            "p99_us": r.p99_us,
            "errors": r.errors,
        }

    rss0 = rss_mb(proc.pid)
    measure(1)  # warm-up, as run.py does: a fresh proxy's first second is not its steady state
    before = measure()
    rss1 = rss_mb(proc.pid)
    res = uvloop.run(
        hold_streams(url.port, url.path, sessions, streams, lambda: (measure(), rss_mb(proc.pid)))
    )
    during, rss2 = res.pop("during")
    return {**res, "before": before, "during": during, "rss0": rss0, "rss1": rss1, "rss2": rss2}


def ratio(new: float, old: float) -> str:
    return f"{new / old:.2f}" if old else "—"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, default=10000)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--no-install", action="store_true")
    args = ap.parse_args(argv)
    streams = fit_streams(args.streams)
    load1, load5, _ = os.getloadavg()  # above ~0.3, something else was running: suspect
    tools = ensure_tools(install=not args.no_install)
    work = Path(tempfile.mkdtemp(prefix="gwfast-streams-"))
    results: dict[str, dict] = {}
    with Children() as children:
        _, bport = start_backend(children, work, cpus={0})

        gw = start_gwfast(children, work, bport, cpus={1})
        results["gwfast"] = r = measure_target(gw, work, tools["wrk"], streams, args)
        deadline = time.monotonic() + 15
        while (left := count_established(gw.proc.pid, bport)) > 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        r["backend_left"] = left
        gw.proc.stop()
        children.children.remove(gw.proc)

        # nginx holds the streams in one worker too: every stream is two open files and two
        # connections (worker_connections counts client and upstream ones alike). Once no more
        # than 1/16 of worker_connections are free, nginx closes "reusable" connections to make
        # room (ngx_drain_connections: accepted ones still waiting for their request, idle
        # keep-alive ones such as wrk's between requests), so give it 1/8 more connections than
        # it will use; the open files stay capped by worker_rlimit_nofile (nginx only warns
        # that worker_connections exceed it)
        files = 2 * streams + MARGIN
        ngx = start_nginx(
            children,
            work,
            tools["nginx"],
            bport,
            cpus={1},
            worker_connections=files + files // 8,
            worker_rlimit_nofile=files,
            read_timeout=max(120, 2 * round(args.duration) + 60),  # idle streams outlive a run
        )
        results["nginx"] = measure_target(ngx, work, tools["wrk"], streams, args)

    print(f"\n# {streams} idle GET streams through one proxy worker: gwfast, then nginx\n")
    print(f"load average at start (1, 5 min): {load1:.2f}, {load5:.2f}\n")
    print(
        "| target | | req/s | ×before | proxy µs/req | ×before | p50 µs | ×before "
        "| p99 µs | ×before | wrk errors | proxy RSS MB | +RSS MB |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        b, d = r["before"], r["during"]
        print(
            f"| {name} | before | {b['rps']:,.0f} | — | {b['us_per_req']:.1f} | — | "
            f"{b['p50_us']:.0f} | — | {b['p99_us']:.0f} | — | {b['errors']} | "
            f"{r['rss1']:.0f} | — |"
        )
        print(
            f"| {name} | with {r['opened']} streams | {d['rps']:,.0f} | "
            f"{ratio(d['rps'], b['rps'])} | {d['us_per_req']:.1f} | "
            f"{ratio(d['us_per_req'], b['us_per_req'])} | {d['p50_us']:.0f} | "
            f"{ratio(d['p50_us'], b['p50_us'])} | {d['p99_us']:.0f} | "
            f"{ratio(d['p99_us'], b['p99_us'])} | {d['errors']} | {r['rss2']:.0f} | "
            f"{r['rss2'] - r['rss1']:+.0f} |"
        )
    print()
    ok = True
    for name, r in results.items():
        line = (
            f"{name}: streams opened {r['opened']}/{streams} in {r['opened_in_s']:.1f}s, "
            f"errors {len(r['errors'])}, still open after the load {r['still_open']}; "
            f"RSS at start {r['rss0']:.0f} MB, "
            f"growth with the streams {r['rss2'] - r['rss1']:.0f} MB"
        )
        if "backend_left" in r:
            line += (
                f"; gateway connections to the backend 15 s after closing: {r['backend_left']} "
                "(idle pooled ones allowed)"
            )
        print(line)
        for e in r["errors"][:5]:
            print("  error:", e)
        ok = ok and not r["errors"] and r["still_open"] == r["opened"] == streams
        ok = ok and r["before"]["errors"] == 0 and r["during"]["errors"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
