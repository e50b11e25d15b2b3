"""Find nginx, haproxy and wrk, installing Debian's packages when they are missing.

The comparison peers come from Debian (``nginx-light``, ``haproxy``, ``wrk``) so every
machine of the project measures the same builds. They live in /usr/sbin, which is not on
every user's PATH, hence the explicit fallbacks.
"""

from __future__ import annotations

import os
import shutil
import subprocess

PACKAGES = {"nginx": "nginx-light", "haproxy": "haproxy", "wrk": "wrk", "taskset": "util-linux"}
SEARCH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])


def which(name: str) -> str | None:
    return shutil.which(name, path=SEARCH)


def ensure_tools(*, install: bool = True) -> dict[str, str]:
    """Return {tool: path}; apt-get installs the missing ones (as root) when install is set."""
    missing = [name for name in PACKAGES if which(name) is None]
    if missing and install:
        if os.geteuid() != 0:
            raise SystemExit(
                f"missing {', '.join(missing)}: run as root or "
                f"`sudo apt-get install -y {' '.join(PACKAGES[m] for m in missing)}`"
            )
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        print(f"installing {', '.join(PACKAGES[m] for m in missing)} with apt-get ...")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", *(PACKAGES[m] for m in missing)],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
    paths = {name: which(name) for name in PACKAGES}
    still = [name for name, path in paths.items() if path is None]
    if still:
        raise SystemExit(f"not found: {', '.join(still)}")
    return paths  # type: ignore[return-value]


def versions(paths: dict[str, str]) -> dict[str, str]:
    """One line of version text per tool, for the report."""

    def first_line(argv: list[str]) -> str:
        out = subprocess.run(argv, capture_output=True, text=True)
        text = (out.stdout or out.stderr).strip().splitlines()
        return text[0] if text else "?"

    return {
        "nginx": first_line([paths["nginx"], "-v"]).removeprefix("nginx version: "),
        "haproxy": first_line([paths["haproxy"], "-v"]).split(" - ")[0],
        "wrk": first_line([paths["wrk"], "-v"]).split(" [")[0],
    }
