"""`mcp-gateway backends ...` and `mcp-gateway tenants ...`: clients of the control process's
REST API (`/v1/`), with the standard library only.

The control process is at ``--control URL``, else ``$GWFAST_CONTROL``, else
http://127.0.0.1:9091. Tables go to stdout; an error is one line on stderr,
``mcp-gateway: <what is wrong>``, with exit status 1 (refused or unreachable) or 2 (usage).
`add_commands` mounts the commands into the `mcp-gateway` parser and `run` executes them;
``python -m control.cli`` runs them alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

DEFAULT_CONTROL = "http://127.0.0.1:9091"
TIMEOUT = 30.0  # seconds for one call: every operation answers at once


class Failed(Exception):
    """What to print after ``mcp-gateway: ``, and the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


# ----------------------------------------------------------------------------- the API


class Api:
    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
            raise Failed(f"invalid control URL {base!r}: write http://host:port", 2)
        self.base = base.rstrip("/")

    def call(self, method: str, path: str, body: Any = None, query: dict | None = None) -> Any:
        url = f"{self.base}/v1{path}"
        if query:
            url += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            raise Failed(_error_text(e)) from None
        except urllib.error.URLError as e:
            reason = e.reason
            why = getattr(reason, "strerror", None) or str(reason)
            raise Failed(
                f"cannot reach the control process at {self.base} ({why}): start it with "
                "mcp-gateway serve"
            ) from None
        except (TimeoutError, ConnectionError) as e:
            raise Failed(f"the control process at {self.base} did not answer ({e})") from None
        return json.loads(raw) if raw else None


