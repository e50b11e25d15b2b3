"""The local orchestrator with real processes: supervision, scaling, logs, stopping.

Replicas run the project's test backend (`gwfast._testbase.backend`) or one-line Python
commands. Every test closes its orchestrator in a fixture, and every pid a test saw must
be gone (and reaped) afterwards, so a failing test leaks nothing.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from mcp import Client

from control.local import LocalOrchestrator
from control.orchestrator import EXITED, READY, STARTING, Observed
from control.publish import Publisher
from control.reconcile import Reconciler
from control.spec import BackendSpec, backend_spec
from control.store import Store
from gwfast._testbase.backend import Backend, BackendFactory
from gwfast._testbase.procs import REPO, free_port

pytestmark = pytest.mark.timeout(90)

BACKEND = [sys.executable, "-m", "gwfast._testbase.backend", "--port", "{port}"]
SERVE = [*BACKEND, "--replica", "r{port}"]  # whoami answers r<its port>
SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]
# a TCP server on $PORT that starts in milliseconds (no HTTP: health_check.path null)
LISTEN = [
    sys.executable,
    "-c",
    "import os, socket, time; s = socket.create_server(('127.0.0.1', int(os.environ['PORT'])));"
    " time.sleep(60)",
]
TCP_ONLY = {"path": None, "interval": "1s"}
CRASH = [sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"]


def spec(name: str, command: list[str] | None = None, **fields) -> BackendSpec:
    raw = {"name": name, **fields}
    if "url" not in fields:
        raw["command"] = command or SERVE
    return backend_spec(raw)


async def until(check: Callable[[], object], what: str, timeout: float = 20.0):
    """Poll `check` (a function or a coroutine function) until it returns something truthy;
    fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def dead_or_zombie(pid: int) -> bool:
    """For an orphan: dead, or dead and waiting for init (not us) to reap it."""
    if gone(pid):
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except (FileNotFoundError, IndexError):
        return True


