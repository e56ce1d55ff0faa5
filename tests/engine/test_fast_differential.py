"""The fast executor against the simulator (the reference): the same scenario run with
``executor: sim`` and ``executor: fast`` must give identical summary.json bytes (but for the field
naming the executor) and equal tokens, layers and extras tables, exactly (``fastdiff``).

Three sources of cases: hypothesis-drawn tiny traces and parameters over everything the fast path
covers (batch 1 and static batches, global / per-layer / split scopes, lru / fifo / lfu / belady /
arc, the routing-only predictors, 1-3 copy lanes, links from saturated to idle); a fixed grid of
the boundary cases (capacity of exactly one layer-step, of every expert, and between; a saturated
link with late hits and cancellations, an idle one); and slices of the real shared traces.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.engine.fastdiff import assert_same, fast_covers, needs_fast, run, run_pair, write_inputs
from tests.helpers import random_trace

pytestmark = needs_fast

# Hypothesis prefers the first of a list (it shrinks towards it): the busiest choices come first.
# Each predictor gets its own examples (drawn alone, some would be all but missed).
POLICIES = ["lru", "belady", "lfu", "fifo", "arc"]  # arc: "if it fits" (drawn when covered)
PREDICTORS = ["oracle", "st-moe", "markov", "prev-token", "noisy-oracle", "popularity", "none"]
LEARNED = {"markov", "st-moe", "prophet"}  # fitted on a training trace (holdout.is_learned)
# A Prophet small enough to train in a fraction of a second on a tiny trace (its predictions, not
# its size, are what the fast path must reproduce); the default architecture runs on the slices.
TINY_PROPHET = {
    "predictor.params.d_model": 16,
    "predictor.params.attn_heads": 2,
    "predictor.params.ff": 32,
    "predictor.params.layers": 1,
    "predictor.params.epochs": 1,
}
# Expert copies are 196,608 bytes; a tiny layer-step computes in a few microseconds. At 0.02 GB/s a
# copy takes ~10 ms (every prefetch late, most evicted before they start: cancellations); at .inf
# only the per-copy overhead is left (the link idles).
LINKS = [0.2, 0.02, 2.0, 25.0, math.inf]
SETTINGS = settings(
    max_examples=18,  # per predictor: 126 in all
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _capacity_bounds(scope: str, L: int, E: int, min_slots: int) -> tuple[int, int]:
    """(one layer-step's experts, every expert) for ``scope``."""
    if scope == "per-layer":
        return min_slots, E
    if scope == "split":
        return min_slots * L, E * L
    return min_slots, E * L


def _policies() -> list[str]:
    return [p for p in POLICIES if p != "arc" or fast_covers(**{"cache.policy": "arc"})]


def _predictor_params(draw, name: str) -> dict[str, Any]:
    if name == "noisy-oracle":
        return {"predictor.params.accuracy": draw(st.sampled_from([0.0, 0.5, 0.9, 1.0]))}
    if name == "st-moe":
        return {
            "predictor.params.spatial_weight": draw(st.sampled_from([0.0, 0.5, 1.0])),
            "predictor.params.online": draw(st.booleans()),
        }
    if name == "markov":
        return {"predictor.params.prior": draw(st.sampled_from([0.0, 0.01, 1.0]))}
    if name == "prophet":  # batched inference, or the per-step reference path
        return {**TINY_PROPHET, "predictor.params.batch_inference": draw(st.booleans())}
    return {}


@st.composite
def cases(draw, name: str) -> dict[str, Any]:
    L = draw(st.integers(1, 4))
    E = draw(st.integers(2, 10))
    k = draw(st.integers(1, min(3, E)))
    batch = draw(st.sampled_from([1, 1, 2, 3]))
    seqs = draw(st.integers(1, 4))
    lengths = draw(st.lists(st.integers(1, 8), min_size=seqs, max_size=seqs))
    shape = {"L": L, "E": E, "k": k, "lengths": lengths, "seed": draw(st.integers(0, 2**16))}
    shape["skew"] = draw(st.sampled_from([0.0, 1.2]))
    shape["shared"] = draw(st.booleans())  # a shared expert (computed every layer-step)
    scope = draw(st.sampled_from(["global", "per-layer", "split"]))
    lo, hi = _capacity_bounds(scope, L, E, min(E, k * batch))
    capacity = draw(st.one_of(st.just(lo), st.just(hi), st.integers(lo, hi)))
    horizon = draw(st.integers(1, 3))
    if name in ("prev-token", "prophet"):
        horizon = min(horizon, L)  # it looks back one token (Prophet: heads <= L)
    over: dict[str, Any] = {
        "batch": batch,
        "cache.policy": draw(st.sampled_from(_policies())),
        "cache.scope": scope,
        "cache.capacity": capacity,
        "predictor.name": name,
        "predictor.horizon": horizon,
        "predictor.overprovision": draw(st.integers(0, 2)),
        "hardware.copy_engines": draw(st.integers(1, 3)),
        "hardware.h2d_gbps": draw(st.sampled_from(LINKS)),
        "prompt_tokens": draw(st.sampled_from([0, 64])),
        "refetch_window": draw(st.sampled_from([16, 0, 2])),
    }
    if scope == "split":
        over["cache.split"] = draw(st.sampled_from(["uniform", "proportional", "dp"]))
    if draw(st.booleans()):
        over["predictor.top_n"] = draw(st.integers(1, E))
    if draw(st.booleans()):
        over["predictor.threshold"] = draw(st.sampled_from([0.0, 0.3, 0.9]))
    over.update(_predictor_params(draw, name))
    if name == "prophet":
        over["predictor.params.heads"] = min(3, L)  # its default, at most one per layer
    if name in LEARNED:  # fitted on the trace: held out (needs 2 sequences) or replayed whole
        over["predictor.replay_training"] = seqs < 2 or draw(st.booleans())
    return {"shape": shape, "overrides": over}


def _trace(shape: dict[str, Any]):
    rng = np.random.default_rng(shape["seed"])
    lengths = shape["lengths"]
    return random_trace(rng, len(lengths), lengths, shape["L"], shape["E"], shape["k"], skew=shape["skew"])


def check(
    trace, overrides: dict[str, Any], model: str | None = None, shared: bool = False
) -> tuple[Any, Any]:
    with tempfile.TemporaryDirectory(prefix="fastdiff-") as tmp:
        base = write_inputs(Path(tmp), trace, model, shared)
        sim, fast = run_pair({**base, **overrides})
    assert_same(sim, fast, overrides)
    return sim, fast


@pytest.mark.parametrize("predictor", PREDICTORS)
@SETTINGS
@given(data=st.data())
def test_fast_equals_sim_on_random_cases(predictor, data):
    case = data.draw(cases(predictor))
    over = case["overrides"]
    sim, _ = check(_trace(case["shape"]), over, shared=case["shape"]["shared"])
    # what the drawn cases cover (pytest --hypothesis-show-statistics)
    for key in (
        "cache.policy",
        "cache.scope",
        "predictor.name",
        "hardware.copy_engines",
        "hardware.h2d_gbps",
    ):
        event(f"{key}={over[key]}")
    event(f"batch={'1' if over['batch'] == 1 else '>1'}")
    pf = sim.summary["prefetch"]
    event(f"late hits: {pf['late'] > 0}; cancellations: {pf['cancelled'] > 0}")


@settings(SETTINGS, max_examples=10)  # each case trains a network: fewer of them
@given(data=st.data())
def test_fast_equals_sim_with_prophet(data):
    """Prophet's predictions depend only on the routing: the fast path replays them (computed by the
    same predictor object, batched or per step) and must time them exactly as the simulator does."""
    case = data.draw(cases("prophet"))
    shape, over = case["shape"], dict(case["overrides"])
    # trained on another trace of the same shape: a drawn trace may be too short to train on
    fit = random_trace(
        np.random.default_rng(shape["seed"] + 1), 3, [6, 6, 6], shape["L"], shape["E"], shape["k"]
    )
    over.pop("predictor.replay_training", None)
    with tempfile.TemporaryDirectory(prefix="fastdiff-fit-") as tmp:
        over["predictor.fit_trace"] = write_inputs(Path(tmp), fit)["trace.path"]
        sim, _ = check(_trace(shape), over, shared=shape["shared"])
    if "predictor.threshold" not in over:  # some predictions were planned (nothing cut them)
        assert sim.summary["prefetch"]["issued"] > 0


# -- the boundaries, each run for sure (hypothesis may or may not draw them) -----------------------
L, E, K = 3, 8, 2
BOUNDARY_TRACE = {"L": L, "E": E, "k": K, "lengths": [9, 5, 12, 7], "seed": 11, "skew": 1.2}


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("scope", ["global", "per-layer", "split"])
@pytest.mark.parametrize("where", ["one-step", "between", "all"])
@pytest.mark.parametrize("policy", ["lru", "belady"])
def test_capacity_boundaries(batch, scope, where, policy):
    lo, hi = _capacity_bounds(scope, L, E, min(E, K * batch))
    capacity = {"one-step": lo, "all": hi, "between": (lo + hi) // 2}[where]
    over = {
        "batch": batch,
        "cache.scope": scope,
        "cache.capacity": capacity,
        "cache.policy": policy,
        "predictor.name": "oracle",
        "predictor.horizon": 2,
        "hardware.h2d_gbps": 0.2,
        "hardware.copy_engines": 2,
    }
    sim, _ = check(_trace(BOUNDARY_TRACE), over)
    if where == "all":  # every expert fits: nothing is ever evicted
        assert sim.summary["cache"]["evictions"] == 0


SATURATED = [  # (predictor, horizon, lanes): each has late hits and cancellations at this capacity
    *[("oracle", 2, lanes) for lanes in (1, 2, 3)],
    *[("st-moe", 1, lanes) for lanes in (1, 2, 3)],
    *[("prev-token", 1, lanes) for lanes in (1, 2)],
    ("popularity", 1, 1),
]


@pytest.mark.parametrize("predictor,horizon,lanes", SATURATED)
def test_saturated_link_late_hits_and_cancellations(predictor, horizon, lanes):
    """A slow link: prefetches arrive late and many are evicted before their copy starts."""
    over = {
        "batch": 2,
        "cache.capacity": 6,
        "predictor.name": predictor,
        "predictor.horizon": horizon,
        "predictor.overprovision": 2,
        "hardware.h2d_gbps": 0.02,
        "hardware.copy_engines": lanes,
    }
    sim, _ = check(_trace(BOUNDARY_TRACE), over)
    pf = sim.summary["prefetch"]
    assert pf["late"] > 0 and pf["cancelled"] > 0, pf  # the case exercises what it is named after
    assert sim.summary["latency"]["stall_ms_total"] > 0


@pytest.mark.parametrize("predictor", ["none", "oracle", "markov"])
def test_idle_link(predictor):
    over = {
        "cache.capacity": 10,
        "predictor.name": predictor,
        "hardware.h2d_gbps": math.inf,
        "hardware.h2d_overhead_us": 0.0,
    }
    sim, _ = check(_trace(BOUNDARY_TRACE), over)
    assert sim.summary["latency"]["stall_ms_total"] == 0


def test_trace_with_prompt_routing_replayed_without_prefill():
    """The prompt length comes from the trace's prefill routing (context of every step)."""
    trace = _trace(BOUNDARY_TRACE)
    lens = [30, 4, 17, 9]
    rng = np.random.default_rng(5)
    trace.prefill_experts = np.argsort(rng.random((sum(lens), L, E)), axis=-1)[..., :K].astype(np.int16)
    trace.prefill_offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    over = {"batch": 2, "cache.capacity": 6, "predictor.name": "oracle", "hardware.h2d_gbps": 0.2}
    sim, _ = check(trace, over)
    assert sim.summary["provenance"]["prompt_tokens"] == 30


@pytest.mark.parametrize("profile", ["paper:a100-80gb+estimated", "paper:v100-32gb+estimated"])
def test_paper_profile_of_a_catalog_model(profile):
    """DeepSeek-V2-Lite (26 MoE layers, 64 experts, top-6, 2 shared experts) on the seed paper's
    measured tables (interpolated per token count, extrapolated where the tables end)."""
    trace = random_trace(np.random.default_rng(6), 3, [5, 3, 4], 26, 64, 6)
    over = {
        "hardware.profile": profile,
        "batch": 2,
        "cache.capacity": 40,
        "cache.scope": "global",
        "predictor.name": "prev-token",
        "predictor.horizon": 2,
        "hardware.copy_engines": 2,
    }
    check(trace, over, model="deepseek-v2-lite")


@pytest.mark.parametrize("predictor", ["popularity", "markov", "st-moe", "prophet"])
def test_predictor_fitted_on_another_trace(tmp_path, predictor):
    """predictor.fit_trace: the table is learned from a different trace file than the one replayed."""
    fit = random_trace(np.random.default_rng(12), 4, [9, 9, 9, 9], L, E, K, skew=2.0)
    fit_path = write_inputs(tmp_path / "fit", fit)["trace.path"]
    over = {"cache.capacity": 6, "predictor.name": predictor, "predictor.fit_trace": fit_path, "batch": 2}
    if predictor == "prophet":
        over.update(TINY_PROPHET)
    check(_trace(BOUNDARY_TRACE), over)


# -- slices of the real traces ---------------------------------------------------------------------
def _olmoe(ext: Path):
    from moesim.traces import import_trace

    chunks = ext / "helloimrizy-pages__opt" / "decode_traces" / "chunks"
    files = [chunks / d / f"sequence_{i:04d}.npz" for d, i in (("general", 0), ("math", 200))]
    if not all(f.is_file() for f in files):
        pytest.skip(f"{chunks}: sequences 0 and 200 not found")
    return import_trace("olmoe-npz", files), "olmoe-1b-7b"


def _mixtral(ext: Path):
    from moesim.traces import import_trace

    return import_trace(
        "mixtral-jsonl", ext / "Mario928__speculative-moe" / "gsm8k_2_routing.jsonl"
    ), "mixtral-8x7b"


def _qwen(ext: Path):
    from moesim.traces import import_trace

    folder = ext / "jinlong-huo__moe_ocs_learning" / "qwen1.5-moe-a2.7b-chat-4bit"
    return import_trace("qwen-routes", folder), "qwen1.5-moe-a2.7b"


def _slice(trace, seqs: int, tokens: int):
    """The first ``tokens`` decode tokens of the first ``seqs`` sequences."""
    from moesim.traces.trace import Trace

    trace = trace.select(list(range(min(seqs, trace.num_sequences))))
    parts, offsets = [], [0]
    for s in range(trace.num_sequences):
        e = trace.sequence(s)[:tokens]
        parts.append(e)
        offsets.append(offsets[-1] + len(e))
    return Trace(trace.meta, np.concatenate(parts), np.asarray(offsets, np.int64), trace.seq_domain.copy())


SHARED_CASES = {
    # (capacity, scope, policy, predictor, horizon, batch, lanes, link GB/s)
    "olmoe-lru-popularity": (256, "global", "lru", "popularity", 1, 1, 1, None),
    "olmoe-belady-oracle-b2": (96, "per-layer", "belady", "oracle", 2, 2, 2, 8.0),
    "mixtral-fifo-prev-token": (64, "global", "fifo", "prev-token", 1, 1, 1, None),
    "mixtral-lfu-markov-saturated": (4, "per-layer", "lfu", "markov", 3, 2, 3, 0.5),
    "qwen-lfu-st-moe": (360, "split", "lfu", "st-moe", 2, 1, 2, None),
    "qwen-lru-noisy-oracle-b3": (24, "global", "lru", "noisy-oracle", 1, 3, 1, 4.0),
    "olmoe-lru-prophet-h3": (128, "global", "lru", "prophet", 3, 1, 2, 16.0),
}
LOADERS = {"olmoe": _olmoe, "mixtral": _mixtral, "qwen": _qwen}


@pytest.mark.shared
@pytest.mark.parametrize("name", sorted(SHARED_CASES))
def test_fast_equals_sim_on_real_trace_slices(external_traces, name):
    capacity, scope, policy, predictor, horizon, batch, lanes, gbps = SHARED_CASES[name]
    trace, model = LOADERS[name.split("-")[0]](external_traces)
    over: dict[str, Any] = {
        "batch": batch,
        "cache.capacity": capacity,
        "cache.scope": scope,
        "cache.policy": policy,
        "predictor.name": predictor,
        "predictor.horizon": horizon,
        "hardware.copy_engines": lanes,
    }
    if gbps is not None:
        over["hardware.h2d_gbps"] = gbps
    if predictor in LEARNED:  # two sequences of different domains cannot be split
        over["predictor.replay_training"] = True
    if predictor == "prophet":  # the default architecture, trained briefly
        over.update({"predictor.params.epochs": 1, "predictor.params.max_samples": 2000})
    check(_slice(trace, 2, 48), over, model)


# -- a sweep's results table -----------------------------------------------------------------------
SWEEP_GRID = {
    "predictor.name": ["none", "oracle", "popularity"],
    "cache.capacity": [4, 12],
    "predictor.horizon": [1, 2],
}
EXECUTOR_COLUMN = "provenance.executor"


def _sweep_tables(tmp_path: Path) -> dict[str, Path]:
    from moesim.experiments.sweep import SweepPlan, run_sweep

    base = write_inputs(tmp_path / "in", random_trace(np.random.default_rng(2), 3, [9, 7, 8], 3, 8, 2))
    outs = {}
    for executor in ("sim", "fast"):
        sets = [f"{k}={v}" for k, v in base.items()] + [f"executor={executor}", "hardware.h2d_gbps=0.2"]
        outcome = run_sweep(
            SweepPlan.from_grid(None, SWEEP_GRID, sets), tmp_path / executor, jobs=1, force=True
        )
        assert outcome.ok, outcome.failed
        assert set(outcome.table[EXECUTOR_COLUMN]) == {executor}
        outs[executor] = tmp_path / executor
    return outs


def test_sweep_tables_equal_but_for_the_executor_column(tmp_path):
    """The 12-point sweep's results table (CSV and Parquet) from both executors: the same bytes once
    the column naming the executor that ran is left out of both."""
    import pandas as pd

    from moesim.metrics.table import write_table

    outs = _sweep_tables(tmp_path)
    for name, out in outs.items():
        stripped = tmp_path / f"{name}-stripped"
        stripped.mkdir()
        write_table(stripped, pd.read_parquet(out / "results.parquet").drop(columns=[EXECUTOR_COLUMN]))
    for f in ("results.csv", "results.parquet"):
        assert (tmp_path / "sim-stripped" / f).read_bytes() == (
            tmp_path / "fast-stripped" / f
        ).read_bytes(), f


# -- runs sharing a worker's cache (as a sweep's points do): reused predictions must fit -----------
SHARED_CACHE_SEQUENCE = [
    {"predictor.name": "noisy-oracle", "predictor.params.accuracy": 0.6, "cache.capacity": 6},
    {"predictor.name": "noisy-oracle", "predictor.params.accuracy": 0.6, "cache.capacity": 14},
    {"predictor.name": "noisy-oracle", "predictor.params.accuracy": 0.9, "cache.capacity": 14},
    {"predictor.name": "noisy-oracle", "predictor.params.accuracy": 0.9, "cache.capacity": 14, "seed": 3},
    {"predictor.name": "noisy-oracle", "predictor.params.accuracy": 0.9, "predictor.top_n": 1},
    {"predictor.name": "noisy-oracle", "predictor.params.accuracy": 0.9, "predictor.overprovision": 2},
    {"predictor.name": "popularity", "cache.capacity": 6, "predictor.threshold": 0.3},
    {"predictor.name": "popularity", "cache.capacity": 6},
    {"predictor.name": "popularity", "cache.capacity": 6, "batch": 2},
    {"predictor.name": "markov", "predictor.horizon": 2, "cache.scope": "per-layer", "cache.capacity": 3},
    {"predictor.name": "markov", "predictor.horizon": 3, "cache.scope": "per-layer", "cache.capacity": 3},
    {"predictor.name": "st-moe", "predictor.horizon": 3, "cache.policy": "belady"},
    {"predictor.name": "st-moe", "predictor.horizon": 3, "cache.policy": "belady", "trace.max_sequences": 3},
]


def test_runs_sharing_a_cache_equal_fresh_simulator_runs(tmp_path):
    """Fast runs one after another in one RunCache (a sweep worker: the trace, its groups and the
    predictions are reused where their inputs are the same) each equal a fresh simulator run."""
    from moesim.experiments.cache import RunCache
    from moesim.experiments.overrides import resolve_scenario
    from moesim.experiments.pipeline import run_scenario

    trace = random_trace(np.random.default_rng(8), 5, [8, 5, 9, 6, 7], L, E, K)
    base = {**write_inputs(tmp_path, trace), "hardware.h2d_gbps": 0.5, "predictor.replay_training": True}
    worker = RunCache()
    for over in SHARED_CACHE_SEQUENCE:
        fast = run_scenario(resolve_scenario(None, None, {**base, **over, "executor": "fast"}), worker)
        assert fast.summary["provenance"]["executor"] == "fast"
        assert_same(run({**base, **over}, "sim"), fast, over)
