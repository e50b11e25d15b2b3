"""The snapshot's balancing tables, on both twins (model_py and its compiled build)."""

from __future__ import annotations

import collections

import pytest

from gwfast import model, model_py
from gwfast.config import parse_config


def twins() -> list[type]:
    return [model_py.Backend] + ([model.Backend] if model.COMPILED else [])


def backend(cls: type, n: int, affinity: str = "none"):
    urls = [f"http://127.0.0.1:{9000 + i}/mcp" for i in range(n)]
    _, backends = parse_config({"backends": {"b": {"endpoints": urls, "affinity": affinity}}})
    return cls("b", backends["b"])


@pytest.mark.parametrize("cls", twins())
def test_pick_least_loaded_takes_the_lighter_of_two_random_candidates(cls: type) -> None:
    b = backend(cls, 3)
    for e, load in zip(b.endpoints, (5, 0, 9), strict=True):
        e.outstanding = load
    picks = collections.Counter(b.pick_least_loaded().index for _ in range(3000))
    # pairs {0,1} and {1,2} pick 1, {0,2} picks 0: the heaviest is never picked
    assert picks[2] == 0
    assert 1700 < picks[1] < 2300 and 700 < picks[0] < 1300, picks


@pytest.mark.parametrize("cls", twins())
def test_pick_least_loaded_skips_unhealthy_and_excluded(cls: type) -> None:
    b = backend(cls, 4)
    e0, e1, e2, e3 = b.endpoints
    b.set_health(e1, False)
    seen = {b.pick_least_loaded(exclude={e3.index}).index for _ in range(400)}
    assert seen == {e0.index, e2.index}
    assert b.pick_least_loaded(exclude={e0.index, e3.index}) is e2  # the only candidate
    assert b.pick_least_loaded(exclude={e0.index, e2.index, e3.index}) is None
