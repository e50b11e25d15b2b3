"""Time to first SSE event: direct, gwfast, nginx and haproxy, one keep-alive connection.

    python -m bench.load.first_event --rounds 3 --requests 2000

Issue target: "SSE: time to first event through gwfast ≤ direct + 0.2 ms". The driver starts
the fast backend and the same proxies as ``bench.load.run`` (same configurations but one, see
below; same session and routing checks), then times sequential ``tools/call`` requests of the
``stream`` tool on one keep-alive connection per target. The backend writes the response
head and the first event at once and the other ``--events - 1`` events ``--rest-after-ms``
later, so the figure is first-event latency, not stream time. A request is timed from just before its bytes
are written to the socket until the first complete event (``data: ...`` and its blank line)
has been read; the rest of the stream is then drained and checked (status, content type,
event count, the result's id) outside the timed part.

The client is a plain blocking socket with ``TCP_NODELAY``, prebuilt request bytes and
``recv_into`` a preallocated buffer, with the garbage collector off while timing, so its own
cost is small and the same for every target. Targets alternate inside every round (the order
rotates each round) after a warm-up of each. haproxy gets ``option http-no-delay`` (an
operator serving SSE sets it; without it haproxy holds a lone event until more data comes,
``--haproxy-default`` shows that). Schemes: ``one-core`` puts client, backend and
proxy on the load CPU (like run.py's ``latency``); ``proxy-core`` moves the proxy to the
proxy CPU. Every server stops when the driver ends, fails or is interrupted.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import socket
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from . import proxies
from .mcp_client import HEADERS
from .procs import Child, Children, in_workdir
from .report import _num, _table
from .run import RESULTS, TARGETS, machine, prepare, start_targets
from .tools import ensure_tools, versions

SCHEMES = {
    "one-core": "client, backend and proxy on the load CPU",
    "proxy-core": "proxy alone on the proxy CPU; client and backend on the load CPU",
}
TARGET_US = 200.0  # the target: gwfast's median at most direct + 0.2 ms
BUFSIZE = 1 << 20


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench.load.first_event",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--requests", type=int, default=2000, help="timed requests per run (2000)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds (3)")
    ap.add_argument("--warmup", type=int, default=300, help="untimed requests per target (300)")
    ap.add_argument("--events", type=int, default=50, help="events per SSE answer (50)")
    ap.add_argument(
        "--rest-after-ms",
        type=float,
        default=1.0,
        help="the backend sends events 2.. this long after the first (1.0)",
    )
    ap.add_argument("--sessions", type=int, default=16, help="sessions per target (16)")
    ap.add_argument("--targets", default=",".join(TARGETS), help="comma-separated subset")
    ap.add_argument("--schemes", default="one-core", help="one-core and/or proxy-core")
    ap.add_argument("--load-cpu", type=int, default=0, help="CPU of client and backend (0)")
    ap.add_argument("--proxy-cpu", type=int, default=1, help="CPU of the proxy (1)")
    ap.add_argument(
        "--haproxy-default",
        action="store_true",
        help="leave out haproxy's `option http-no-delay` (as run.py does): haproxy then holds "
        "the first event until the backend's next write",
    )
    ap.add_argument("--no-install", action="store_true", help="never apt-get missing tools")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (configs, logs)")
    args = ap.parse_args(argv)
    if args.events < 1:
        ap.error("--events must be at least 1")
    unknown = set(args.schemes.split(",")) - set(SCHEMES)
    if unknown:
        ap.error(f"unknown scheme(s) {', '.join(sorted(unknown))}; choose from {list(SCHEMES)}")
    return args


class StreamClient:
    """One keep-alive connection that sends prebuilt SSE requests and times the first event."""

    def __init__(self, url: str, sessions: list[str], events: int, rest_after_ms: float) -> None:
        parts = urlsplit(url)
        self.addr = (parts.hostname, parts.port)
        self.events = events
        self.requests: list[tuple[int, bytes]] = []
        for i in range(max(len(sessions) * 8, 256)):
            rpc_id = i + 1
            body = json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": rpc_id,
                    "method": "tools/call",
                    "params": {
                        "name": "stream",
                        "arguments": {"events": events, "rest_after_ms": rest_after_ms},
                    },
                },
                separators=(",", ":"),
            ).encode()
            headers = {
                "Host": f"{parts.hostname}:{parts.port}",
                **HEADERS,
                "Mcp-Session-Id": sessions[i % len(sessions)],
                "Content-Length": str(len(body)),
            }
            head = f"POST {parts.path} HTTP/1.1\r\n" + "".join(
                f"{k}: {v}\r\n" for k, v in headers.items()
            )
            self.requests.append((rpc_id, head.encode() + b"\r\n" + body))
        self.next = 0
        self.buf = bytearray(BUFSIZE)
        self.view = memoryview(self.buf)
        self.sock: socket.socket | None = None

    def connect(self) -> None:
        self.close()
        sock = socket.create_connection(self.addr, timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def one(self) -> int:
        """Send one request; return its time to first event in ns. Raise on any fault."""
        rpc_id, req = self.requests[self.next]
        self.next = (self.next + 1) % len(self.requests)
        sock, buf, view = self.sock, self.buf, self.view
        recv_into, find, clock = sock.recv_into, buf.find, time.perf_counter_ns
        got, head_end = 0, -1
        # -- timed: from just before the write until the first event's blank line is in
        t0 = clock()
        sock.sendall(req)
        while True:
            n = recv_into(view[got:])
            if not n:
                raise ConnectionError(f"closed after {got} bytes: {bytes(buf[:got])[:200]!r}")
            got += n
            if head_end < 0:
                head_end = find(b"\r\n\r\n", 0, got)
                if head_end < 0:
                    continue
                head_end += 4
                if buf[9:12] != b"200":
                    break  # an error answer: no event to wait for
            if find(b"\n\n", head_end, got) >= 0:
                break
        t1 = clock()
        # -- untimed: drain the rest and check it
        self._drain(rpc_id, got, head_end)
        return t1 - t0

    def _drain(self, rpc_id: int, got: int, head_end: int) -> None:
        head = bytes(self.buf[: head_end - 4]).decode("latin-1").split("\r\n")
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        status = head[0].split(" ", 2)[1] if " " in head[0] else "?"
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length = int(headers["content-length"]) if "content-length" in headers else None
        while True:
            if chunked:
                body = _dechunk(self.buf, head_end, got)
                if body is not None:
                    break
            elif length is not None and got - head_end >= length:
                body = bytes(self.buf[head_end : head_end + length])
                break
            if got == BUFSIZE:
                raise RuntimeError("answer larger than the client's buffer")
            n = self.sock.recv_into(self.view[got:])
            if not n:
                if not chunked and length is None:  # read-until-close: the connection is gone
                    self.close()
                    body = bytes(self.buf[head_end:got])
                    break
                raise ConnectionError(f"closed mid-answer after {got} bytes")
            got += n
        if status != "200":
            raise RuntimeError(f"answered {head[0]!r}: {body[:200]!r}")
        ctype = headers.get("content-type", "")
        if not ctype.startswith("text/event-stream"):
            raise RuntimeError(f"content-type {ctype!r}, not text/event-stream")
        if not chunked:
            raise RuntimeError("SSE answer without chunked transfer-encoding")
        count = body.count(b"\ndata: ") + body.startswith(b"data: ")
        if count != self.events or not body.endswith(b"\n\n"):
            raise RuntimeError(f"{count} events, not {self.events}: {body[-200:]!r}")
        last = json.loads(body.rsplit(b"data: ", 1)[1])
        if last.get("id") != rpc_id or "result" not in last:
            raise RuntimeError(f"last event is not the result of id {rpc_id}: {last!r}")


def _dechunk(buf: bytearray, pos: int, end: int) -> bytes | None:
    """The body of a complete chunked message in buf[pos:end], or None while incomplete."""
    parts = []
    while True:
        eol = buf.find(b"\r\n", pos, end)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
        pos = eol + 2
        if size == 0:  # last chunk; no trailers expected, just the final CRLF
            if end - pos < 2:
                return None
            if pos + 2 != end or buf[pos : pos + 2] != b"\r\n":
                raise RuntimeError(
                    f"unexpected bytes after the last chunk: {bytes(buf[pos:end])!r}"
                )
            return b"".join(parts)
        if end - pos < size + 2:
            return None
        parts.append(bytes(buf[pos : pos + size]))
        pos += size + 2


@dataclass
class Run:
    round: int
    scheme: str
    target: str
    samples_ns: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def time_target(client: StreamClient, n: int) -> tuple[list[int], list[str]]:
    """n sequential requests; a failed one is recorded and the connection is reopened."""
    samples, errors = [], []
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(n):
            try:
                if client.sock is None:
                    client.connect()
                samples.append(client.one())
            except (OSError, RuntimeError, ValueError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                client.close()
    finally:
        if gc_was:
            gc.enable()
    return samples, errors


def pct(sorted_ns: list[int], q: float) -> float:
    """Nearest-rank percentile of sorted samples, in µs."""
    if not sorted_ns:
        return math.nan
    return sorted_ns[max(math.ceil(q * len(sorted_ns)) - 1, 0)] / 1000


def summary(runs: list[Run], targets: list[str], scheme: str) -> str:
    stats = {}
    for t in targets:
        mine = [r for r in runs if r.scheme == scheme and r.target == t]
        pooled = sorted(s for r in mine for s in r.samples_ns)
        rounds = [statistics.median(r.samples_ns) / 1000 for r in mine if r.samples_ns]
        stats[t] = (pooled, rounds, sum(len(r.errors) for r in mine))
    direct = stats.get("direct")
    d50 = pct(direct[0], 0.5) if direct else None
    d99 = pct(direct[0], 0.99) if direct else None

    def diff(v: float, ref: float | None) -> str:
        return "—" if ref is None or math.isnan(v) else f"{v - ref:+,.1f}"

    cols = ["target", "requests", "p50 µs", "+p50 µs", "p99 µs", "+p99 µs", "round p50s µs"]
    cols.append("errors")
    rows = []
    for t in targets:
        pooled, rounds, errors = stats[t]
        p50, p99 = pct(pooled, 0.5), pct(pooled, 0.99)
        rows.append(
            [
                t,
                str(len(pooled)),
                _num(p50, 1),
                diff(p50, d50),
                _num(p99, 1),
                diff(p99, d99),
                " ".join(f"{v:.0f}" for v in rounds),
                str(errors),
            ]
        )
    lines = [f"### {scheme}: {SCHEMES[scheme]}", "", _table(cols, rows)]
    if "gwfast" in stats and d50 is not None and stats["gwfast"][0]:
        added = pct(stats["gwfast"][0], 0.5) - d50
        verdict = "met" if added <= TARGET_US else "NOT met"
        lines += [
            "",
            f"target gwfast p50 ≤ direct + {TARGET_US:.0f} µs: {verdict} ({added:+.1f} µs)",
        ]
    return "\n".join(lines)


def run(args: argparse.Namespace, workdir: Path) -> tuple[list[Run], list[str], list[str], dict]:
    paths = ensure_tools(install=not args.no_install)
    info = {**machine(), **versions(paths)}
    schemes = [s for s in args.schemes.split(",") if s]
    load, proxy_cpu = {args.load_cpu}, {args.proxy_cpu}
    runs: list[Run] = []
    old_affinity = os.sched_getaffinity(0)
    with Children() as children:
        backend, port = proxies.start_backend(children, workdir, cpus=load)
        names = [t for t in args.targets.split(",") if t]
        targets, skipped = start_targets(
            children, workdir, paths, port, names, load, haproxy_no_delay=not args.haproxy_default
        )
        clients: dict[str, StreamClient] = {}
        procs: dict[str, Child | None] = {}
        for t in list(targets):
            try:
                sessions = prepare(t, workdir, args).read_text().split()
            except (AssertionError, RuntimeError, OSError) as exc:
                skipped.append(f"{t.name}: failed the routing check: {exc}")
                print(f"!! {t.name} left out, failed the routing check: {exc}", file=sys.stderr)
                targets.remove(t)
                continue
            clients[t.name] = StreamClient(t.url, sessions, args.events, args.rest_after_ms)
            procs[t.name] = t.proc
        names = [t.name for t in targets]
        os.sched_setaffinity(0, load)
        try:
            for scheme in schemes:
                backend.pin(load)
                for name in names:
                    if procs[name] is not None:
                        procs[name].pin(proxy_cpu if scheme == "proxy-core" else load)
                for name in names:  # warm-up, untimed; its errors count too
                    _, errors = time_target(clients[name], args.warmup)
                    if errors:
                        runs.append(Run(0, scheme, name, [], errors))
                for rnd in range(1, args.rounds + 1):
                    shift = (rnd - 1) % max(len(names), 1)
                    for name in names[shift:] + names[:shift]:
                        samples, errors = time_target(clients[name], args.requests)
                        runs.append(Run(rnd, scheme, name, samples, errors))
                        s = sorted(samples)
                        flag = "  <-- ERRORS" if errors else ""
                        print(
                            f"round {rnd} {scheme:>10} {name:>8}: p50 {pct(s, 0.5):8.1f} µs  "
                            f"p99 {pct(s, 0.99):8.1f} µs  errors {len(errors)}{flag}",
                            flush=True,
                        )
                        for e in errors[:3]:
                            print(f"   {e}", file=sys.stderr)
        finally:
            os.sched_setaffinity(0, old_affinity)
            for c in clients.values():
                c.close()
    return runs, names, skipped, info


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.datetime.now(datetime.UTC)
    got = in_workdir("gwfast-first-event-", args.keep, lambda workdir: run(args, workdir))
    if got is None:
        return 130
    runs, names, skipped, info = got
    schemes = [s for s in args.schemes.split(",") if s]
    tables = "\n\n".join(summary(runs, names, s) for s in schemes)
    errors = sum(len(r.errors) for r in runs)
    text = "\n".join(
        [
            f"# gwfast time to first SSE event, {started:%Y-%m-%d %H:%M} UTC",
            "",
            *(f"- {k}: {v}" for k, v in info.items()),
            f"- {args.requests} requests × {args.rounds} rounds per target after "
            f"{args.warmup} warm-up requests, 1 keep-alive connection, {args.events} events "
            f"per answer, events 2..{args.events} {args.rest_after_ms:g} ms after the first",
            f"- load CPU {args.load_cpu}, proxy CPU {args.proxy_cpu}; haproxy "
            + ("default (no http-no-delay)" if args.haproxy_default else "option http-no-delay"),
            *(f"- left out: {s}" for s in skipped),
            "",
            tables,
            "",
        ]
    )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{started:%Y-%m-%d-%H%M%S}-first-event.md"
    out.write_text(text)
    print()
    print(tables)
    print(f"\nwritten to {out}")
    if errors:
        print(f"!! {errors} requests failed", file=sys.stderr)
        return 1
    return 1 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