class Tracked(LocalOrchestrator):
    """Remembers every replica pid it ever showed, for the leak check at teardown."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pids: set[int] = set()

    def observed(self) -> dict[str, Observed]:
        out = super().observed()
        self.pids.update(r.pid for o in out.values() for r in o.replicas if r.pid)
        return out

    def replicas(self, name: str):
        return self.observed()[name].replicas

    def pids_of(self, name: str) -> set[int]:
        return {r.pid for r in self.replicas(name) if r.pid}

    async def wait_ready(self, name: str, n: int, timeout: float = 20.0):
        def ready():
            reps = self.replicas(name)
            ok = len(reps) == n and all(r.state == READY and r.healthy is not None for r in reps)
            return reps if ok else None

        return await until(ready, f"{n} ready replicas of {name}", timeout)


@pytest.fixture
async def orch(tmp_path: Path) -> AsyncIterator[Tracked]:
    o = Tracked(log_lines=200, stop_grace=2.0)
    try:
        yield o
    finally:
        await o.close()
        assert o.observed() == {}
        alive = [pid for pid in o.pids if not gone(pid)]
        assert not alive, f"replica processes left alive or unreaped: {alive}"


@pytest.fixture(scope="module")
def test_backend(tmp_path_factory: pytest.TempPathFactory):
    factory = BackendFactory(tmp_path_factory.mktemp("backends"))
    try:
        (backend,) = factory.start(1, prefix="external")
        yield backend
    finally:
        factory.stop_all()


async def _has(o: LocalOrchestrator, name: str, line: str) -> bool:
    return line in await o.logs(name, 0, 1000)


async def whoami(url: str) -> str:
    async with Client(url, mode="legacy") as client:
        result = await client.call_tool("whoami", {})
        assert not result.is_error, result
        return result.content[0].text


async def test_replicas_published_scaled_and_replaced(orch: Tracked, tmp_path: Path) -> None:
    """Through the reconciler: ready replicas are published and serve MCP; scaling starts
    or stops only the replicas it must; a description change restarts nothing, an env
    change replaces every process."""
    store = Store(tmp_path / "state.db")
    publisher = Publisher(store)
    reconciler = Reconciler(store, orch, publisher)

    def endpoints() -> list[str]:
        snap = publisher.current
        return snap.backends["svc"].endpoints if snap and "svc" in snap.backends else []

    store.add_backend(spec("svc", replicas=2))
    await reconciler.start()
    try:
        reps = await orch.wait_ready("svc", 2)
        urls = await until(lambda: len(endpoints()) == 2 and endpoints(), "2 published endpoints")
        assert sorted(r.endpoint for r in reps) == urls
        assert publisher.current.backends["svc"].status == ""
        for url in urls:  # each replica answers MCP, as itself
            assert await whoami(url) == f"r{urlsplit(url).port}"
        two = orch.pids_of("svc")

        store.replace_backend(spec("svc", replicas=3))
        reconciler.wake()
        await orch.wait_ready("svc", 3)
        await until(lambda: len(endpoints()) == 3, "3 published endpoints")
        assert two < orch.pids_of("svc")  # the two kept running, one more started

        store.replace_backend(spec("svc", replicas=1))
        reconciler.wake()
        (one,) = await until(lambda: len(endpoints()) == 1 and endpoints(), "1 endpoint")
        await orch.wait_ready("svc", 1)
        kept = orch.pids_of("svc")
        assert kept < two  # the highest indices went; replica 0 stayed
        stopped = orch.pids - kept
        await until(lambda: all(gone(p) for p in stopped), "scaled-down processes reaped", 5)

        store.replace_backend(spec("svc", replicas=1, description="now with words"))
        reconciler.wake()
        await until(lambda: orch.observed()["svc"].spec.description, "the new spec")
        assert orch.pids_of("svc") == kept and endpoints() == [one]

        store.replace_backend(spec("svc", replicas=1, env={"MODE": "new"}))
        reconciler.wake()
        await until(lambda: orch.observed()["svc"].spec.env, "the new spec")
        (new,) = await until(
            lambda: endpoints() != [one] and len(endpoints()) == 1 and endpoints(),
            "the replacement published alone",
        )
        (replica,) = await orch.wait_ready("svc", 1)
        assert replica.pid not in kept and replica.endpoint == new
        await until(lambda: all(gone(p) for p in kept), "the replaced process reaped", 5)
        assert await whoami(new) == f"r{urlsplit(new).port}"
    finally:
        await reconciler.close()
        store.close()


async def test_failing_replacement_leaves_the_old_process_serving(orch: Tracked) -> None:
    """A runtime change whose new process never becomes ready (rolling, per slot): the old
    one stays listed and routable; `remove` then stops and forgets both."""
    await orch.ensure(spec("roll", LISTEN, health_check=TCP_ONLY))
    (old,) = await orch.wait_ready("roll", 1)
    assert old.health == "accepts TCP connections" and old.healthy is True
    await orch.ensure(spec("roll", CRASH, health_check=TCP_ONLY))
    both = await until(
        lambda: (
            [r.state for r in orch.replicas("roll")] == [READY, EXITED] and orch.replicas("roll")
        ),
        "the old replica serving beside the crashing new one",
    )
    assert both[0].pid == old.pid and both[0].endpoint == old.endpoint
    assert both[1].endpoint != old.endpoint and "status 3" in both[1].last_exit
    logs = await orch.logs("roll", 0, 10)
    assert "--- replica 0 replaced (its command, env or path changed)" in logs
    await orch.remove("roll")
    assert "roll" not in orch.observed() and gone(old.pid)
    with pytest.raises(KeyError):
        await orch.logs("roll", 0, 1)


async def test_sigkilled_replica_restarts_on_its_port(orch: Tracked) -> None:
    await orch.ensure(spec("k"))
    (before,) = await orch.wait_ready("k", 1)
    os.kill(before.pid, signal.SIGKILL)
    (dead,) = await until(
        lambda: [r for r in orch.replicas("k") if r.state == EXITED], "the replica to exit"
    )
    assert dead.last_exit.startswith("killed by SIGKILL"), dead.last_exit
    assert gone(before.pid)
    (after,) = await orch.wait_ready("k", 1)
    assert after.restarts == 1 and after.endpoint == before.endpoint
    assert after.pid != before.pid
    assert "--- replica 0 restarted (killed by SIGKILL" in "\n".join(await orch.logs("k", 0, 10))


async def test_crashing_command_backs_off(orch: Tracked) -> None:
    await orch.ensure(spec("crash", CRASH))
    seen: list[str] = []

    def backoffs() -> list[str]:
        obs = orch.observed()["crash"]
        (r,) = obs.replicas
        if r.state == EXITED and (not seen or seen[-1] != obs.message):
            assert r.last_exit.startswith("exited with status 3 after"), r.last_exit
            seen.append(obs.message)
        return seen if len(seen) >= 3 else []

    await until(backoffs, "three restarts", timeout=15)
    assert seen[:3] == [f"replica 0 restarts after {s}s" for s in (1, 2, 4)]
    assert orch.replicas("crash")[0].restarts >= 2
    lines = await orch.logs("crash", 0, 100)
    assert lines.count("[stderr] boom") >= 3
    assert "--- replica 0 restarted (exited with status 3 after" in lines[1]
    assert await orch.logs("crash", None, 1) == [f"[0] {lines[-1]}"]
    with pytest.raises(IndexError):
        await orch.logs("crash", 1, 10)
    with pytest.raises(KeyError):
        await orch.logs("nosuch", None, 10)


async def test_command_that_cannot_start(orch: Tracked) -> None:
    await orch.ensure(spec("missing", ["nosuch-command-gwfast", "--port", "{port}"]))
    (r,) = await until(
        lambda: [r for r in orch.replicas("missing") if r.state == EXITED], "the start failure"
    )
    assert r.last_exit == (
        "could not start: [Errno 2] No such file or directory: 'nosuch-command-gwfast' "
        "(looked up on the control process's PATH: give the full path, or set PATH in the "
        "backend's env)"
    )
    assert r.pid is None and not r.routable
    assert "restarts after 1s" in orch.observed()["missing"].message
    assert (await orch.logs("missing", 0, 5))[0].startswith("--- replica 0 could not start")


async def test_logs_are_bounded(tmp_path: Path) -> None:
    # stdout and stderr are read apart: the pause keeps their order for the assertions
    noisy = "import sys, time\nfor i in range(500): print('line', i)\nprint('x' * 20000)\n"
    noisy += "sys.stdout.flush(); time.sleep(0.5)\nprint('err', file=sys.stderr, flush=True)\n"
    noisy += "time.sleep(60)"
    o = Tracked(log_lines=20, stop_grace=1.0)
    try:
        await o.ensure(spec("noisy", [sys.executable, "-c", noisy]))
        await until(lambda: _has(o, "noisy", "[stderr] err"), "the last line")
        lines = await o.logs("noisy", 0, 1000)
        assert len(lines) == 20 and lines[-1] == "[stderr] err"
        assert lines[-2] == "[stdout] " + "x" * 8192 + " [line cut at 8 KiB]"
        assert lines[0] == "[stdout] line 482"
        assert await o.logs("noisy", 0, 3) == lines[-3:]
        assert len(await o.logs("noisy", None, 1000)) == 20
    finally:
        await o.close()
    assert all(gone(p) for p in o.pids)


async def test_close_stops_everything(tmp_path: Path) -> None:
    """Group stop reaches a grandchild; a child that ignores SIGTERM is killed after the
    grace period; every process is reaped."""
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ignoring', flush=True); time.sleep(60)"
    )
    parent = ["sh", "-c", "sleep 60 & echo child $!; wait"]
    o = Tracked(stop_grace=0.5)
    await o.ensure(spec("stubborn", [sys.executable, "-c", stubborn]))
    await o.ensure(spec("sleepers", SLEEP, replicas=2))
    await o.ensure(spec("parent", parent))

    async def grandchild() -> int | None:
        lines = await o.logs("parent", 0, 10)
        return next((int(x.split()[-1]) for x in lines if "child" in x), None)

    grand = await until(grandchild, "the grandchild's pid")
    await until(lambda: _has(o, "stubborn", "[stdout] ignoring"), "SIGTERM ignored")
    await until(lambda: len(o.pids_of("sleepers")) == 2, "both sleepers")
    pids = o.pids_of("stubborn") | o.pids_of("sleepers") | o.pids_of("parent") | {grand}
    assert len(pids) == 5
    started = time.monotonic()
    await o.close()
    assert time.monotonic() - started < 3
    # the grandchild is init's to reap once its parent died
    assert [p for p in pids - {grand} if not gone(p)] == [] and dead_or_zombie(grand)


async def test_replica_dies_with_a_killed_control_process(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: SIGKILL the process that runs the orchestrator, and its replica
    goes too (the orphan may linger as a zombie of init, which is not ours to reap)."""
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from control.local import LocalOrchestrator
        from control.spec import backend_spec

        async def main():
            o = LocalOrchestrator()
            await o.ensure(backend_spec({{"name": "a", "command": {SLEEP!r}}}))
            while not (pid := o.observed()["a"].replicas[0].pid):
                await asyncio.sleep(0.02)
            print(pid, flush=True)
            await asyncio.sleep(60)

        asyncio.run(main())
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        pid = int(proc.stdout.readline())
        assert not gone(pid)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    try:
        await until(lambda: dead_or_zombie(pid), "the orphaned replica to die", timeout=5)
    finally:
        if not dead_or_zombie(pid):
            os.kill(pid, signal.SIGKILL)


