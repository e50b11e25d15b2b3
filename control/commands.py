"""`mcp-gateway serve`, `mcp-gateway control` and the client commands (`backends`, `tenants`).

`serve` is what a newcomer runs and what an MCP client's configuration starts
(`{"command": "mcp-gateway", "args": ["serve"]}`): the control process with embedded defaults
and the data plane as its child. When its stdin is a pipe or a socket (an MCP client started
it) it also speaks MCP on stdin/stdout with the admin tools, and stops when the client
closes stdin. Logs go to stderr, always.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import stat
import sys
from pathlib import Path

from control import cli
from control.server import DEFAULT_LISTEN, ControlProcess, Settings, StartError, default_data_dir

log = logging.getLogger("gwfast.control")


def stdin_is_mcp_client() -> bool:
    """An MCP client starts its servers with pipes (or a socket) on stdin; a terminal, a
    file or /dev/null (systemd, CI) means nobody speaks MCP on stdio."""
    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _add_control_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"state directory: SQLite registry, session key, data plane config (default "
        f"$GWFAST_DATA_DIR or {default_data_dir()})",
    )
    p.add_argument(
        "--control-listen",
        default=DEFAULT_LISTEN,
        help=f"the control API (REST /v1/, MCP /mcp), loopback only (default {DEFAULT_LISTEN})",
    )
    p.add_argument(
        "--stdio",
        choices=["auto", "on", "off"],
        default="auto",
        help="speak MCP (the admin tools) on stdin/stdout: auto when stdin is a pipe",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcp-gateway")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    parser.add_argument(
        "--control",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="the control API the backends and tenants commands talk to",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="the control process and the data plane, embedded defaults")
    _add_control_options(s)
    s.add_argument("--listen", default="127.0.0.1:8080", help="the data plane's address")
    s.add_argument(
        "--admin-listen",
        default="127.0.0.1:9090",
        help="the data plane's admin listener (/metrics); 'none' for none",
    )
    s.add_argument("--workers", type=int, default=1, help="data plane worker processes")
    s.add_argument(
        "--gateway-config",
        type=Path,
        default=None,
        help="the data plane's own YAML (listen, limits, timeouts...; no backends): "
        "replaces --listen, --admin-listen and --workers",
    )
    c = sub.add_parser("control", help="the control process alone (data planes follow it)")
    _add_control_options(c)
    cli.add_commands(sub)
    return parser


async def _run(args: argparse.Namespace, *, with_data_plane: bool) -> int:
    settings = Settings(
        data_dir=args.data_dir or default_data_dir(),
        listen=args.control_listen,
    )
    control = ControlProcess(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await control.start()
    data_plane = None
    waits = [asyncio.create_task(stop.wait())]
    try:
        if with_data_plane:
            from control.dataplane import DataPlane, write_config

            config = args.gateway_config or write_config(
                settings.data_dir,
                listen=args.listen,
                admin_listen=None if args.admin_listen == "none" else args.admin_listen,
                workers=args.workers,
            )
            data_plane = DataPlane(control.url, config, settings.data_dir / "snapshot.json")
            await data_plane.start()
            log.info(
                "gwfast serving: MCP clients use http://%s/NAME/mcp; register backends with "
                "`mcp-gateway backends register` or the MCP tools at %s/mcp",
                args.listen,
                control.url,
            )
        stdio = args.stdio == "on" or args.stdio == "auto" and stdin_is_mcp_client()
        if stdio:
            from control.tools import serve_stdio

            log.info("speaking MCP on stdin/stdout (the admin tools); stopping when it closes")
            waits.append(asyncio.create_task(serve_stdio(control.mcp)))
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        log.info("stopping")
    finally:
        for t in waits:
            t.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        if data_plane is not None:
            await data_plane.stop()
        await control.stop()
    return 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command not in ("serve", "control"):
        return cli.run(args)
    if args.command == "serve" and not 1 <= args.workers <= 256:
        print("mcp-gateway: --workers must be between 1 and 256", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args, with_data_plane=args.command == "serve"))
    except StartError as e:
        print(f"mcp-gateway: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
