"""Which twins each gwfast process of a load run loaded, and the refusal to time pure ones.

Run from a source tree whose extensions are not built, ``python -m gwfast`` imports the
pure-Python twins without a word (the selectors in ``gwfast._native`` fall back, as they
must for a pure install), and a load run then measures the wrong thing: 0.35× nginx instead
of 1.20×. Every gwfast worker logs which twins it loaded when it starts serving
(gwfast/worker.py):

    worker 30536 serving on 127.0.0.1:50275 (native scanner True, ring True, relay True)

(``relay`` True also means the compiled model: the compiled relay requires it.) The driver
reads that line from the log of every gwfast target, prints it, puts it in the report, and
refuses to time a target any of whose workers runs a pure twin, or whose log has no such line
(it cannot tell), unless ``--allow-pure`` is given.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

LINE = re.compile(
    r"worker (?P<pid>\d+) serving on \S+ "
    r"\(native scanner (?P<scanner>\w+), ring (?P<ring>\w+), relay (?P<relay>\w+)\)"
)
NAMES = ("scanner", "ring", "relay")
BUILD = "`pip install -e .` or `python setup.py build_ext --inplace`"
REPO = Path(__file__).resolve().parents[2]  # the tree run.py starts gwfast from (its cwd)


@dataclass
class Twins:
    """The twins of one gwfast target: per worker process, twin name -> compiled."""

    target: str
    workers: dict[int, dict[str, bool]]

    @property
    def pure(self) -> list[str]:
        """The pure twins any worker runs; ["(no start-up line)"] when the log had none."""
        if not self.workers:
            return ["(no start-up line)"]
        return [n for n in NAMES if not all(w[n] for w in self.workers.values())]

    def line(self) -> str:
        if not self.workers:
            return "unknown: no `worker N serving on ... (native scanner ...)` line in its log"
        parts = [
            f"worker {pid}: " + ", ".join(f"{n} {'compiled' if w[n] else 'PURE'}" for n in NAMES)
            for pid, w in self.workers.items()
        ]
        return "; ".join(parts) + (" — PURE TWINS" if self.pure else "")


def read(target: str, log: Path, *, timeout: float = 5.0) -> Twins:
    """The twins logged in `log`, waiting up to `timeout` for the first start-up line (it is
    written just after the listener opens, which is what the driver waits for)."""
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text(errors="replace") if log.exists() else ""
        workers = {int(m["pid"]): {n: m[n] == "True" for n in NAMES} for m in LINE.finditer(text)}
        if workers or time.monotonic() > deadline:
            return Twins(target, workers)
        time.sleep(0.1)


def refusal(found: list[Twins]) -> str | None:
    """The message refusing to time pure twins, or None when every gwfast target is compiled."""
    pure = [t for t in found if t.pure]
    if not pure:
        return None
    names = "; ".join(f"{t.target}: {', '.join(t.pure)}" for t in pure)
    if os.environ.get("GWFAST_NO_EXTENSIONS", "") not in ("", "0"):
        fix = (
            "GWFAST_NO_EXTENSIONS is set in the environment, which forces them: unset it "
            f"(and, if the extensions are not built, build them with {BUILD})"
        )
    else:
        fix = (
            "the compiled extensions are not built (or not importable) in the source tree "
            f"gwfast runs from, {REPO}: build them there with {BUILD}"
        )
    return (
        f"refusing to measure: gwfast runs pure-Python twins ({names}); {fix}; "
        "or pass --allow-pure to measure the pure twins anyway (the report then says so)."
    )
