"""The load driver: gwfast beside nginx and haproxy in one run, reported as ratios.

    python -m bench.load.run --duration 10 --rounds 3

Starts the backend (the Python fast backend, or with --backend nginx an nginx serving fixed
answers), then every proxy in front of it, opens sessions through each, checks each routes
JSON, SSE and DELETE right, refuses to go on when a gwfast process runs pure-Python twins
(unless --allow-pure), and runs the same wrk workload against each target, alternating
targets inside every round (the order rotates each round) so slow drift of the machine hits
all targets alike. Three pinnings (see README.md): one-core, proxy-core (with the proxy's CPU
time per request) and 1-connection latency. Prints one table of medians and writes it, with
every run, to bench/results/<date>.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from . import nginx_backend, proxies, twins
from .mcp_client import check_target, open_sessions
from .procs import Child, Children, in_workdir
from .report import SCHEMES, Results, Sample
from .tools import ensure_tools, versions
from .wrk import run_wrk

RESULTS = Path(__file__).resolve().parents[1] / "results"
TARGETS = ("direct", "gwfast", "nginx", "haproxy")
BACKENDS = {
    "python": "python (bench/load/fast_backend.py: uvloop + httptools + msgspec)",
    "nginx": "nginx (bench/load/nginx_backend.py: one worker, fixed answers, echoed ids)",
}
PURE_BANNER = "PURE TWINS: a gwfast process ran pure-Python twins; not the compiled build's figures"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.load.run", description=__doc__)
    ap.add_argument("--duration", type=float, default=10, help="seconds per wrk run (10)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; medians are over them (3)")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    ap.add_argument("--sessions", type=int, default=64, help="sessions per target (64)")
    ap.add_argument(
        "--workload",
        choices=("sticky", "sticky-sse"),
        default="sticky",
        help="sticky: JSON tools/call; sticky-sse: SSE answers of --events events",
    )
    ap.add_argument("--events", type=int, default=10, help="events per SSE answer (10)")
    ap.add_argument("--targets", default=",".join(TARGETS), help="comma-separated subset")
    ap.add_argument("--schemes", default=",".join(SCHEMES), help="comma-separated subset")
    ap.add_argument("--load-cpu", type=int, default=0, help="CPU of wrk and backend (0)")
    ap.add_argument("--proxy-cpu", type=int, default=1, help="CPU of the proxy (1)")
    ap.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per target")
    ap.add_argument("--no-install", action="store_true", help="never apt-get missing tools")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (configs, logs)")
    ap.add_argument(
        "--backend",
        choices=("python", "nginx"),
        default="python",
        help="python: bench/load/fast_backend.py (default); nginx: one nginx worker serving "
        "fixed answers (bench/load/nginx_backend.py), cheaper than any proxy",
    )
    ap.add_argument(
        "--no-session-echo",
        action="store_true",
        help="the backend sends Mcp-Session-Id only on initialize (by default it echoes the "
        "session's id on every answer, as the SDK servers do)",
    )
    ap.add_argument(
        "--allow-pure",
        action="store_true",
        help="measure even when a gwfast process runs pure-Python twins (the report says so)",
    )
    return ap.parse_args(argv)


def machine() -> dict[str, str]:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    rev = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=proxies.REPO
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "gwfast"], capture_output=True, text=True, cwd=proxies.REPO
    ).stdout.strip()
    load1, load5, _ = os.getloadavg()
    return {
        "cpus": str(os.cpu_count()),
        "cpu model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "gwfast commit": (rev or "?") + (" + uncommitted changes" if dirty else ""),
        "load average at start (1, 5 min)": f"{load1:.2f}, {load5:.2f}",
        "GWFAST_NO_EXTENSIONS": os.environ.get("GWFAST_NO_EXTENSIONS", "unset"),
    }


def start_targets(
    children: Children,
    workdir: Path,
    paths: dict[str, str],
    backend: int,
    names: list[str],
    cpus: set[int],
    *,
    haproxy_no_delay: bool = False,
) -> tuple[list[proxies.Target], list[str]]:
    """Start the proxies; one that fails is reported and left out, not fatal."""
    targets, skipped = [], []
    for name in names:
        try:
            if name == "direct":
                targets.append(proxies.Target("direct", f"http://127.0.0.1:{backend}/mcp", None))
            elif name == "nginx":
                targets.append(
                    proxies.start_nginx(children, workdir, paths["nginx"], backend, cpus=cpus)
                )
            elif name == "haproxy":
                targets.append(
                    proxies.start_haproxy(
                        children,
                        workdir,
                        paths["haproxy"],
                        backend,
                        cpus=cpus,
                        no_delay=haproxy_no_delay,
                    )
                )
            elif name == "gwfast":
                targets.append(proxies.start_gwfast(children, workdir, backend, cpus=cpus))
            elif name == "gwfast-control":
                targets.append(proxies.start_gwfast_control(children, workdir, backend, cpus=cpus))
            else:
                raise ValueError(f"unknown target {name!r}")
        except (RuntimeError, TimeoutError, OSError) as exc:
            skipped.append(f"{name}: {exc}")
            print(f"!! {name} left out: {exc}", file=sys.stderr)
    return targets, skipped


class Refused(Exception):
    """The run would measure the wrong thing (pure-Python twins); the message says why."""


def start_backend(
    children: Children, workdir: Path, args: argparse.Namespace, paths: dict[str, str]
) -> tuple[Child, int]:
    """The backend `--backend` names, on the load CPU, echoing session ids unless told not to."""
    load, echo = {args.load_cpu}, not args.no_session_echo
    if args.backend == "nginx":
        return nginx_backend.start(
            children, workdir, paths["nginx"], cpus=load, events=args.events, echo=echo
        )
    return proxies.start_backend(children, workdir, cpus=load, echo=echo)


def check_twins(
    targets: list[proxies.Target], info: dict[str, str], args: argparse.Namespace
) -> list[twins.Twins]:
    """Print and record the twins of every gwfast target; Refused when one runs a pure twin
    and --allow-pure was not given."""
    found = [
        twins.read(t.name, t.proc.log)
        for t in targets
        if t.name.startswith("gwfast") and t.proc is not None
    ]
    for tw in found:
        info[f"twins, {tw.target}"] = tw.line()
        print(f"{tw.target} twins: {tw.line()}", flush=True)
    message = twins.refusal(found)
    if message and not args.allow_pure:
        raise Refused(message)
    if message:
        print(f"!! PURE TWINS, measuring anyway (--allow-pure): {message}", file=sys.stderr)
    return found


def prepare(
    target: proxies.Target, workdir: Path, args: argparse.Namespace, *, backend: str = "python"
) -> Path:
    """Open sessions through target (retrying while it becomes ready), check it, save the ids.
    `backend` is the backend's kind: the nginx backend keeps no sessions (README.md)."""
    deadline = time.monotonic() + 15
    while True:
        try:
            sessions = open_sessions(target.url, args.sessions)
            break
        except (RuntimeError, OSError) as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot open sessions: {exc}") from None
            time.sleep(0.5)
    check_target(target.url, sessions, events=args.events, tracks_sessions=backend == "python")
    path = workdir / f"sessions-{target.name}.txt"
    path.write_text("\n".join(sessions) + "\n")
    return path


