"""A real gwfast gateway in a subprocess, configured from a dict, on a free port."""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from gwfast._testbase.procs import Proc, free_ports, python_argv, wait_port


class Gateway:
    """`python -m gwfast proxy --config FILE` with `config` (listen and keys filled in), and
    `args` after it (e.g. ``["--control", URL]``).

    `url(backend)` gives the MCP endpoint of a backend through the gateway.
    """

    def __init__(
        self,
        config: dict[str, Any],
        *,
        workdir: Path,
        env: dict[str, str] | None = None,
        name: str = "gateway",
        args: Sequence[str] = (),
    ) -> None:
        self.port, admin_port = free_ports(2)
        cfg = dict(config)
        cfg.setdefault("listen", f"127.0.0.1:{self.port}")
        # the admin listener (/metrics) on a free port too: never the default 9090, which
        # gateways started side by side would fight over
        cfg.setdefault("admin_listen", f"127.0.0.1:{admin_port}")
        admin = cfg["admin_listen"]
        self.admin_port: int | None = int(admin.rpartition(":")[2]) if admin else None
        cfg.setdefault("session_keys", [base64.b64encode(secrets.token_bytes(32)).decode()])
        self.config = cfg
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(cfg))
        self.log = workdir / f"{name}.log"
        self.env = env or {}
        self.args = list(args)
        self.proc: Proc | None = None

    def start(self, *, timeout: float = 20.0) -> Gateway:
        self.proc = Proc(
            python_argv("-m", "gwfast", "proxy", "--config", str(self.config_path), *self.args),
            env={"PYTHONUNBUFFERED": "1", **self.env},
            log=self.log,
        )
        wait_port(self.port, timeout=timeout, proc=self.proc.popen)
        return self

    def stop(self) -> int | None:
        return self.proc.stop() if self.proc else None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_base(self) -> str:
        assert self.admin_port is not None, "this gateway has no admin listener"
        return f"http://127.0.0.1:{self.admin_port}"

    def url(self, backend: str) -> str:
        return f"{self.base}/{backend}/mcp"

    def output(self) -> str:
        return self.proc.output() if self.proc else ""

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def pure_env() -> dict[str, str]:
    """Environment forcing the pure-Python twins (GWFAST_NO_EXTENSIONS=1)."""
    return {"GWFAST_NO_EXTENSIONS": "1"} if os.environ.get("GWFAST_NO_EXTENSIONS") else {}
