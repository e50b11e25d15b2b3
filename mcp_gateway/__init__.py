"""The `mcp-gateway` command: one entry point over the two layers.

The data plane (`gwfast`) and the control process (`control`) never import each other
(STYLE.md "Layers", checked by import-linter), so the command that offers both lives above
them: the data plane's commands go to `gwfast.cli`, the others to `control.commands`. Each
side is imported only when its command runs: `mcp-gateway proxy` loads nothing of the control
process, and `mcp-gateway serve` starts the data plane as a process of its own.
"""

from __future__ import annotations

import sys

DATA_PLANE = {
    "proxy": "run the data plane from a static YAML file or a control process (--control)",
    "check": "validate a data plane configuration file and exit",
    "keygen": "print a new base64 session key",
}
CONTROL = {
    "serve": "run the control process and the data plane together (embedded defaults)",
    "control": "run the control process alone (REST API, MCP admin tools, snapshots)",
    "backends": "list, register, inspect, scale and remove backends",
    "tenants": "list tenants; inspect or set their quotas",
}
_VALUED = ("--log-level", "--control")  # global options that take a value


def command_of(args: list[str]) -> str | None:
    skip = False
    for a in args:
        if skip:
            skip = False
        elif a in _VALUED:
            skip = True
        elif not a.startswith("-"):
            return a
    return None


def usage() -> str:
    lines = ["usage: mcp-gateway COMMAND [options]   (mcp-gateway COMMAND --help for more)", ""]
    lines += [f"  {name:<9} {text}" for name, text in {**CONTROL, **DATA_PLANE}.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    command = command_of(args)
    if command in DATA_PLANE or command is None and "--version" in args:
        from gwfast.cli import main as data_plane

        return data_plane(args)
    if command in CONTROL:
        from control.commands import main as control

        return control(args)
    if command is None and ("-h" in args or "--help" in args):
        print(usage())
        return 0
    print(usage(), file=sys.stderr)
    if command is not None:
        print(f"\nmcp-gateway: unknown command {command!r}", file=sys.stderr)
    return 2