async def test_url_backends(orch: Tracked, test_backend: Backend) -> None:
    await orch.ensure(spec("ext", url=test_backend.url))
    closed = f"http://127.0.0.1:{free_port()}/mcp"
    await orch.ensure(spec("down", url=closed))
    (r,) = await orch.wait_ready("ext", 1)
    assert r.endpoint == test_backend.url and r.pid is None and r.healthy is True
    assert r.health == "GET /healthz answered 200"
    (d,) = await until(lambda: [x for x in orch.replicas("down") if x.health], "a message")
    assert d.state == STARTING and not d.routable and d.healthy is False
    assert d.health == (
        f"{urlsplit(closed).netloc}: TCP connect failed (Connection refused): is the server "
        "running on that port?"
    )


async def test_backend_without_healthz_is_still_routable(orch: Tracked) -> None:
    await orch.ensure(spec("nohz", health_check={"path": "/nohealth", "interval": "1s"}))
    (r,) = await orch.wait_ready("nohz", 1)
    assert r.routable and r.healthy is False
    assert r.health == (
        "GET /nohealth answered 404: implement it or set health_check.path (null checks TCP only)"
    )


async def test_image_refused(orch: Tracked) -> None:
    image = spec("img", url=None, image="ghcr.io/example/mcp:1")
    assert "Kubernetes orchestrator" in (orch.refuses(image) or "")
    assert orch.refuses(spec("cmd")) is None
    await orch.ensure(image)
    obs = orch.observed()["img"]
    assert obs.replicas == [] and "Kubernetes" in obs.message
