"""Hold N idle MCP GET streams open through one gwfast worker and measure what they cost.

    python -m bench.load.idle_streams --streams 10000

Issue 3's target: 10,000 concurrent idle streams through one worker with no errors, RSS
growth of at most 150 MB, and the per-request figures of the sticky workload unchanged while
they are open. The driver starts the fast backend (its GET stream sends one SSE comment and
then stays silent) and one gwfast worker, measures the sticky workload with wrk, opens the
streams (each must deliver its priming comment through the gateway), measures RSS and the
workload again, checks that every stream is still open, closes them, and checks that the
gateway holds no connection to the backend afterwards. Everything is on loopback and stops
by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import sys
import tempfile
import time
from pathlib import Path

import uvloop

from gwfast._testbase.sockets import count_established

from .mcp_client import open_sessions
from .procs import Children, process_tree
from .proxies import start_backend, start_gwfast
from .tools import ensure_tools
from .wrk import run_wrk

PRIMING = b": stream\n\n"


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
    return {
        "opened": len(streams),
        "errors": errors,
        "opened_in_s": opened_in,
        "still_open": still_open,
        "during": during,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, default=10000)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--no-install", action="store_true")
    args = ap.parse_args(argv)
    # the gateway holds two sockets a stream (client and endpoint): the hard open-file limit
    # bounds how many streams one worker can hold; take it all, and say so when it is short
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * args.streams + 200
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(need, hard), max(need, hard)))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        fit = (hard - 200) // 2
        print(
            f"the open-file limit here is {hard} (raising it needs CAP_SYS_RESOURCE): one "
            f"worker can hold {fit} streams, not {args.streams}; measuring {fit}",
            file=sys.stderr,
        )
        args.streams = fit
    tools = ensure_tools(install=not args.no_install)
    work = Path(tempfile.mkdtemp(prefix="gwfast-streams-"))
    with Children() as children:
        _, bport = start_backend(children, work, cpus={0})
        gw = start_gwfast(children, work, bport, cpus={1})
        port = int(gw.url.split(":")[2].split("/")[0])
        sessions = open_sessions(gw.url, 64)
        sfile = work / "sessions.txt"
        sfile.write_text("\n".join(sessions) + "\n")

        def measure():
            c0 = gw.proc.cpu_seconds()
            r = run_wrk(
                tools["wrk"],
                gw.url,
                sfile,
                cpus={0},
                duration=args.duration,
                connections=args.connections,
            )
            cpu = gw.proc.cpu_seconds() - c0
            return {
                "rps": r.rps,
                "us_per_req": cpu * 1e6 / max(r.requests, 1),
                "p50_us": r.p50_us,
                "p99_us": r.p99_us,
                "errors": r.errors,
            }

        rss0 = rss_mb(gw.proc.pid)
        before = measure()
        rss1 = rss_mb(gw.proc.pid)
        res = uvloop.run(
            hold_streams(
                port, "/bench/mcp", sessions, args.streams, lambda: (measure(), rss_mb(gw.proc.pid))
            )
        )
        during, rss2 = res["during"]
        deadline = time.monotonic() + 15
        while (left := count_established(gw.proc.pid, bport)) > 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        print(f"\n# {args.streams} idle GET streams through one gwfast worker\n")
        print("| | req/s | proxy µs/req | p50 µs | p99 µs | wrk errors | gateway RSS MB |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, m, rss in (
            ("before", before, rss1),
            (f"with {res['opened']} streams", during, rss2),
        ):
            print(
                f"| {name} | {m['rps']:,.0f} | {m['us_per_req']:.1f} | {m['p50_us']:.0f} | "
                f"{m['p99_us']:.0f} | {m['errors']} | {rss:.0f} |"
            )
        print(
            f"\nstreams opened {res['opened']}/{args.streams} in {res['opened_in_s']:.1f}s, "
            f"errors {len(res['errors'])}, still open after the load {res['still_open']}; "
            f"RSS at start {rss0:.0f} MB, growth with the streams {rss2 - rss1:.0f} MB; "
            f"gateway connections to the backend 15 s after closing: {left} "
            f"(idle pooled ones allowed)"
        )
        for e in res["errors"][:5]:
            print("  error:", e)
        ok = not res["errors"] and res["still_open"] == res["opened"] == args.streams
        return 0 if ok and during["errors"] == 0 and before["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
