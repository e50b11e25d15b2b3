"""The `mcp-gateway` command."""

from __future__ import annotations

import argparse
import base64
import logging
import secrets
import sys

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mcp-gateway", description=__doc__)
    parser.add_argument("--version", action="version", version=f"gwfast {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("proxy", help="run the data plane from a static YAML configuration")
    p.add_argument("--config", required=True, help="path to the YAML configuration")
    sub.add_parser("keygen", help="print a new base64 session key for session_keys")
    sub.add_parser("check", help="validate a configuration and exit").add_argument(
        "--config", required=True
    )
    args = parser.parse_args(argv)
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
        from gwfast.worker import run

        _raise_fd_limit()
        return run(args.config)
    except ConfigError as e:
        print(f"mcp-gateway: configuration error: {e}", file=sys.stderr)
        return 2
