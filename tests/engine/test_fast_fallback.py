"""What the fast executor does not cover runs on the simulator: under ``executor: auto`` (the
default) such a scenario falls back to sim (and says so in provenance.executor), under
``executor: fast`` it is a one-line input error naming the key. Eligibility is decided by exact
class, never by name: a plug-in registered from outside, even a subclass of a covered class, and
even under a covered class's name, falls back.

Features the issue leaves optional (DRAM tier, cancel_stale, ...) are checked either way: if auto
takes the fast path the run must equal the simulator's (``fastdiff``); if not, ``executor: fast``
must be refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from moesim.errors import MoesimInputError
from tests.engine.fastdiff import FAST, assert_same, executor_of, needs_fast, run, write_inputs
from tests.helpers import random_trace

pytestmark = needs_fast

L, E, K = 3, 8, 2
BASE = {"cache.capacity": 6, "predictor.name": "oracle", "predictor.horizon": 1, "hardware.h2d_gbps": 2.0}


def _trace(prefill: bool = False):
    trace = random_trace(np.random.default_rng(3), 4, [7, 5, 9, 6], L, E, K)
    if prefill:  # a prompt pass per sequence, for scenarios with prefill: true
        rng = np.random.default_rng(4)
        lens = [4, 3, 5, 2]
        trace.prefill_experts = np.argsort(rng.random((sum(lens), L, E)), axis=-1)[..., :K].astype(np.int16)
        trace.prefill_offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    return trace


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Any]:
    return write_inputs(tmp_path_factory.mktemp("fallback"), _trace())


@pytest.fixture(scope="module")
def prefill_inputs(tmp_path_factory) -> dict[str, Any]:
    return write_inputs(tmp_path_factory.mktemp("fallback-prefill"), _trace(prefill=True))


def refused(overrides: dict[str, Any], **kw: Any) -> str:
    """``executor: fast`` on ``overrides``: one MoesimInputError line naming the executor key."""
    with pytest.raises(MoesimInputError) as err:
        run_with(overrides, "fast", **kw)
    line = str(err.value)
    assert line and "\n" not in line, f"not one line: {line!r}"
    assert "executor" in line, f"does not name the executor key: {line}"
    return line


def run_with(overrides: dict[str, Any], executor: str, timeline: bool = False):
    if not timeline:
        return run(overrides, executor)
    from moesim.experiments.cache import RunCache
    from moesim.experiments.overrides import resolve_scenario
    from moesim.experiments.pipeline import run_scenario

    sc = resolve_scenario(None, None, {**overrides, "executor": executor})
    return run_scenario(sc, RunCache(), timeline=True)


def falls_back(overrides: dict[str, Any], **kw: Any) -> None:
    auto = run_with(overrides, "auto", **kw)
    assert executor_of(auto) == "sim", f"auto ran {executor_of(auto)!r} on an uncovered scenario"
    assert_same(run_with(overrides, "sim", **kw), auto, "auto's fallback is the simulator's run")
    refused(overrides, **kw)


# -- not covered: falls back -----------------------------------------------------------------------
NOT_COVERED = {
    "miss-cpu": {"miss.policy": "cpu", "predictor.name": "none"},
    "miss-cost": {"miss.policy": "cost", "predictor.name": "none"},
    "miss-skip": {"miss.policy": "skip", "predictor.name": "none"},
    "miss-substitute": {"miss.policy": "substitute", "predictor.name": "none"},
    "continuous-poisson": {"arrivals.process": "poisson", "arrivals.rate_per_s": 200.0, "batch": 2},
    "continuous-times": {"arrivals.process": "times", "arrivals.times_ms": [0.0, 0.5, 3.0, 9.0], "batch": 2},
    "cache-pin-hot": {"cache.policy": "pin-hot"},
    "cache-least-stale": {"cache.policy": "least-stale"},
    "cache-prophet-tiered": {"cache.policy": "prophet-tiered"},
    "pred-moe-infinity": {"predictor.name": "moe-infinity"},
    "pred-finemoe": {"predictor.name": "finemoe"},
    "pred-next-gate": {"predictor.name": "next-gate"},
    "pred-pre-attention": {
        "predictor.name": "pre-attention",
        "predictor.horizon": 0,
        "predictor.params.epochs": 1,
    },
}


@pytest.mark.parametrize("name", sorted(NOT_COVERED))
def test_uncovered_feature_falls_back(inputs, name):
    falls_back({**inputs, **BASE, **NOT_COVERED[name]})


def test_prefill_falls_back(prefill_inputs):
    falls_back({**prefill_inputs, **BASE, "prefill": True})


def test_timeline_falls_back(inputs):
    """A timeline records the simulator's events: the fast path has none to give."""
    falls_back({**inputs, **BASE}, timeline=True)


