"""The `mcp-gateway` command."""

from __future__ import annotations

import argparse
import base64
import logging
import secrets
import sys
from pathlib import Path

from gwfast import __version__


def _raise_fd_limit() -> None:
    """Each stream holds two sockets (client and endpoint): take all the descriptors the
    hard limit allows rather than fail at the soft limit (often 1024)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            logging.getLogger("gwfast").warning("could not raise the open-file limit from %d", soft)


def _control_url(value: str) -> str:
    from gwfast.follow import parse_control_url

    try:
        parse_control_url(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mcp-gateway", description=__doc__)
    parser.add_argument("--version", action="version", version=f"gwfast {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "proxy", help="run the data plane from a static YAML configuration or a control process"
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="path to the YAML configuration (optional with --control: every default)",
    )
    p.add_argument(
        "--control",
        metavar="URL",
        type=_control_url,
        help="follow the backends of the control process at URL (http://host:port); "
        "FILE must then have no backends",
    )
    p.add_argument(
        "--snapshot-cache",
        metavar="FILE",
        help="with --control: keep each applied snapshot in FILE and start from it, so a "
        "restart routes while the control process is down",
    )
    sub.add_parser("keygen", help="print a new base64 session key for session_keys")
    sub.add_parser("check", help="validate a configuration and exit").add_argument(
        "--config", required=True
    )
    args = parser.parse_args(argv)
    if args.command == "proxy":
        if args.config is None and args.control is None:
            p.error("--config FILE is required (or --control URL)")
        if args.snapshot_cache is not None and args.control is None:
            p.error("--snapshot-cache needs --control")
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "keygen":
        print(base64.b64encode(secrets.token_bytes(32)).decode())
        return 0
    from gwfast.config import ConfigError

    try:
        if args.command == "check":
            from gwfast.config import load_config_file

            load_config_file(args.config)
            print("configuration is valid")
            return 0
        from gwfast.follow import FollowSettings
        from gwfast.worker import run

        _raise_fd_limit()
        follow = None
        if args.control is not None:
            cache = Path(args.snapshot_cache) if args.snapshot_cache else None
            follow = FollowSettings(args.control, cache)
        return run(args.config, follow=follow)
    except ConfigError as e:
        print(f"mcp-gateway: configuration error: {e}", file=sys.stderr)
        return 2
