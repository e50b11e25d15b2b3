"""The layering of STYLE.md, as import-linter contracts in pyproject.toml: the data plane and
the control process share only `gwfast.wire`, and the data plane never imports kubernetes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINT = [
    sys.executable,
    "-c",
    "import sys; from importlinter.cli import lint_imports_command as m; sys.exit(m())",
]


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        LINT, cwd=cwd, capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(cwd)}
    )


def test_contracts_kept() -> None:
    out = _lint(REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 kept, 0 broken" in out.stdout


def test_a_forbidden_import_breaks_the_contract(tmp_path: Path) -> None:
    """The contracts are live: the same tree with one data plane module importing the
    control process, and one control module importing the data plane's config, fails."""
    for name in ("gwfast", "control", "mcp_gateway"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("*.so", "*.c"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    health = tmp_path / "gwfast" / "health.py"
    health.write_text(health.read_text() + "\nimport control.spec  # planted\n")
    spec = tmp_path / "control" / "spec.py"
    spec.write_text(spec.read_text() + "\nimport gwfast.config  # planted\n")
    out = _lint(tmp_path)
    assert out.returncode != 0
    assert "gwfast.health -> control.spec" in out.stdout
    assert "control.spec -> gwfast.config" in out.stdout
    assert "2 broken" in out.stdout
