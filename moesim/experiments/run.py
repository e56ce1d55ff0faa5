"""One run's inputs: resolve a scenario into model, trace, profile and a policy core.

``prepare`` does every check before anything runs or is written, so bad input fails fast with one
line and leaves no files behind. Running it (simulated or live), the on-demand baseline and the
results are the pipeline's (``moesim.experiments.pipeline``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from moesim import __version__
from moesim.engine.batching import poisson_arrivals
from moesim.errors import fail
from moesim.experiments.cache import PROCESS_CACHE, RunCache
from moesim.experiments.fidelity import apply_expert_format, apply_link, check_memory, profile_device
from moesim.experiments.holdout import prepared_notes, select_replay
from moesim.experiments.scenario import Scenario
from moesim.hardware.costs import CopyOptions, CostModel
from moesim.metrics.result import RunResult
from moesim.metrics.timeline import TimelineWindow
from moesim.models.spec import ModelSpec
from moesim.policies.caches.base import CacheContext
from moesim.policies.core import PlannerConfig, PolicyCore
from moesim.policies.future import lazy_next_use
from moesim.policies.miss import MissCosts, MissHandler
from moesim.policies.pool import ExpertPool
from moesim.policies.predictors.base import PredictorSetup
from moesim.policies.registries import CACHES, MISS_HANDLERS, PREDICTORS
from moesim.policies.sizing import split_capacity
from moesim.traces.replay import (
    Group,
    PackedGroup,
    access_stream,
    expert_counts,
    iter_groups,
    iter_packed,
    layer_streams,
)
from moesim.traces.trace import Trace

if TYPE_CHECKING:
    from moesim.hardware.profile import LatencyProfile
    from moesim.metrics.result import RunResult


@dataclass
class Prepared:
    scenario: Scenario
    model: ModelSpec
    trace: Trace
    trace_path: Path
    profile: LatencyProfile
    prompt_tokens: int
    min_slots: int
    top_n: int
    trace_key: tuple | None = None  # identity of the trace files and selection (None: not cached)
    fit_trace: Trace | None = None  # a learned predictor's held-out training side (experiments/holdout.py)
    notes: list[str] = field(default_factory=list)
    # Whose trace, groups and baselines this run reads and fills (see moesim.experiments.cache).
    cache: RunCache = field(default_factory=lambda: PROCESS_CACHE, repr=False, compare=False)

    def groups(self) -> Iterable[Group]:
        """The replay groups (read-only): from the cached arrays, the cached ``Group``s of a small
        trace or fresh ones built when reached; an uncached trace's built one at a time."""
        packed = self.packed_groups()
        if packed is None:
            return iter_groups(self.trace, self.scenario.batch, self.scenario.prefill)
        cache, key = self.cache, self._groups_key()
        views = cache.views.get(key)
        if views is not None:
            return views
        if sum(g.num_steps for g in packed) <= cache.view_steps:
            views = [g.unpack() for g in packed]  # lists built when first read, then kept
            cache.keep_views(key, views)
            return views
        return (g.unpack() for g in packed)

    def _groups_key(self) -> tuple:
        return (self.trace_key, self.scenario.batch, self.scenario.prefill)

    def packed_groups(self) -> list[PackedGroup] | None:
        """The groups as flat arrays, built once per cache (None: the trace is not the cached one)."""
        sc = self.scenario
        # Only the loaded trace itself (read-only memory maps) has cached groups: a caller may have
        # replaced or cut ``trace`` since.
        cache = self.cache
        if self.trace_key is None or cache.traces.get(self.trace_key) is not self.trace:
            return None
        key = self._groups_key()
        packed = cache.groups.get(key)
        if packed is None:
            packed = list(iter_packed(self.trace, sc.batch, sc.prefill))
            cache.keep_groups(key, packed)
        return packed


# The process-wide cache's baselines under their former name (tests clear it to act as a new worker).
_BASELINES = PROCESS_CACHE.baselines


