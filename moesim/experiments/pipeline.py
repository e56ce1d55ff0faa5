"""The one run pipeline: load a scenario, run it on an executor, add the on-demand baseline, summarise.

Every way of running a scenario goes through here: ``moesim run`` and the Python API
(``run_scenario``), a sweep's points (``run_point`` with its worker's ``RunCache``), the live harness
(``moesim.experiments.live.run_live``) and ``moesim calibrate`` (``simulate`` with its own cost
model). The steps::

    load(sc, cache)        -> Prepared          (experiments/run.py: prepare; trace via the cache)
    build_core(p)          -> PolicyCore        (a fresh policy core per run)
    executor.run(core, p.groups()) -> RunStats  (SimExecutor, FastExecutor or LiveExecutor)
    baseline_misses(...)   -> int               (the same run with no predictor: on_demand_misses)
    summarise(...)         -> RunResult         (metrics: tables, summary, extras)

The on-demand baseline is the denominator of ``traffic.ratio_bytes_vs_on_demand``. Decisions do not
depend on timing, so a run with a predictor that never predicts is its own baseline; otherwise the
baseline is replayed once per input identity and kept in the run's cache (and, for a sweep, in a
directory its workers share). Under continuous batching who shares a step depends on time, so that
baseline gets its own timed replay.

Which simulation executor runs is ``choose_executor``'s: the scenario's ``executor`` key (or the
caller's override), ``auto`` taking the compiled fast executor whenever it covers every setting of
the run (``moesim.engine.fast.eligibility``) and the SimPy executor otherwise. Both give the same
summary byte for byte, except ``provenance.executor``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from moesim.engine.batching import ContinuousBatcher
from moesim.engine.decisions import run_decisions
from moesim.engine.sim_executor import SimExecutor
from moesim.errors import fail
from moesim.experiments.cache import RunCache
from moesim.experiments.holdout import add_outcome_notes
from moesim.experiments.run import Prepared, arrival_times, build_core, cost_model, prepare, provenance
from moesim.experiments.scenario import Scenario
from moesim.hardware.costs import CostModel
from moesim.io import atomic_write_json, dumps_json
from moesim.metrics.result import RunResult
from moesim.metrics.stats import RunStats
from moesim.metrics.summary import build_extras, build_summary, build_tables, request_summary
from moesim.metrics.timeline import TimelineWindow
from moesim.policies.core import PolicyCore


def load(sc: Scenario, cache: RunCache | None = None) -> Prepared:
    """``prepare(sc, cache)``: the scenario's inputs loaded through ``cache`` (None: the process's
    cache), which the returned run keeps for its replay groups and baselines."""
    return prepare(sc, cache)


def make_batcher(p: Prepared) -> ContinuousBatcher | None:
    """The continuous batcher of ``p``'s arrivals, or None for static batching."""
    times = arrival_times(p)
    if times is None:
        return None
    return ContinuousBatcher(p.trace, p.scenario.batch, times, p.scenario.prefill, p.prompt_tokens)


# -- the on-demand baseline ------------------------------------------------------------------------
def _baseline_key(p: Prepared, prov: dict) -> str:
    sc = dict(prov["scenario"])
    sc["predictor"] = {"fit_trace": sc["predictor"].get("fit_trace")}  # cache sizing may read it
    return dumps_json(
        {
            "scenario": sc,
            "trace": prov["trace_sha256"],
            "profile": prov["profile_sha256"],
            "model": repr(p.model),
        }
    )


def _baseline_file(key: str, store: Path) -> Path:
    return store / (hashlib.sha256(key.encode("utf-8")).hexdigest()[:32] + ".json")


def _keep_baseline(p: Prepared, key: str, misses: int, store: Path | None) -> None:
    p.cache.keep_baseline(key, misses)
    if store is not None:
        store.mkdir(parents=True, exist_ok=True)
        atomic_write_json(_baseline_file(key, store), {"key": key, "misses": misses})