def _error_text(e: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(e.read())
        err = body["error"]
        return err["message"] if isinstance(err, dict) else str(err)
    except (ValueError, KeyError, TypeError, OSError):
        return f"the control process answered {e.code} {e.reason}"


def _seg(name: str) -> str:
    return quote(name, safe="")  # "../x" stays one segment: the service refuses the name


# ----------------------------------------------------------------------------- output


def table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header, *[["-" if c is None or c == "" else str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _out(text: str) -> None:
    print(text, flush=True)


def _json(value: Any) -> None:
    _out(json.dumps(value, indent=2))


def _replicas(b: dict) -> str:
    return f"{b.get('ready_replicas', 0)}/{b.get('replicas', 0)}"


def _target(b: dict) -> str:
    if b.get("command"):
        return " ".join(b["command"])
    return b.get("url") or b.get("image") or ""


def _quota_text(q: dict | None) -> str:
    return f"{q['requests']} per {q['period_text']}" if q else ""


# ----------------------------------------------------------------------------- commands


def backends_list(api: Api, args: argparse.Namespace) -> None:
    items = api.call("GET", "/backends")
    if args.json:
        return _json(items)
    rows = [[b["name"], b["kind"], _replicas(b), b["state"], b["route"]] for b in items]
    _out(table(["NAME", "KIND", "REPLICAS", "STATE", "ROUTE"], rows))


def _env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise Failed(f"--env {pair!r}: write KEY=VALUE", 2)
        env[key] = value
    return env


def registration(args: argparse.Namespace) -> dict:
    """The registration body from the command line (only what was given)."""
    rest = list(args.rest)
    command = None
    if rest[:1] and not rest[0].startswith("-"):  # argparse drops a `--` right after NAME
        rest, command = [], rest
    elif (
        cut := next((i for i, a in enumerate(rest) if a in ("--", "--command")), None)
    ) is not None:
        rest, command = rest[:cut], rest[cut + 1 :]
        if command[:1] == ["--"]:
            command = command[1:]
        if not command:
            raise Failed("--command: give the command after it, e.g. -- npx -y PACKAGE", 2)
    opts = _options_parser().parse_args(rest, namespace=argparse.Namespace(**vars(args)))
    given = [k for k, v in (("--url", opts.url), ("--image", opts.image)) if v]
    if command is not None:
        given.insert(0, "--command")
    if len(given) != 1:
        raise Failed(
            "give exactly one of --command (or -- COMMAND...), --url or --image"
            + (f"; got {' and '.join(given)}" if given else ""),
            2,
        )
    if getattr(opts, "control", None):
        args.control = opts.control
    body: dict[str, Any] = {"name": args.name}
    if command is not None:
        body["command"] = command
    for key in ("url", "image", "replicas", "path", "affinity", "description"):
        if getattr(opts, key, None) is not None:
            body[key] = getattr(opts, key)
    if opts.env:
        body["env"] = _env(opts.env)
    if opts.no_health_path:
        body["health_check"] = {"path": None}
    elif opts.health_path is not None:
        body["health_check"] = {"path": opts.health_path}
    return body


def backends_register(api: Api, args: argparse.Namespace) -> None:
    b = api.call("POST", "/backends", args.body)
    _out(
        f"registered {b['name']} ({b['kind']}): {_replicas(b)} replicas ready, routed at "
        f"{b['route']}; follow it with: mcp-gateway backends status {b['name']}"
    )


def _health(r: dict) -> str:
    words = ["healthy" if r.get("healthy") is True else r.get("health") or ""]
    if r.get("last_exit"):
        words.append(f"last {r['last_exit']}")
    return "; ".join(w for w in words if w)


def backends_status(api: Api, args: argparse.Namespace) -> None:
    st = api.call("GET", f"/backends/{_seg(args.name)}/status")
    if args.json:
        return _json(st)
    lines = [
        f"{st['name']} ({st['kind']}, {st.get('orchestrator', '')}): {st['state']}, "
        f"{_replicas(st)} replicas ready, routed at {st['route']}",
        f"runs: {_target(st)}",
    ]
    if st.get("message"):
        lines.append(st["message"])
    keys = ("replica", "state", "endpoint", "pid", "restarts")
    rows = [[*(r.get(k) for k in keys), _health(r)] for r in st.get("replica_status", [])]
    if rows:
        header = ["REPLICA", "STATE", "ENDPOINT", "PID", "RESTARTS", "HEALTH / LAST EXIT"]
        lines += ["", table(header, rows)]
    _out("\n".join(lines))


def backends_logs(api: Api, args: argparse.Namespace) -> None:
    query = {"replica": args.replica, "lines": args.lines}
    lines = api.call("GET", f"/backends/{_seg(args.name)}/logs", query=query)["lines"]
    if lines:
        _out("\n".join(lines))


def backends_scale(api: Api, args: argparse.Namespace) -> None:
    b = api.call("PATCH", f"/backends/{_seg(args.name)}", {"replicas": args.replicas})
    _out(f"scaled {b['name']} to {b['replicas']} replicas ({_replicas(b)} ready)")


def backends_remove(api: Api, args: argparse.Namespace) -> None:
    api.call("DELETE", f"/backends/{_seg(args.name)}")
    _out(f"unregistered {args.name}: its replicas are stopping")


def tenants_list(api: Api, args: argparse.Namespace) -> None:
    items = api.call("GET", "/tenants")
    if args.json:
        return _json(items)
    rows = [
        [
            t["name"],
            _quota_text(t.get("quota")),
            ", ".join(f"{b}: {_quota_text(q)}" for b, q in t.get("backend_quotas", {}).items()),
            t.get("description"),
        ]
        for t in items
    ]
    _out(table(["TENANT", "QUOTA", "BACKEND QUOTAS", "DESCRIPTION"], rows))


def tenants_quota(api: Api, args: argparse.Namespace) -> None:
    path = f"/tenants/{_seg(args.tenant)}/quota"
    if args.requests is None:
        out = api.call("GET", path)
    else:
        try:
            requests = int(args.requests)
        except ValueError:
            raise Failed(f"REQUESTS must be a whole number, not {args.requests!r}", 2) from None
        if args.period is None:
            raise Failed("give REQUESTS and PERIOD, e.g. tenants quota engineering 1000 1h", 2)
        out = api.call("PUT", path, {"requests": requests, "period": args.period})
    q = out.get("quota")
    text = f"{q['requests']} requests per {q['period_text']}" if q else "no quota"
    _out(f"{out['tenant_id']}: {text}")


def tenants_remove(api: Api, args: argparse.Namespace) -> None:
    api.call("DELETE", f"/tenants/{_seg(args.tenant)}")
    _out(f"removed tenant {args.tenant}")


# ----------------------------------------------------------------------------- parsers


def _options(p: argparse.ArgumentParser) -> None:
    """`register`'s options: on its parser (for --help and before NAME) and re-parsed from
    what follows NAME, so the command after `--` keeps its own dashes."""
    S = argparse.SUPPRESS
    p.add_argument("--url", default=S, help="an existing MCP endpoint (http://host:port/mcp)")
    p.add_argument("--image", default=S, help="a container image (Kubernetes)")
    p.add_argument("--replicas", type=int, metavar="N", default=S, help="how many (default 1)")
    p.add_argument("--env", action="append", metavar="K=V", default=S, help="repeatable")
    p.add_argument("--path", metavar="P", default=S, help="MCP path on each replica (/mcp)")
    h = p.add_mutually_exclusive_group()
    h.add_argument("--health-path", metavar="P", default=S, help="health check GET (/healthz)")
    h.add_argument("--no-health-path", action="store_true", default=S, help="TCP check only")
    p.add_argument("--affinity", choices=["session", "none"], default=S)
    p.add_argument("--description", metavar="TEXT", default=S)


REGISTER_USAGE = (
    "mcp-gateway backends register NAME (--url URL | --image IMAGE | [--command] -- "
    "COMMAND...) [--replicas N] [--env K=V]... [--path P] [--health-path P | "
    "--no-health-path] [--affinity session|none] [--description TEXT]"
)
REGISTER_EPILOG = (
    "the command is everything after -- (or --command), dashes included; {port} in it is "
    "replaced by the replica's port, also in $PORT. Example: mcp-gateway backends register "
    "everything --replicas 2 -- npx -y @modelcontextprotocol/server-everything streamableHttp"
)


def _options_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mcp-gateway backends register", usage=REGISTER_USAGE, epilog=REGISTER_EPILOG
    )
    _options(p)
    p.add_argument("--control", metavar="URL", default=argparse.SUPPRESS, help="as before NAME")
    p.set_defaults(
        url=None, image=None, replicas=None, env=None, path=None, health_path=None,
        no_health_path=False, affinity=None, description=None,
    )  # fmt: skip
    return p


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """`backends` and `tenants` under the `mcp-gateway` parser's subcommands."""
    control = argparse.ArgumentParser(add_help=False)
    control.add_argument(
        "--control",
        metavar="URL",
        default=argparse.SUPPRESS,
        help=f"the control process (default $GWFAST_CONTROL or {DEFAULT_CONTROL})",
    )
    common = {"parents": [control]}

    b = subparsers.add_parser("backends", help="list, register, inspect, scale, remove", **common)
    bs = b.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = bs.add_parser("list", help="every backend and its state", **common)
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    p.set_defaults(run=backends_list)
    p = bs.add_parser(
        "register",
        help="register a backend: a command, a URL or an image",
        usage=REGISTER_USAGE,
        epilog=REGISTER_EPILOG,
        **common,
    )
    _options(p)
    p.add_argument("name", metavar="NAME")
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(run=backends_register)
    p = bs.add_parser("status", help="a backend's replicas and what is wrong", **common)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    p.set_defaults(run=backends_status)
    p = bs.add_parser("logs", help="the last lines of output of a backend's replicas", **common)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--replica", type=int, metavar="N", help="one replica (default: all)")
    p.add_argument("--lines", type=int, metavar="N", default=100, help="default 100")
    p.set_defaults(run=backends_logs)
    p = bs.add_parser("scale", help="change how many replicas run", **common)
    p.add_argument("name", metavar="NAME")
    p.add_argument("replicas", type=int, metavar="N")
    p.set_defaults(run=backends_scale)
    p = bs.add_parser("remove", help="stop a backend and unregister it", **common)
    p.add_argument("name", metavar="NAME")
    p.set_defaults(run=backends_remove)

    t = subparsers.add_parser("tenants", help="list tenants, inspect or set quotas", **common)
    ts = t.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = ts.add_parser("list", help="every tenant and its quotas", **common)
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    p.set_defaults(run=tenants_list)
    p = ts.add_parser(
        "quota",
        help="show a tenant's quota, or set it: tenants quota engineering 1000 1h",
        **common,
    )
    p.add_argument("tenant", metavar="TENANT")
    p.add_argument("requests", nargs="?", metavar="REQUESTS", help="requests per PERIOD")
    p.add_argument("period", nargs="?", metavar="PERIOD", help="e.g. 1h, 30m, 60s")
    p.set_defaults(run=tenants_quota)
    p = ts.add_parser("remove", help="remove a tenant and its quotas", **common)
    p.add_argument("tenant", metavar="TENANT")
    p.set_defaults(run=tenants_remove)


def run(args: argparse.Namespace) -> int:
    """Run a command parsed by a parser that `add_commands` extended; the exit status."""
    try:
        if args.run is backends_register:
            args.body = registration(args)  # may carry --control from after NAME
        url = getattr(args, "control", None) or os.environ.get("GWFAST_CONTROL")
        args.run(Api(url or DEFAULT_CONTROL), args)
    except Failed as e:
        print(f"mcp-gateway: {e}", file=sys.stderr, flush=True)
        return e.status
    except SystemExit as e:  # the re-parsed `register` options (argparse said why)
        return e.code if isinstance(e.code, int) else 2
    except BrokenPipeError:  # `| head`
        return 0
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mcp-gateway")
    add_commands(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
