"""Copies as runtimes do them (issue 13), through the simulation executor, with hand-computed stalls.

One MoE layer, 4 experts, top-1, a one-slot cache and a cycling trace: every token misses, and every
token after the first evicts the expert before it. The link moves one expert (3,145,728 bytes) in
1.0 ms at 3.145728 GB/s, plus a 0.25 ms fixed cost per copy, so a miss stalls its step by 1.25 ms.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from moesim.hardware import estimate_profile
from moesim.traces.trace import Trace, TraceMeta
from tests.helpers import make_model, prepared, random_trace, simulate

GBPS, OVERHEAD_US = 3.145728, 250.0
TOKENS = 8


def _setting():
    model = make_model(1, 4, 1)
    ex = (np.arange(TOKENS) % 4).astype(np.int16).reshape(TOKENS, 1, 1)
    trace = Trace(TraceMeta("test", 1, 4, 1), ex, np.array([0, TOKENS], np.int64), np.full(1, -1, np.int16))
    profile = estimate_profile(model, "h100-pcie").with_link(h2d_gbps=GBPS, overhead_us=OVERHEAD_US)
    return model, trace, profile


def _stalls(hardware: dict | None = None, writeback: bool = False) -> np.ndarray:
    model, trace, profile = _setting()
    p = prepared(trace, model, profile, capacity=1)
    p.scenario.hardware = dataclasses.replace(p.scenario.hardware, **(hardware or {}))
    p.scenario.miss = dataclasses.replace(p.scenario.miss, writeback=writeback)
    res = simulate(p)
    assert res.summary["counts"]["misses"] == TOKENS
    return np.asarray(res.tokens["stall_ms"], dtype=float)


def test_every_miss_stalls_one_copy():
    assert _stalls() == pytest.approx([1.25] * TOKENS, rel=1e-9)


def test_writeback_doubles_a_copy():
    # the first token fills an empty slot; every later one writes its victim back first
    assert _stalls(writeback=True) == pytest.approx([1.25] + [2.5] * (TOKENS - 1), rel=1e-9)


def test_lone_copy_on_a_two_lane_engine_gets_the_whole_link():
    active = _stalls({"copy_engines": 2, "lane_sharing": "active"})
    static = _stalls({"copy_engines": 2})
    assert active == pytest.approx([1.25] * TOKENS, rel=1e-9)
    assert static == pytest.approx([0.25 + 2 * 1.0] * TOKENS, rel=1e-9)  # a lane has half the link


def test_demand_copy_issue_latency_delays_the_copy():
    assert _stalls({"copy_issue_us": 100.0}) == pytest.approx([1.35] * TOKENS, rel=1e-9)


def test_writeback_and_issue_latency_add_up_on_a_shared_link():
    got = _stalls({"copy_engines": 2, "lane_sharing": "active", "copy_issue_us": 100.0}, writeback=True)
    assert got == pytest.approx([1.35] + [2.6] * (TOKENS - 1), rel=1e-9)


@pytest.mark.parametrize("predictor", ["oracle", "prev-token"])
def test_active_sharing_runs_deterministically_with_prefetches(predictor):
    rng = np.random.default_rng(3)
    model = make_model(3, 8, 2)
    trace = random_trace(rng, 2, 10, 3, 8, 2)
    profile = estimate_profile(model, "h100-pcie")

    def run(timeline: bool):
        from moesim.experiments.run import run_prepared

        p = prepared(trace, model, profile, predictor=predictor, capacity=8)
        p.scenario.hardware = dataclasses.replace(p.scenario.hardware, copy_engines=2, lane_sharing="active")
        return run_prepared(p, timeline=timeline)

    a, b, c = run(False), run(False), run(True)
    tpot = list(a.tokens["tpot_ms"])
    assert tpot == list(b.tokens["tpot_ms"]) == list(c.tokens["tpot_ms"])
    static = prepared(trace, model, profile, predictor=predictor, capacity=8)
    s = simulate(static)
    assert s.summary["traffic"] == a.summary["traffic"]  # decisions do not depend on timing
    assert all(t >= c - 1e-9 for t, c in zip(tpot, a.tokens["compute_ms"]))
    assert tpot != list(s.tokens["tpot_ms"])  # one lane (static default) times differently