def measure(
    target: proxies.Target,
    backend,
    sessions: Path,
    scheme: str,
    rnd: int,
    args: argparse.Namespace,
    wrk: str,
    duration: float,
) -> Sample:
    load, proxy_cpu = {args.load_cpu}, {args.proxy_cpu}
    backend.pin(load)
    if target.proc is not None:
        target.proc.pin(proxy_cpu if scheme == "proxy-core" else load)
    conns = 1 if scheme == "latency" else args.connections
    before = (target.proc.cpu_seconds() if target.proc else 0.0, backend.cpu_seconds())
    tool = "stream" if args.workload == "sticky-sse" else "echo"
    res = run_wrk(
        wrk,
        target.url,
        sessions,
        cpus=load,
        duration=duration,
        connections=conns,
        tool=tool,
        events=args.events,
    )
    after = (target.proc.cpu_seconds() if target.proc else 0.0, backend.cpu_seconds())
    per_req = 1e6 / max(res.requests, 1)
    return Sample(
        round=rnd,
        scheme=scheme,
        target=target.name,
        rps=res.rps,
        p50_us=res.p50_us,
        p99_us=res.p99_us,
        requests=res.requests,
        non2xx=res.non2xx,
        socket_errors=res.socket_errors,
        proxy_cpu_us=(after[0] - before[0]) * per_req if target.proc else None,
        backend_cpu_us=(after[1] - before[1]) * per_req,
    )