def test_cli_refuses_fast_on_an_uncovered_scenario(inputs, tmp_path):
    from tests.fuzz.fuzzkit import assert_refused, run_cli

    sets = [f"{k}={v}" for k, v in {**inputs, **BASE, "miss.policy": "skip", "executor": "fast"}.items()]
    out = tmp_path / "run"
    res = run_cli(["run", *[a for s in sets for a in ("--set", s)], "--out", out, "--quiet"])
    assert_refused(res, "executor", written=out)


# -- plug-ins registered from outside: eligibility by exact class ----------------------------------
def _register(monkeypatch, registry, name: str, cls: type) -> None:
    registry.names()  # built-ins loaded first: registering over them later would collide
    monkeypatch.setitem(registry._items, name, cls)
    monkeypatch.setitem(registry._sources, name, "tests (outside moesim)")


def _subclass(base: type, name: str) -> type:
    """A plug-in that behaves exactly as ``base`` (so the fallback's result is checkable) but is
    another class."""
    return type(f"Outside{base.__name__}", (base,), {"name": name, "__module__": "outside_plugin"})


@pytest.mark.parametrize("same_name", [False, True], ids=["new-name", "same-name"])
@pytest.mark.parametrize(
    "family,key,covered", [("caches", "cache.policy", "lru"), ("predictors", "predictor.name", "oracle")]
)
def test_outside_subclass_falls_back(inputs, monkeypatch, family, key, covered, same_name):
    from moesim.policies import registries

    registry = getattr(registries.DEFAULT, family)
    base = registry.get(covered)
    assert executor_of(run({**inputs, **BASE, key: covered}, "auto")) == FAST  # the class itself is covered
    name = covered if same_name else f"outside-{covered}"
    _register(monkeypatch, registry, name, _subclass(base, name))
    falls_back({**inputs, **BASE, key: name})


def test_outside_miss_handler_under_the_fetch_name_falls_back(inputs, monkeypatch):
    from moesim.policies.registries import MISS_HANDLERS

    _register(monkeypatch, MISS_HANDLERS, "fetch", _subclass(MISS_HANDLERS.get("fetch"), "fetch"))
    falls_back({**inputs, **BASE})


# -- optional in the issue: covered (and then equal) or falling back -------------------------------
EITHER = {
    "cache-arc": {"cache.policy": "arc"},
    "dram-tier-lru": {"tiers.dram_gb": 0.002, "tiers.dram_policy": "lru"},
    "dram-tier-lfu": {"tiers.dram_gb": 0.002, "tiers.dram_policy": "lfu", "batch": 2},
    "cancel-stale": {
        "predictor.name": "noisy-oracle",
        "predictor.params.accuracy": 0.5,
        "predictor.cancel_stale": True,
        "predictor.horizon": 2,
        "hardware.h2d_gbps": 0.05,
    },
    "reset-per-sequence": {"cache.reset_per_sequence": True},
    "bypass": {"cache.capacity": 1, "cache.bypass": True},
    "predictor-latency": {"predictor.name": "markov", "predictor.params.latency_ms": 0.05},
    "predictor-on-gpu": {
        "predictor.name": "markov",
        "predictor.params.runs_on": "gpu",
        "predictor.params.latency_ms": 0.05,
    },
    "horizon-per-layer": {"predictor.name": "markov", "predictor.params.horizon_per_layer": [1, 2, 3]},
    "popularity-per-batch": {
        "predictor.name": "popularity",
        "predictor.params.per_sequence": False,
        "batch": 2,
    },
    "horizon-0": {"predictor.name": "oracle", "predictor.horizon": 0},
    "link-overhead-only": {"hardware.h2d_gbps": float("inf"), "hardware.h2d_overhead_us": 0.0},
}


@pytest.mark.parametrize("name", sorted(EITHER))
def test_optional_feature_is_covered_or_falls_back(inputs, name):
    over = {**inputs, **BASE, **EITHER[name]}
    auto = run(over, "auto")
    if executor_of(auto) == "sim":
        refused(over)
    else:
        assert executor_of(auto) == FAST
        assert_same(run(over, "sim"), auto, name)
