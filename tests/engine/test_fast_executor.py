"""The fast executor (moesim.engine.fast) against the simulation executor: the same summary.json bytes
(except ``provenance.executor``), tokens and layers tables and extras, on the default scenario and
on several policies, predictors, scopes, lanes and batch sizes; its prediction pass against the
predictor objects; and the fall-back to sim of every setting it does not cover."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from moesim.engine.fast.eligibility import core_gap, scenario_gap
from moesim.engine.fast.executor import FastExecutor
from moesim.engine.fast.predictions import plan_arrays, routing_plan, step_arrays
from moesim.engine.sim_executor import SimExecutor
from moesim.errors import MoesimInputError
from moesim.experiments import pipeline
from moesim.experiments.run import build_core
from moesim.experiments.scenario import load_scenario
from moesim.hardware.costs import CostModel
from moesim.io import dumps_json
from moesim.policies.caches.lru import LRU
from moesim.policies.core import PlannerConfig, PolicyCore
from moesim.policies.pool import ExpertPool
from moesim.policies.predictors.base import PRE_ATTENTION
from moesim.policies.predictors.oracle import Oracle


def _without_executor(summary: dict) -> tuple[str, str]:
    s = json.loads(dumps_json(summary))
    ran = s["provenance"].pop("executor")
    return ran, dumps_json(s)


def assert_same_run(a, b) -> None:
    """``a`` ran on sim, ``b`` on fast, and they agree on everything else."""
    ran_a, sa = _without_executor(a.summary)
    ran_b, sb = _without_executor(b.summary)
    assert (ran_a, ran_b) == ("sim", "fast")
    assert sa == sb
    pd.testing.assert_frame_equal(a.tokens, b.tokens, check_exact=True)
    pd.testing.assert_frame_equal(a.layers, b.layers, check_exact=True)
    pd.testing.assert_frame_equal(a.extras, b.extras, check_exact=True)


def both(sets: list[str]):
    sc = load_scenario(None, sets)
    a = pipeline.run_scenario(sc, executor="sim")
    b = pipeline.run_scenario(load_scenario(None, sets), executor="fast")
    return a, b


CASES = [
    ["trace.max_sequences=4"],  # the default scenario, cut short
    ["predictor.name=oracle", "trace.max_sequences=6"],
    ["predictor.name=oracle", "predictor.horizon=4", "cache.capacity=40", "hardware.copy_engines=2", "trace.max_sequences=6"],
    ["predictor.name=oracle", "predictor.overprovision=4", "cache.capacity=24", "hardware.h2d_gbps=2", "trace.max_sequences=5"],
    ["predictor.name=popularity", "predictor.horizon=2", "predictor.threshold=0.02", "trace.max_sequences=6"],
    ["predictor.name=prev-token", "predictor.horizon=16", "cache.capacity=64", "trace.max_sequences=6"],
    ["predictor.name=markov", "cache.policy=lfu", "cache.capacity=48", "trace.max_sequences=4"],
    ["predictor.name=markov", "predictor.params.runs_on=gpu", "predictor.params.latency_ms=0.3", "cache.capacity=48", "trace.max_sequences=3"],
    ["predictor.name=st-moe", "cache.policy=belady", "cache.capacity=64", "trace.max_sequences=4"],
    ["predictor.name=noisy-oracle", "cache.policy=fifo", "cache.scope=per-layer", "cache.capacity=10", "trace.max_sequences=3"],
    ["predictor.name=oracle", "batch=3", "cache.capacity=64", "hardware.copy_engines=3", "trace.max_sequences=7"],
    ["predictor.name=popularity", "batch=4", "cache.scope=split", "cache.capacity=600", "trace.max_sequences=9"],
    ["predictor.name=oracle", "predictor.horizon=2", "cache.capacity=8", "cache.bypass=true", "trace.max_sequences=3"],
    ["predictor.name=prev-token", "predictor.horizon=8", "batch=2", "cache.policy=belady", "cache.capacity=20", "hardware.h2d_gbps=3", "trace.max_sequences=5"],
]  # fmt: skip


@pytest.mark.parametrize("sets", CASES, ids=[" ".join(c) for c in CASES])
def test_fast_equals_sim(sets):
    assert_same_run(*both(sets))


def test_auto_takes_fast_when_covered_and_sim_otherwise():
    sc = load_scenario(None, ["trace.max_sequences=2"])
    assert pipeline.run_scenario(sc).summary["provenance"]["executor"] == "fast"
    sc = load_scenario(None, ["trace.max_sequences=2", "miss.policy=cpu"])
    assert pipeline.run_scenario(sc).summary["provenance"]["executor"] == "sim"
    sc = load_scenario(None, ["trace.max_sequences=2", "executor=sim"])
    assert pipeline.run_scenario(sc).summary["provenance"]["executor"] == "sim"


UNCOVERED = [
    (["miss.policy=cpu"], "miss.policy"),
    (["miss.policy=skip"], "miss.policy"),
    (["tiers.dram_gb=0.5"], "tiers.dram_gb"),
    (["arrivals.process=poisson", "arrivals.rate_per_s=50"], "arrivals.process"),
    (["cache.policy=arc"], "cache.policy=arc"),
    (["cache.policy=pin-hot"], "cache.policy=pin-hot"),
    (["cache.reset_per_sequence=true"], "cache.reset_per_sequence"),
    (["predictor.name=oracle", "predictor.cancel_stale=true"], "predictor.cancel_stale"),
    (["predictor.name=finemoe"], "predictor.name=finemoe"),
    # the timing model of issue 13 (docs/fidelity.md) is the simulation executor's alone
    (["runtime.preset=eager-pytorch"], "runtime.preset"),
    (["runtime.whole_token=true"], "runtime.whole_token"),
    (["miss.writeback=true"], "miss.writeback"),
    (["hardware.copy_engines=2", "hardware.lane_sharing=active"], "hardware.lane_sharing"),
    (["hardware.copy_issue_us=20"], "hardware.copy_issue_us"),
]


@pytest.mark.parametrize("sets,named", UNCOVERED, ids=[" ".join(s) for s, _ in UNCOVERED])
def test_uncovered_settings_fall_back_to_sim(sets, named):
    base = ["trace.max_sequences=2", *sets]
    with pytest.raises(MoesimInputError, match=f"fast executor does not cover {named}"):
        pipeline.run_scenario(load_scenario(None, [*base, "executor=fast"]))
    assert pipeline.run_scenario(load_scenario(None, base)).summary["provenance"]["executor"] == "sim"


def test_timeline_and_decision_log_fall_back_to_sim():
    sc = load_scenario(None, ["trace.max_sequences=1"])
    assert pipeline.run_scenario(sc, timeline=True).summary["provenance"]["executor"] == "sim"
    assert pipeline.run_scenario(sc, record=True).summary["provenance"]["executor"] == "sim"
    with pytest.raises(MoesimInputError, match="timeline"):
        pipeline.run_scenario(sc, timeline=True, executor="fast")


def test_a_chunked_run_equals_one_chunk(monkeypatch):
    """The fast path streams long runs in chunks of groups (no size bound sends them to sim): a run
    cut into chunks of a few groups gives the same result as one chunk (tests/engine/test_fast_chunks.py
    covers the cases)."""
    from moesim.engine.fast import chunks

    sets = ["trace.max_sequences=5", "predictor.name=oracle", "hardware.h2d_gbps=2"]
    one = pipeline.run_scenario(load_scenario(None, sets), executor="fast")
    monkeypatch.setattr(chunks, "CHUNK_ACCESSES", 1)  # one group per chunk
    cut = pipeline.run_scenario(load_scenario(None, sets), executor="fast")
    assert one.summary == cut.summary
    pd.testing.assert_frame_equal(one.tokens, cut.tokens, check_exact=True)
    pd.testing.assert_frame_equal(one.layers, cut.layers, check_exact=True)


def test_a_cost_model_with_host_times_falls_back_to_sim():
    """Host tables come with a (CUDA-measured) profile, not a scenario key: the cost model decides."""
    from moesim.hardware.runtime import RuntimeCosts

    p = _prepared(["trace.max_sequences=1"])
    host = CostModel(p.profile, p.model, runtime=RuntimeCosts(launch_ms=0.005))
    assert host.host_timeline
    which = dict(executor=None, executor_name="sim", timeline=False, batching=True, record=False)
    core = build_core(p)
    assert pipeline.choose_executor(p, core, CostModel(p.profile, p.model), **which) == "fast"
    assert pipeline.choose_executor(p, core, host, **which) == "sim"
    with pytest.raises(MoesimInputError, match="host"):
        pipeline.choose_executor(p, core, host, **dict(which, executor="fast"))


def test_unknown_scenario_keys_are_covered_only_at_their_default():
    class Sc:  # a scenario with a section added later (e.g. by another feature), default 0
        def __init__(self, value=0):
            self.value = value

        def to_dict(self):
            d = load_scenario(None).to_dict()
            d["runtime"] = {"new_knob": self.value}
            return d

    assert scenario_gap(Sc(1)) == "runtime.new_knob=1"
    assert scenario_gap(Sc(0)) is None
    assert scenario_gap(load_scenario(None)) is None


class _SubLRU(LRU):  # a plug-in's subclass: same name, maybe other behaviour
    name = "my-lru"


class _PreAttentionOracle(Oracle):
    """An oracle firing before attention on the GPU, with a cost: exercises the fast path's
    pre-attention timing (no built-in routing-only predictor fires there)."""

    fires = PRE_ATTENTION
    runs_on = "gpu"

    def latency_ms(self, batch: int, context: int) -> float:
        return 0.05 + 0.001 * batch + 1e-5 * context


def _prepared(sets: list[str]):
    return pipeline.load(load_scenario(None, sets))


def test_plugin_subclasses_are_not_covered():
    p = _prepared(["trace.max_sequences=1"])
    core = build_core(p)
    core.pool = ExpertPool(_SubLRU, 256, "global", core.pool.policies[0].ctx, p.min_slots)
    assert "class _SubLRU" in core_gap(core)
    pred = _PreAttentionOracle(core.predictor.setup)
    core2 = build_core(p)
    core2.predictor = pred
    assert "class _PreAttentionOracle" in core_gap(core2)


def _core_with(p, predictor) -> PolicyCore:
    base = build_core(p)
    planner = PlannerConfig(p.top_n, p.scenario.predictor.overprovision, p.scenario.predictor.threshold)
    return PolicyCore(predictor, base._pool_factory, planner, base.L, base.E, refetch_window=16)


@pytest.mark.parametrize("batch,lanes", [(1, 1), (1, 2), (3, 1)])
def test_pre_attention_gpu_predictor_direct(batch, lanes):
    """FastExecutor and SimExecutor driven directly with a predictor firing before attention."""
    p = _prepared(["trace.max_sequences=4", f"batch={batch}", "cache.capacity=48", "predictor.horizon=2"])
    costs = CostModel(p.profile, p.model, lanes)
    groups = list(p.groups())
    setup = build_core(p).predictor.setup
    sim_core = _core_with(p, _PreAttentionOracle(setup))
    fast_core = _core_with(p, _PreAttentionOracle(setup))
    a = SimExecutor(costs, p.prompt_tokens).run(sim_core, groups)
    fx = FastExecutor(costs, p.prompt_tokens)
    b = fx.run(fast_core, groups)
    for name in ("tok_latency_ms", "tok_compute_ms", "tok_stall_ms", "tok_hits", "tok_late", "tok_misses",
                 "tok_bytes_h2d", "tok_evictions", "tok_refetches", "layer_late", "layer_stall_ms",
                 "layer_bytes_demand", "layer_bytes_prefetch", "layer_bytes_wasted", "layer_prefetch_wasted",
                 "layer_prefetch_cancelled", "prefetch_late", "makespan_ms"):  # fmt: skip
        assert getattr(a, name) == getattr(b, name), name
    assert a.lead_samples.tobytes() == b.lead_samples.tobytes()
    assert a.slack_samples.tobytes() == b.slack_samples.tobytes()
    sim_core.finish()
    c = fx.counters
    assert c is not None
    for name in ("layer_accesses", "layer_present", "layer_prefetch_issued", "layer_prefetch_useful",
                 "layer_evictions"):  # fmt: skip
        assert list(getattr(sim_core, name)) == getattr(c, name), name
    for name in ("refetches", "bypassed", "prefetch_unused"):
        assert getattr(sim_core, name) == getattr(c, name), name
    # the case exercises what it is for: prefetches issued before attention, some arriving late
    assert c.prefetch_issued > 0 and sum(b.layer_late) > 0


@pytest.mark.parametrize("name", ["oracle", "prev-token", "popularity"])
@pytest.mark.parametrize(
    "extra", [[], ["batch=3"], ["predictor.overprovision=3", "predictor.threshold=0.03"]]
)
def test_compiled_prediction_pass_equals_the_predictor(name, extra):
    p = _prepared(["trace.max_sequences=5", f"predictor.name={name}", "predictor.horizon=3", *extra])
    groups = list(p.groups())
    a, b = build_core(p), build_core(p)
    steps = step_arrays(groups, a.L)
    fast = routing_plan(a.predictor, steps, a.L, a._n_pred, a._threshold)
    ref = plan_arrays(b.predictor, groups, b._n_pred, b._threshold)
    assert fast is not None
    assert np.array_equal(fast.ev_ptr, ref.ev_ptr) and np.array_equal(fast.ev_keys, ref.ev_keys)
    assert len(ref.ev_keys) > 0


def test_fast_baseline_equals_the_decision_replay():
    from moesim.engine.decisions import run_decisions

    p = _prepared(["trace.max_sequences=5", "batch=2", "cache.capacity=40"])
    ref = run_decisions(build_core(p, predictor_name="none"), p.groups())
    assert pipeline._fast_baseline(p, build_core(p, predictor_name="none")) == ref.misses


@pytest.mark.shared
def test_olmoe_slice(external_traces):
    """A slice of the real OLMoE capture, on both executors."""
    from moesim.experiments.run import Prepared
    from moesim.hardware import load_profile
    from moesim.models import get_model
    from moesim.traces.importers import import_trace

    tr = import_trace(
        "olmoe-npz", external_traces / "helloimrizy-pages__opt" / "decode_traces" / "chunks" / "math"
    )
    tr = tr.select(list(range(6)))
    model = get_model("olmoe-1b-7b")
    profile = load_profile("estimated:h100-pcie", model)
    for sets in (["predictor.name=popularity", "cache.capacity=256"], ["predictor.name=oracle", "predictor.horizon=2", "cache.capacity=128", "batch=2"]):  # fmt: skip
        sc = load_scenario(None, sets)
        k = model.top_k * sc.batch
        p = Prepared(sc, model, tr, external_traces, profile, 512, k, k)
        a = pipeline.simulate(p, executor="sim")
        b = pipeline.simulate(p, executor="fast")
        assert_same_run(a, b)


@pytest.mark.parametrize("batch", [1, 3])
def test_steps_from_the_trace_equal_the_groups(batch):
    from dataclasses import fields

    from moesim.engine.fast.predictions import trace_steps
    from moesim.traces.replay import iter_groups

    p = _prepared(["trace.max_sequences=6"])
    L = p.model.num_moe_layers
    ref = step_arrays(iter_groups(p.trace, 1), L)  # a generator: read once
    got = trace_steps(p.trace)
    for f in fields(ref):
        assert np.array_equal(getattr(ref, f.name), getattr(got, f.name)), f.name
    if batch > 1:  # the groups of a larger batch differ from the trace's sequences
        other = step_arrays(list(iter_groups(p.trace, batch)), L)
        assert len(other.grp_step0) < len(got.grp_step0)