def run(args: argparse.Namespace, workdir: Path) -> tuple[Results, list[str], dict[str, str], bool]:
    paths = ensure_tools(install=not args.no_install)
    info = {**machine(), **versions(paths)}
    info["backend"] = BACKENDS[args.backend] + (
        "; Mcp-Session-Id only on initialize (--no-session-echo)"
        if args.no_session_echo
        else "; echoes Mcp-Session-Id on every answer of a session"
    )
    schemes = [s for s in args.schemes.split(",") if s]
    load = {args.load_cpu}
    with Children() as children:
        backend, port = start_backend(children, workdir, args, paths)
        names = [t for t in args.targets.split(",") if t]
        targets, skipped = start_targets(children, workdir, paths, port, names, load)
        pure = any(tw.pure for tw in check_twins(targets, info, args))
        sessions: dict[str, Path] = {}
        for t in list(targets):
            try:
                sessions[t.name] = prepare(t, workdir, args, backend=args.backend)
            except (AssertionError, RuntimeError, OSError) as exc:
                skipped.append(f"{t.name}: failed the routing check: {exc}")
                print(f"!! {t.name} left out, failed the routing check: {exc}", file=sys.stderr)
                targets.remove(t)
        results = Results([t.name for t in targets])
        if args.warmup > 0:
            for t in targets:
                measure(
                    t, backend, sessions[t.name], "one-core", 0, args, paths["wrk"], args.warmup
                )
        for rnd in range(1, args.rounds + 1):
            shift = (rnd - 1) % max(len(targets), 1)
            order = targets[shift:] + targets[:shift]
            for scheme in schemes:
                for t in order:
                    s = measure(
                        t, backend, sessions[t.name], scheme, rnd, args, paths["wrk"], args.duration
                    )
                    results.add(s)
                    flag = "" if not (s.non2xx or s.socket_errors) else "  <-- ERRORS"
                    print(
                        f"round {rnd} {scheme:>10} {t.name:>8}: {s.rps:>10,.0f} req/s "
                        f"p50 {s.p50_us:,.0f}µs p99 {s.p99_us:,.0f}µs "
                        f"non-2xx {s.non2xx} socket errors {s.socket_errors}{flag}",
                        flush=True,
                    )
    return results, skipped, info, pure


def markdown(
    results: Results,
    skipped: list[str],
    info: dict[str, str],
    args: argparse.Namespace,
    started: datetime.datetime,
    *,
    pure: bool = False,
) -> str:
    lines = [
        f"# gwfast load run, {started:%Y-%m-%d %H:%M} UTC" + (" — PURE TWINS" if pure else ""),
        "",
        *([f"**{PURE_BANNER}** (`--allow-pure`).", ""] if pure else []),
        *(f"- {k}: {v}" for k, v in info.items()),
        f"- workload: {args.workload}, {args.sessions} sessions per target, "
        f"{args.connections} connections, {args.duration:g} s × {args.rounds} rounds",
        f"- pinning: load CPU {args.load_cpu}, proxy CPU {args.proxy_cpu}; "
        + "; ".join(f"{k}: {v}" for k, v in SCHEMES.items()),
        *(f"- left out: {s}" for s in skipped),
        "",
        "## Medians over rounds" + (" — PURE TWINS" if pure else ""),
        "",
        results.summary(),
        "",
        "## Every run",
        "",
        results.runs(),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.datetime.now(datetime.UTC)
    try:
        got = in_workdir("gwfast-load-", args.keep, lambda workdir: run(args, workdir))
    except Refused as exc:
        print(f"!! {exc}", file=sys.stderr)
        return 2
    if got is None:
        return 130
    results, skipped, info, pure = got
    text = markdown(results, skipped, info, args, started, pure=pure)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{started:%Y-%m-%d-%H%M%S}.md"
    out.write_text(text)
    print()
    if pure:
        print(f"!! {PURE_BANNER}")
    print(f"backend: {info['backend']}")
    for key, value in info.items():
        if key.startswith("twins, "):
            print(f"{key}: {value}")
    print(results.summary())
    print(f"\nwritten to {out}; paste the table and its header lines into bench/RESULTS.md")
    if results.errors():
        print(f"!! {results.errors()} errors (non-2xx or socket): see the runs in {out}")
        return 1
    return 1 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