def _stored_baseline(key: str, store: Path) -> int | None:
    try:
        doc = json.loads(_baseline_file(key, store).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # not there (yet): replay it
    if doc.get("key") == key and isinstance(doc.get("misses"), int):
        return doc["misses"]
    return None


def on_demand_misses(p: Prepared, prov: dict, store: Path | None = None, steps: Any = None) -> int:
    """Demand misses of the same run with no predictor: kept in ``p.cache``, found in ``store`` if
    another process left it there, else replayed (and left in both)."""
    key = _baseline_key(p, prov)
    misses = p.cache.baselines.get(key)
    if misses is not None:
        return misses
    if store is not None:
        misses = _stored_baseline(key, store)
        if misses is not None:
            p.cache.keep_baseline(key, misses)
            return misses
    baseline = build_core(p, predictor_name="none")
    batcher = make_batcher(p)
    if batcher is None and _fast_decisions_ok(p, baseline):
        misses = _fast_baseline(p, baseline, steps)
        _keep_baseline(p, key, misses, store)
        return misses
    if batcher is None:
        run_decisions(baseline, p.groups())
    else:  # who shares a step depends on time, so the baseline needs its own timed replay
        costs = cost_model(p)
        SimExecutor(costs, p.prompt_tokens, batcher=batcher).run(baseline, [])
    _keep_baseline(p, key, baseline.misses, store)
    return baseline.misses


def baseline_misses(
    p: Prepared, core: PolicyCore, prov: dict, store: Path | None = None, steps: Any = None
) -> int:
    """The run's on-demand baseline: its own misses when its predictor never predicts (kept for
    the runs that share its inputs), else ``on_demand_misses``."""
    if core.predictor.predicts:
        return on_demand_misses(p, prov, store, steps)
    _keep_baseline(p, _baseline_key(p, prov), core.misses, store)
    return core.misses


def _fast_decisions_ok(p: Prepared, core: PolicyCore) -> bool:
    from moesim.engine.fast.eligibility import miss_handler_class_ok, run_gap

    if p.scenario.executor == "sim" or not miss_handler_class_ok(p.scenario):
        return False
    return run_gap(p.scenario, core, None, timeline=False, batching=True, record=False) is None


def _fast_baseline(p: Prepared, core: PolicyCore, steps: Any = None) -> int:
    """The baseline's misses from the compiled decision pass (no predictions: no prediction pass);
    ``steps``: the run's flattened steps when the fast executor made them."""
    from moesim.engine.fast.executor import FastExecutor, run_decisions_fast
    from moesim.engine.fast.jit import warm_kernels

    warm_kernels()
    if steps is None:
        sc = p.scenario
        trace = p.trace if sc.batch == 1 and not sc.prefill else None
        fast = FastExecutor(CostModel(p.profile, p.model), p.prompt_tokens, trace=trace)
        steps = fast.steps_of(p.groups, core.L)
    dec = run_decisions_fast(core, steps)
    return int(dec.layer_accesses.sum() - dec.layer_present.sum())


# -- choosing the executor -------------------------------------------------------------------------
def choose_executor(
    p: Prepared,
    core: PolicyCore,
    costs: CostModel | None,
    *,
    executor: str | None,
    executor_name: str,
    timeline: bool,
    batching: bool,
    record: bool,
) -> str:
    """Which executor runs: "fast" or "sim". ``executor`` (None: the scenario's key) is auto, sim or fast;
    fast when asked for but not covering the run is one error line naming what it does not cover."""
    from moesim.engine.fast.eligibility import run_gap

    choice = executor or p.scenario.executor
    if choice not in ("auto", "sim", "fast"):
        fail(f"executor: unknown value {choice!r}; choose one of: auto, sim, fast")
    if choice == "sim":
        return "sim"
    gap = "a caller-named executor label" if executor_name != "sim" else None
    gap = gap or run_gap(p.scenario, core, costs, timeline=timeline, batching=batching, record=record)
    if gap is None:
        return "fast"
    if choice == "fast":
        fail(f"executor: the fast executor does not cover {gap}; use executor=auto or executor=sim")
    return "sim"


def _file_identity(path: object) -> tuple | None:
    """A model file's (size, mtime, inode): predictions cached in a worker must not outlive an
    edit of the file they came from."""
    if not isinstance(path, str):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _plan_key(p: Prepared) -> tuple:
    """What the predictions of a run depend on besides the replayed groups (their cache key)."""
    sc = p.scenario
    d = sc.to_dict()
    return (
        d["predictor"],
        _file_identity(sc.predictor.params.get("model")),
        d["model"],
        d["trace"],
        sc.seed,
        sc.batch,
        sc.prefill,
        id(p.trace),
        id(p.fit_trace),
    )


# -- the shared tail -------------------------------------------------------------------------------
def summarise(
    p: Prepared,
    core: PolicyCore,
    stats: RunStats,
    prov: dict[str, Any],
    baselines: Path | None = None,
    batcher: ContinuousBatcher | None = None,
    steps: Any = None,
) -> RunResult:
    """The run's result (wall-clock figures left to the caller): tables, summary and extras.
    ``steps``: the fast executor's flattened steps, which its baseline replay reuses."""
    misses = baseline_misses(p, core, prov, baselines, steps)
    tokens, layers = build_tables(core, stats, p.model.moe_layer_indices)
    summary = build_summary(core, stats, tokens, misses * p.model.expert_bytes, prov)
    add_outcome_notes(p, summary)
    if batcher is not None:
        summary["requests"] = request_summary(batcher.requests)
    extras = build_extras(stats)
    return RunResult(summary, tokens, layers, {}, core.log, extras=extras, timeline=stats.timeline)


def simulate(
    p: Prepared,
    *,
    costs: CostModel | None = None,
    executor_name: str = "sim",
    batching: bool = True,
    progress=None,
    record: bool = False,
    timeline: bool | TimelineWindow = False,
    baselines: Path | None = None,
    executor: str | None = None,
) -> RunResult:
    """Simulate ``p``. ``costs``: the cost model (default: the profile's, with the scenario's copy
    engines); ``batching=False`` replays static groups whatever the arrivals (calibration);
    ``baselines``: a directory where runs sharing it (a sweep's workers) leave and find on-demand
    baselines; ``executor``: auto, sim or fast (None: the scenario's ``executor`` key)."""
    wall0 = time.perf_counter()
    core = build_core(p, record=record)
    if costs is None:
        costs = cost_model(p)
    which = choose_executor(
        p, core, costs, executor=executor, executor_name=executor_name, timeline=bool(timeline),
        batching=batching, record=record,
    )  # fmt: skip
    batcher = make_batcher(p) if batching else None
    counters: Any = core
    fast_steps = None
    warm_s = 0.0
    if which == "fast":
        from moesim.engine.fast.executor import FastExecutor
        from moesim.engine.fast.jit import warm_kernels

        t_warm = time.perf_counter()
        warm_kernels()
        warm_s = time.perf_counter() - t_warm  # compiling (once per process) is not simulation time
        sc = p.scenario
        trace = p.trace if sc.batch == 1 and not sc.prefill else None  # its sequences are the groups
        fast = FastExecutor(costs, p.prompt_tokens, progress=progress, plan_key=_plan_key(p), trace=trace)
        stats = fast.run(core, p.groups)
        counters = fast.counters
        fast_steps = fast.steps
        executor_name = FastExecutor.name
    else:
        sim = SimExecutor(costs, p.prompt_tokens, progress=progress, timeline=timeline, batcher=batcher)
        stats = sim.run(core, p.groups())
    wall_sim = time.perf_counter() - wall0 - warm_s
    if batcher is not None:
        stats.ttft_ms = [r.first_token - r.arrival for r in batcher.requests if r.first_token >= 0]
    prov = provenance(p, executor_name, p.profile.device)
    result = summarise(p, counters, stats, prov, baselines, batcher, steps=fast_steps)
    steps = result.summary["counts"]["layer_steps"]
    result.wallclock = {
        "seconds_total": round(time.perf_counter() - wall0, 4),
        "seconds_simulation": round(wall_sim, 4),
        "layer_steps_per_second": round(steps / wall_sim, 1) if wall_sim > 0 else None,
    }
    return result


def run_scenario(
    sc: Scenario,
    cache: RunCache | None = None,
    *,
    progress=None,
    record: bool = False,
    timeline: bool = False,
    baselines: Path | None = None,
    executor: str | None = None,
) -> RunResult:
    """Load and simulate ``sc`` (``moesim run``, the Python API, a sweep point)."""
    p = load(sc, cache)
    return simulate(
        p, progress=progress, record=record, timeline=timeline, baselines=baselines, executor=executor
    )
