"""The reconciler's decisions as the pure functions they are: desired and observed state in,
actions and the routing snapshot out. No process runs here."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec

from control.orchestrator import EXITED, READY, STARTING, Observed, Replica
from control.reconcile import Ensure, Remove, plan, replica_summary, snapshot
from control.spec import backend_spec, tenant_spec
from control.store import Store


def _spec(name: str = "tools", **fields):
    return backend_spec({"name": name, "command": ["srv", "--port", "{port}"], **fields})


def _ready(index: int, port: int) -> Replica:
    return Replica(index=index, state=READY, endpoint=f"http://127.0.0.1:{port}/mcp")


def test_plan_ensures_new_and_changed_removes_gone() -> None:
    a, b = _spec("a"), _spec("b", replicas=2)
    observed = {
        "b": Observed(spec=_spec("b", replicas=1)),  # scaled since
        "c": Observed(spec=_spec("c")),  # unregistered since
    }
    assert plan({"a": a, "b": b}, observed) == [Ensure(a), Ensure(b), Remove("c")]


def test_plan_leaves_converged_backends_alone() -> None:
    a = _spec("a")
    assert plan({"a": a}, {"a": Observed(spec=a, replicas=[_ready(0, 9001)])}) == []


def test_snapshot_routes_ready_replicas_only_and_says_why() -> None:
    spec = _spec(replicas=3, health_check={"path": None, "interval": "2s"}, affinity="none")
    obs = Observed(
        spec=spec,
        replicas=[
            _ready(0, 9002),
            Replica(index=1, state=STARTING, endpoint="http://127.0.0.1:9003/mcp"),
            Replica(index=2, state=EXITED, last_exit="exited with status 3 after 0.2s"),
        ],
    )
    snap = snapshot(7, {"tools": spec}, {"tools": obs}, {})
    wb = snap.backends["tools"]
    assert snap.version == 7
    assert wb.endpoints == ["http://127.0.0.1:9002/mcp"]
    assert wb.affinity == "none" and wb.health_check.path is None
    assert wb.health_check.interval == 2.0
    assert "1 of 3 replicas ready" in wb.status
    assert "replica 2 exited (exited with status 3 after 0.2s)" in wb.status
    assert "backend_logs tools" in wb.status


def test_snapshot_of_a_backend_converging_to_an_older_spec_routes_nothing() -> None:
    """While the orchestrator still runs the previous spec (a runtime change is rolling),
    nothing is published from the stale view."""
    new, old = _spec(env={"A": "2"}), _spec(env={"A": "1"})
    snap = snapshot(1, {"tools": new}, {"tools": Observed(spec=old, replicas=[_ready(0, 1)])}, {})
    assert snap.backends["tools"].endpoints == []


def test_snapshot_carries_tenants_and_quotas() -> None:
    t = tenant_spec(
        {
            "name": "engineering",
            "quota": {"requests": 1000, "period": "1h"},
            "backend_quotas": {"github": {"requests": 100, "period": "1m"}},
        }
    )
    snap = snapshot(1, {}, {}, {"engineering": t})
    wt = snap.tenants["engineering"]
    assert (wt.quota.requests, wt.quota.period) == (1000, 3600.0)
    assert (wt.backend_quotas["github"].requests, wt.backend_quotas["github"].period) == (100, 60)


def test_replica_summary_is_empty_when_all_route() -> None:
    spec = _spec(replicas=2)
    obs = Observed(spec=spec, replicas=[_ready(0, 1), _ready(1, 2)])
    assert replica_summary(spec, obs) == ""
    assert "scaled to 0" in replica_summary(_spec(replicas=0), Observed(spec=_spec(replicas=0)))


def test_snapshot_versions_grow_over_restarts_and_a_wiped_store(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    first = store.next_version()
    store.close()
    again = Store(tmp_path / "state.db")
    second = again.next_version()
    again.close()
    (tmp_path / "state.db").unlink()
    time.sleep(0.005)  # a wipe and a restart take longer than the clock's millisecond
    wiped = Store(tmp_path / "state.db").next_version()
    assert first < second
    assert wiped != first and wiped != second  # never reused: at least the clock in ms


def test_wire_snapshot_round_trips() -> None:
    from gwfast import wire

    snap = snapshot(3, {"tools": _spec()}, {}, {})
    assert wire.decode(wire.encode(snap)) == snap
    assert msgspec.json.decode(wire.encode(snap))["backends"]["tools"]["endpoints"] == []
