"""What an orchestrator is: the interface the reconciler drives, and what it observes.

Two implementations plug in here: `control.local.LocalOrchestrator` (subprocesses, the
embedded default) and, later, a Kubernetes one. The reconciler (`control.reconcile`) compares
the registry with `observed()` and calls `ensure` or `remove`; both are idempotent and
converge ("level-based"), so a repeated or interrupted call is harmless. An orchestrator
calls `on_change()` whenever what it observes changes (a replica became ready, exited,
failed its health check), and the reconciler publishes a new snapshot.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import msgspec

from control.spec import BackendSpec

# replica states, in the order a replica goes through them
STARTING = "starting"  # started, not accepting connections yet
READY = "ready"  # accepts connections: published to the data plane
EXITED = "exited"  # waiting out its restart backoff
STOPPING = "stopping"


class Replica(msgspec.Struct, kw_only=True):
    index: int
    state: str
    endpoint: str | None = None  # the URL the data plane routes to, once known
    pid: int | None = None
    restarts: int = 0
    last_exit: str = ""  # e.g. "exited with status 1 after 0.3s"
    # the last health check: None not yet run, True passed, False failed (`health` says why)
    healthy: bool | None = None
    health: str = ""
    since: float = 0.0  # wall-clock time it entered `state`

    @property
    def routable(self) -> bool:
        return self.state == READY and self.endpoint is not None


class Observed(msgspec.Struct, kw_only=True):
    """One backend as the orchestrator runs it."""

    spec: BackendSpec  # the spec it is converging to
    replicas: list[Replica] = []
    message: str = ""  # the orchestrator's word when something is wrong


class Orchestrator(Protocol):
    kind: str  # "local" | "kubernetes"
    on_change: Callable[[], None]

    def refuses(self, spec: BackendSpec) -> str | None:
        """Why this orchestrator cannot run `spec` (e.g. an image locally), else None."""

    async def start(self) -> None:
        """Begin observing (and, for local processes, supervising)."""

    async def ensure(self, spec: BackendSpec) -> None:
        """Converge the backend to `spec`: replicas started, scaled, replaced, restarted."""

    async def remove(self, name: str) -> None:
        """Stop and forget every replica of `name`."""

    def observed(self) -> dict[str, Observed]: ...

    async def logs(self, name: str, replica: int | None, lines: int) -> list[str]:
        """The last `lines` lines (stdout and stderr) of one replica, or of all, oldest
        first; KeyError for an unknown backend, IndexError for an unknown replica."""

    async def close(self) -> None:
        """Stop every replica (a clean stop of the control process leaves no orphans)."""
