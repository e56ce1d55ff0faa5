"""One run: resolve a scenario into model, trace, profile and policies; simulate; collect results.

``prepare`` does every check before anything runs or is written, so bad input fails fast with one
line and leaves no files behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from moesim import __version__
from moesim.engine.batching import ContinuousBatcher, poisson_arrivals
from moesim.engine.decisions import run_decisions
from moesim.engine.sim_executor import SimExecutor
from moesim.errors import fail
from moesim.experiments.scenario import Scenario
from moesim.hardware.costs import CostModel
from moesim.io import atomic_write_json, dumps_json
from moesim.metrics.result import RunResult
from moesim.metrics.summary import build_extras, build_summary, build_tables
from moesim.models.spec import ModelSpec
from moesim.policies.caches.base import CacheContext
from moesim.policies.core import PlannerConfig, PolicyCore
from moesim.policies.future import FutureIndex
from moesim.policies.miss import MissCosts, MissHandler
from moesim.policies.pool import SCOPES, ExpertPool
from moesim.policies.predictors.base import PredictorSetup
from moesim.policies.registries import CACHES, MISS_HANDLERS, PREDICTORS
from moesim.policies.sizing import split_capacity
from moesim.traces.replay import Group, access_stream, expert_counts, iter_groups, layer_streams
from moesim.traces.trace import Trace


@dataclass
class Prepared:
    scenario: Scenario
    model: ModelSpec
    trace: Trace
    trace_path: Path
    profile: object
    prompt_tokens: int
    min_slots: int
    top_n: int
    trace_key: tuple | None = None  # identity of the trace files and selection (None: not cached)

    def groups(self) -> Iterable[Group]:
        sc = self.scenario
        # Only the loaded trace itself (read-only memory maps) has cached groups: a caller may have
        # replaced or cut ``trace`` since.
        shared = self.trace_key is not None and _TRACE_CACHE.get(self.trace_key) is self.trace
        if not shared or _steps(self.trace, sc.prefill) > _GROUP_CACHE_STEPS:
            return iter_groups(self.trace, sc.batch, sc.prefill)
        key = (self.trace_key, sc.batch, sc.prefill)
        groups = _GROUP_CACHE.get(key)
        if groups is None:
            groups = list(iter_groups(self.trace, sc.batch, sc.prefill))
            _remember(_GROUP_CACHE, key, groups, 1)
        return groups


# Sweep workers and notebooks run many points on one trace: they keep the loaded, validated trace
# and, up to _GROUP_CACHE_STEPS layer-steps (about 320 bytes each), its replay groups, keyed by the
# identity of the trace's files. Every consumer treats groups as read-only.
_TRACE_CACHE: dict[tuple, Trace] = {}
_GROUP_CACHE: dict[tuple, list[Group]] = {}
_GROUP_CACHE_STEPS = 600_000


def _remember(cache: dict, key, value, size: int) -> None:
    while len(cache) >= size:
        cache.pop(next(iter(cache)))
    cache[key] = value


def _steps(trace: Trace, prefill: bool) -> int:
    n = len(trace.experts)
    if prefill and trace.prefill_offsets is not None:
        n += trace.num_sequences
    return n * trace.meta.num_layers


def _trace_identity(path: Path) -> tuple | None:
    """The trace files' paths, sizes and modification times; None if they cannot be read."""
    try:
        root = path if path.is_dir() else path.parent
        files = sorted(
            (e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(root) if e.is_file()
        )
        return (str(root.resolve()), *files)
    except OSError:
        return None


def _load_model(sc: Scenario) -> ModelSpec:
    from moesim.models import get_model, model_from_hf_config

    if sc.model.config:
        return model_from_hf_config(sc.resolve_path(sc.model.config), name=sc.model.name)
    if not sc.model.name:
        fail("model.name: give a catalog model (see docs/models.md) or model.config: a config.json path")
    return get_model(sc.model.name)


def _load_trace(sc: Scenario) -> tuple[Trace, Path, tuple | None]:
    from moesim.traces.native import load_trace

    path = sc.resolve_path(sc.trace.path)
    ident = _trace_identity(path)
    key = None if ident is None else (ident, sc.trace.domain, sc.trace.max_sequences)
    if key is not None and key in _TRACE_CACHE:
        return _TRACE_CACHE[key], path, key
    trace = load_trace(path)
    if sc.trace.domain is not None:
        trace = trace.select_domain(sc.trace.domain)
    if sc.trace.max_sequences is not None:
        if sc.trace.max_sequences < 1:
            fail("trace.max_sequences: must be >= 1")
        trace = trace.select(list(range(min(sc.trace.max_sequences, trace.num_sequences))))
    if trace.num_sequences == 0:
        fail(f"{path}: no sequences to replay (check trace.domain / trace.max_sequences)")
    if key is not None:
        _remember(_TRACE_CACHE, key, trace, 2)
    return trace, path, key


def _check_consistency(sc: Scenario, model: ModelSpec, trace: Trace, path: Path) -> None:
    m = trace.meta
    if m.num_layers != model.num_moe_layers:
        fail(
            f"{path}: trace has {m.num_layers} MoE layers but model {model.name} has {model.num_moe_layers}; "
            "use the trace's model (model.name) or a trace captured from this one"
        )
    if m.num_experts != model.num_experts:
        fail(
            f"{path}: trace has E={m.num_experts} experts per layer but model {model.name} has E={model.num_experts}"
        )
    if m.top_k != model.top_k:
        fail(f"{path}: trace has top-k={m.top_k} but model {model.name} routes to k={model.top_k}")


def prepare(sc: Scenario) -> Prepared:
    from moesim.hardware import load_profile

    if sc.batch < 1:
        fail(f"batch: must be >= 1, got {sc.batch}")
    if sc.predictor.horizon < 0:
        fail(f"predictor.horizon: must be >= 0, got {sc.predictor.horizon}")
    if sc.prompt_tokens < 0:
        fail(f"prompt_tokens: must be >= 0, got {sc.prompt_tokens}")
    if sc.refetch_window < 0:
        fail(f"refetch_window: must be >= 0, got {sc.refetch_window}")
    if sc.predictor.overprovision < 0:
        fail(f"predictor.overprovision: must be >= 0, got {sc.predictor.overprovision}")
    PREDICTORS.get(sc.predictor.name)
    CACHES.get(sc.cache.policy)
    model = _load_model(sc)
    trace, path, trace_key = _load_trace(sc)
    _check_consistency(sc, model, trace, path)
    hw = sc.hardware
    if hw.extrapolation not in ("flag", "error"):
        fail(f"hardware.extrapolation: {hw.extrapolation!r}; choose flag or error")
    ref = hw.profile
    if ref.partition(":")[0] not in ("paper", "estimated"):
        ref = str(sc.resolve_path(ref))
    profile = load_profile(ref, model, extrapolation=hw.extrapolation)
    if hw.h2d_gbps is not None or hw.h2d_overhead_us is not None:
        profile = profile.with_link(h2d_gbps=hw.h2d_gbps, overhead_us=hw.h2d_overhead_us)
    E, k = model.num_experts, model.top_k
    min_slots = min(E, k * sc.batch)
    top_n = sc.predictor.top_n if sc.predictor.top_n is not None else min(E, k * sc.batch)
    if top_n < 1:
        fail(f"predictor.top_n: must be >= 1, got {top_n}")
    cls = PREDICTORS.get(sc.predictor.name)
    unknown = set(sc.predictor.params) - set(cls.params)
    if unknown:
        fail(
            f"predictor.params: {sc.predictor.name} takes no parameter {sorted(unknown)[0]!r}; "
            f"it takes: {', '.join(sorted(cls.params)) or 'none'}"
        )
    if sc.predictor.name == "prev-token" and sc.predictor.horizon > model.num_moe_layers:
        fail(
            f"predictor.horizon: prev-token looks back one token, so horizon must be <= {model.num_moe_layers}"
        )
    if sc.cache.scope not in SCOPES:
        fail(f"cache.scope: unknown scope {sc.cache.scope!r}; choose one of: {', '.join(SCOPES)}")
    floor = 1 if sc.cache.bypass else min_slots
    if sc.cache.capacity < floor:
        where = "per layer" if sc.cache.scope == "per-layer" else "in total"
        fail(
            f"cache.capacity: {sc.cache.capacity} slots {where} cannot hold one layer-step's {min_slots} experts "
            f"(k={k} x batch={sc.batch}); set cache.capacity >= {min_slots}, or cache.bypass=true to stream "
            "what does not fit"
        )
    if sc.hardware.copy_engines < 1:
        fail(f"hardware.copy_engines: must be >= 1, got {sc.hardware.copy_engines}")
    handler_cls = MISS_HANDLERS.get(sc.miss.policy)
    if handler_cls.needs_cpu and not profile.has("cpu_expert_ffn"):
        fail(
            f"miss.policy={sc.miss.policy}: profile {profile.name} has no cpu_expert_ffn table; "
            "use a profile with CPU timings (estimated:<device>, or paper:<gpu>+estimated)"
        )
    if sc.tiers.dram_gb is not None and not sc.tiers.dram_gb > 0:
        fail(f"tiers.dram_gb: must be a positive number of GB, got {sc.tiers.dram_gb}")
    dram_cls = CACHES.get(sc.tiers.dram_policy)
    if dram_cls.needs_future or dram_cls.needs_counts or dram_cls.params:
        fail(
            f"tiers.dram_policy: {dram_cls.name} needs inputs the host tier does not get; use lru, lfu or fifo"
        )
    cache_cls = CACHES.get(sc.cache.policy)
    if sc.arrivals.process != "static" and cache_cls.needs_future:
        fail(
            f"cache.policy={sc.cache.policy} needs the whole access order in advance, which continuous "
            "batching only forms while it runs; use arrivals.process=static"
        )
    unknown = set(sc.cache.params) - set(cache_cls.params)
    if unknown:
        fail(
            f"cache.params: {sc.cache.policy} takes no parameter {sorted(unknown)[0]!r}; "
            f"it takes: {', '.join(sorted(cache_cls.params)) or 'none'}"
        )
    if sc.prefill and trace.prefill_experts is None:
        fail(
            f"prefill: {path} has no prefill routing; set prefill=false or use a trace captured with its prompts"
        )
    prompt = sc.prompt_tokens
    if trace.prefill_offsets is not None:
        lens = trace.prefill_offsets[1:] - trace.prefill_offsets[:-1]
        if len(lens) and int(lens.max()) > 0:
            prompt = int(lens.max())
    return Prepared(sc, model, trace, path, profile, prompt, min_slots, top_n, trace_key)


def build_core(p: Prepared, predictor_name: str | None = None, record: bool = False) -> PolicyCore:
    """A fresh policy core for ``p`` (``predictor_name`` overrides the scenario's, e.g. "none")."""
    sc = p.scenario
    L, E, k = p.model.num_moe_layers, p.model.num_experts, p.model.top_k
    pred_name = predictor_name or sc.predictor.name
    policy_cls = CACHES.get(sc.cache.policy)
    next_use = None
    if policy_cls.needs_future:
        next_use = FutureIndex(access_stream(p.trace, sc.batch, sc.prefill)).next_use
    fit = p.trace
    if sc.predictor.fit_trace:
        from moesim.traces.native import load_trace

        fit = load_trace(sc.resolve_path(sc.predictor.fit_trace))
    counts = expert_counts(fit) if policy_cls.needs_counts else None
    ctx = CacheContext(L, E, next_use, counts, dict(sc.cache.params))
    capacities = None
    if sc.cache.scope == "split":
        capacities = split_capacity(
            sc.cache.split, sc.cache.capacity, L, E, p.min_slots, lambda: layer_streams(fit, max_tokens=8192)
        )
    setup = PredictorSetup(
        L, E, k, sc.batch, sc.predictor.horizon, sc.seed, fit, dict(sc.predictor.params), trace=p.trace
    )
    predictor = PREDICTORS.get(pred_name)(setup)
    pool_factory = partial(
        ExpertPool,
        policy_cls,
        sc.cache.capacity,
        sc.cache.scope,
        ctx,
        p.min_slots,
        capacities,
        sc.cache.bypass,
    )
    planner = PlannerConfig(p.top_n, sc.predictor.overprovision, sc.predictor.threshold)
    return PolicyCore(
        predictor,
        pool_factory,
        planner,
        L,
        E,
        sc.cache.reset_per_sequence,
        sc.refetch_window,
        record=record,
        miss_handler=_miss_handler(p),
        dram=_dram_pool(p),
        cancel_stale=sc.predictor.cancel_stale,
    )


def _miss_handler(p: Prepared) -> MissHandler | None:
    sc = p.scenario
    cls = MISS_HANDLERS.get(sc.miss.policy)
    if cls.name == "fetch":
        return None
    costs = None
    if cls.needs_cpu:
        cm = CostModel(p.profile, p.model)
        tokens = range(1, sc.batch + 1)
        costs = MissCosts(
            cm.h2d_ms, {n: cm.cpu_expert_ms(n) for n in tokens}, {n: cm.activation_ms(n) for n in tokens}
        )
    return cls(costs)


def dram_slots(p: Prepared) -> int | None:
    """Experts the host tier holds, or None when every expert fits (no SSD tier in play)."""
    gb = p.scenario.tiers.dram_gb
    if gb is None:
        return None
    slots = int(gb * 1e9 // p.model.expert_bytes)
    return None if slots >= p.model.num_moe_layers * p.model.num_experts else slots


def _dram_pool(p: Prepared) -> ExpertPool | None:
    slots = dram_slots(p)
    if slots is None:
        return None
    L, E = p.model.num_moe_layers, p.model.num_experts
    if slots < p.min_slots:
        fail(
            f"tiers.dram_gb: {p.scenario.tiers.dram_gb} GB holds {slots} experts of {p.model.expert_bytes:,} bytes, "
            f"fewer than one layer-step's {p.min_slots}"
        )
    return ExpertPool(
        CACHES.get(p.scenario.tiers.dram_policy),
        slots,
        "global",
        CacheContext(L, E),
        p.min_slots,
        bypass=True,
    )


def provenance(p: Prepared, executor: str, device: str) -> dict:
    from moesim.traces.native import trace_digest

    sc = p.scenario
    prov = {
        "moesim_version": __version__,
        "scenario": sc.to_dict(),
        "model": p.model.name,
        "trace": str(sc.trace.path),
        "trace_sha256": trace_digest(p.trace),
        "profile": p.profile.name,
        "profile_sha256": p.profile.fingerprint(),
        "profile_extrapolations": list(p.profile.extrapolations),
        "seed": sc.seed,
        "executor": executor,
        "device": device,
        "prompt_tokens": p.prompt_tokens,
    }
    if sc.predictor.name == "popularity" and not sc.predictor.fit_trace:
        prov["notes"] = [
            "popularity fitted on the replayed trace itself (optimistic; set predictor.fit_trace)"
        ]
    return prov


def run_prepared(
    p: Prepared, progress=None, record: bool = False, timeline: bool = False, baselines: Path | None = None
) -> RunResult:
    """Simulate ``p``. ``baselines``: a directory where runs sharing it (a sweep's workers) leave
    and find on-demand baselines (see ``on_demand_misses``)."""
    wall0 = time.perf_counter()
    core = build_core(p, record=record)
    costs = CostModel(p.profile, p.model, p.scenario.hardware.copy_engines)
    batcher = _batcher(p)
    executor = SimExecutor(costs, p.prompt_tokens, progress=progress, timeline=timeline, batcher=batcher)
    stats = executor.run(core, p.groups())
    wall_sim = time.perf_counter() - wall0
    if batcher is not None:
        stats.ttft_ms = [r.first_token - r.arrival for r in batcher.requests if r.first_token >= 0]
    prov = provenance(p, "sim", p.profile.device)
    if core.predictor.predicts:
        misses = on_demand_misses(p, prov, baselines)
    else:  # decisions do not depend on timing, so with no predictor this run is its own baseline
        misses = core.misses
        _keep_baseline(_baseline_key(p, prov), misses, baselines)
    tokens, layers = build_tables(core, stats, p.model.moe_layer_indices)
    summary = build_summary(core, stats, tokens, misses * p.model.expert_bytes, prov)
    if batcher is not None:
        summary["requests"] = request_summary(batcher.requests)
    wall = time.perf_counter() - wall0
    wallclock = {
        "seconds_total": round(wall, 4),
        "seconds_simulation": round(wall_sim, 4),
        "layer_steps_per_second": round(summary["counts"]["layer_steps"] / wall_sim, 1)
        if wall_sim > 0
        else None,
    }
    extras = build_extras(stats)
    return RunResult(summary, tokens, layers, wallclock, core.log, extras=extras, timeline=stats.timeline)


# Baselines by input identity: a sweep (or a notebook) replays one trace and cache at many
# predictor settings, and the on-demand baseline does not depend on the predictor.
_BASELINES: dict[str, int] = {}
_BASELINES_MAX = 256


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


def _keep_baseline(key: str, misses: int, store: Path | None) -> None:
    _remember(_BASELINES, key, misses, _BASELINES_MAX)
    if store is not None:
        store.mkdir(parents=True, exist_ok=True)
        atomic_write_json(_baseline_file(key, store), {"key": key, "misses": misses})


def on_demand_misses(p: Prepared, prov: dict, store: Path | None = None) -> int:
    """Demand misses of the same run with no predictor (the denominator of bytes vs on-demand):
    remembered in this process, found in ``store`` if another process left it there, else replayed."""
    key = _baseline_key(p, prov)
    misses = _BASELINES.get(key)
    if misses is not None:
        return misses
    if store is not None:
        try:
            doc = json.loads(_baseline_file(key, store).read_text(encoding="utf-8"))
            if doc.get("key") == key and isinstance(doc.get("misses"), int):
                _remember(_BASELINES, key, doc["misses"], _BASELINES_MAX)
                return doc["misses"]
        except (OSError, ValueError):
            pass  # not there (yet): replay it
    baseline = build_core(p, predictor_name="none")
    if _batcher(p) is None:
        run_decisions(baseline, p.groups())
    else:  # who shares a step depends on time, so the baseline needs its own timed replay
        costs = CostModel(p.profile, p.model, p.scenario.hardware.copy_engines)
        SimExecutor(costs, p.prompt_tokens, batcher=_batcher(p)).run(baseline, [])
    _keep_baseline(key, baseline.misses, store)
    return baseline.misses


def arrival_times(p: Prepared) -> list[float] | None:
    """Arrival time (ms) of each trace sequence, or None for static batching."""
    a = p.scenario.arrivals
    n = p.trace.num_sequences
    if a.process == "static":
        return None
    if a.process == "poisson":
        if a.rate_per_s is None or not a.rate_per_s > 0:
            fail(f"arrivals.rate_per_s: a Poisson process needs a positive rate, got {a.rate_per_s}")
        return poisson_arrivals(n, a.rate_per_s, p.scenario.seed)
    if a.process == "times":
        if len(a.times_ms) < n or any(not isinstance(x, (int, float)) or x < 0 for x in a.times_ms):
            fail(f"arrivals.times_ms: give one non-negative time (ms) for each of the {n} sequences")
        return [float(x) for x in a.times_ms[:n]]
    fail(f"arrivals.process: unknown process {a.process!r}; choose static, poisson or times")
    return None


def _batcher(p: Prepared) -> ContinuousBatcher | None:
    times = arrival_times(p)
    if times is None:
        return None
    return ContinuousBatcher(p.trace, p.scenario.batch, times, p.scenario.prefill, p.prompt_tokens)


def _percentiles(xs: list[float]) -> dict[str, float] | None:
    if not xs:
        return None
    return {k: round(float(v), 6) for k, v in zip(("p50", "p90", "p99"), np.percentile(xs, [50, 90, 99]))}


def request_summary(requests) -> dict:
    """Per-request latencies under continuous batching (ms from arrival)."""
    done = [r for r in requests if r.finish >= 0]
    return {
        "requests": len(requests),
        "finished": len(done),
        "queueing_ms": _percentiles([r.admitted - r.arrival for r in done]),
        "ttft_ms": _percentiles([r.first_token - r.arrival for r in done]),
        "e2e_ms": _percentiles([r.finish - r.arrival for r in done]),
    }


def run_scenario(
    sc: Scenario, progress=None, record: bool = False, timeline: bool = False, baselines: Path | None = None
) -> RunResult:
    return run_prepared(prepare(sc), progress=progress, record=record, timeline=timeline, baselines=baselines)