def _trace_identity(path: Path) -> tuple | None:
    """The trace files' paths, sizes, modification times and inodes (a file replaced within the
    clock's resolution is still a new file); None if they cannot be read."""
    try:
        root = path if path.is_dir() else path.parent
        files = sorted(
            (e.name, st.st_size, st.st_mtime_ns, st.st_ino)
            for e in os.scandir(root)
            if e.is_file()
            for st in (e.stat(),)
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


def _load_trace(sc: Scenario, cache: RunCache) -> tuple[Trace, Path, tuple | None]:
    from moesim.traces.native import load_trace

    path = sc.resolve_path(sc.trace.path)
    ident = _trace_identity(path)
    key = None if ident is None else (ident, sc.trace.domain, sc.trace.max_sequences)
    if key is not None and key in cache.traces:
        return cache.traces[key], path, key
    trace = load_trace(path)
    if sc.trace.domain is not None:
        trace = trace.select_domain(sc.trace.domain)
    if sc.trace.max_sequences is not None:
        trace = trace.select(list(range(min(sc.trace.max_sequences, trace.num_sequences))))
    if trace.num_sequences == 0:
        fail(f"{path}: no sequences to replay (check trace.domain / trace.max_sequences)")
    if key is not None:
        cache.keep_trace(key, trace)
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


def prepare(sc: Scenario, cache: RunCache | None = None) -> Prepared:
    """Load what ``sc`` names (model, trace, profile), the trace through ``cache`` (None: the
    process's), which the run keeps for its replay groups and baselines. Every check lives in
    ``moesim.experiments.validate`` and runs here, before anything is simulated or written."""
    from moesim.experiments.validate import validate_loaded
    from moesim.hardware import load_profile

    sc.validate()
    model = _load_model(sc)
    cache = PROCESS_CACHE if cache is None else cache
    trace, path, trace_key = _load_trace(sc, cache)
    _check_consistency(sc, model, trace, path)
    replay = select_replay(sc, trace)
    trace = replay.trace
    hw = sc.hardware
    ref = hw.profile
    if ref.partition(":")[0] not in ("paper", "estimated"):
        ref = str(sc.resolve_path(ref))
    profile = load_profile(ref, model, extrapolation=hw.extrapolation)
    if hw.h2d_gbps is not None or hw.h2d_overhead_us is not None:
        profile = profile.with_link(h2d_gbps=hw.h2d_gbps, overhead_us=hw.h2d_overhead_us)
    device = profile_device(profile)
    profile = apply_link(sc, profile, device)
    native = model
    model, profile = apply_expert_format(sc, model, profile, device)
    # the ops around the MoE layers (an estimated profile gets them from the roofline)
    if sc.runtime.whole_token:
        from moesim.hardware.runtime import with_token_ops

        profile = with_token_ops(profile, model, hw.profile)
    validate_loaded(sc, model, trace, profile)
    E, k = model.num_experts, model.top_k
    min_slots = min(E, k * sc.batch)
    top_n = sc.predictor.top_n if sc.predictor.top_n is not None else min(E, k * sc.batch)
    prompt = sc.prompt_tokens
    if trace.prefill_offsets is not None:
        lens = trace.prefill_offsets[1:] - trace.prefill_offsets[:-1]
        if len(lens) and int(lens.max()) > 0:
            prompt = int(lens.max())
    check_memory(sc, native, trace, device, prompt)
    return Prepared(
        sc,
        model,
        trace,
        path,
        profile,
        prompt,
        min_slots,
        top_n,
        trace_key,
        replay.fit_trace,
        replay.notes,
        cache,
    )


def cost_model(p: Prepared) -> CostModel:
    """The run's cost model: the profile with the scenario's copy engines, copy behaviour and
    runtime section (host time, overheads, the whole token)."""
    from moesim.hardware.runtime import from_config

    hw = p.scenario.hardware
    copies = CopyOptions(hw.lane_sharing, hw.copy_issue_us, p.scenario.miss.writeback)
    runtime = from_config(p.scenario.runtime)
    return CostModel(p.profile, p.model, hw.copy_engines, copies=copies, runtime=runtime)


def build_core(p: Prepared, predictor_name: str | None = None, record: bool = False) -> PolicyCore:
    """A fresh policy core for ``p`` (``predictor_name`` overrides the scenario's, e.g. "none")."""
    sc = p.scenario
    L, E, k = p.model.num_moe_layers, p.model.num_experts, p.model.top_k
    pred_name = predictor_name or sc.predictor.name
    policy_cls = CACHES.get(sc.cache.policy)
    next_use = None
    if policy_cls.needs_future:
        next_use = lazy_next_use(lambda: _access_stream(p))
    fit = p.fit_trace if p.fit_trace is not None else p.trace
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


def _access_stream(p: Prepared) -> np.ndarray:
    """Every demand key in replay order: the cached groups' keys when there are some (no second
    build of the groups), else ``access_stream``."""
    packed = p.packed_groups()
    if packed is None:
        return access_stream(p.trace, p.scenario.batch, p.scenario.prefill)
    if not packed:
        return np.zeros(0, np.int32)
    return np.concatenate([g.flat for g in packed]).astype(np.int32, copy=False)


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
        "trace_sha256": _trace_sha256(p, trace_digest),
        "profile": p.profile.name,
        "profile_sha256": p.profile.fingerprint(),
        "profile_extrapolations": list(p.profile.extrapolations),
        "seed": sc.seed,
        "executor": executor,
        "device": device,
        "prompt_tokens": p.prompt_tokens,
    }
    notes = prepared_notes(p)
    if notes:
        prov["notes"] = notes
    return prov


def _trace_sha256(p: Prepared, digest) -> str:
    """The trace's digest, hashed once per process for a loaded trace (keyed by its files'
    identity and selection, so a changed file is hashed again); a derived trace is hashed each time."""
    cache = p.cache
    if p.trace_key is None or cache.traces.get(p.trace_key) is not p.trace:
        return digest(p.trace)
    value = cache.digests.get(p.trace_key)
    if value is None:
        value = digest(p.trace)
        cache.keep_digest(p.trace_key, value)
    return value


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


# The runner's entry points, kept here for callers of this module; the pipeline holds them.
def run_prepared(
    p: Prepared,
    progress=None,
    record: bool = False,
    timeline: bool | TimelineWindow = False,  # a window: record only its steps (moesim run --tokens)
    baselines: Path | None = None,
) -> RunResult:
    from moesim.experiments.pipeline import simulate

    return simulate(p, progress=progress, record=record, timeline=timeline, baselines=baselines)


def on_demand_misses(p: Prepared, prov: dict, store: Path | None = None) -> int:
    from moesim.experiments.pipeline import on_demand_misses as misses

    return misses(p, prov, store)


def run_scenario(
    sc: Scenario, progress=None, record: bool = False, timeline: bool = False, baselines: Path | None = None
) -> RunResult:
    return run_prepared(prepare(sc), progress=progress, record=record, timeline=timeline, baselines=baselines)
