"""Every check of a scenario, in one place.

``validate_scenario`` (``Scenario.validate``) needs only the scenario and the plug-in registries: value
ranges, choices, plug-in names, each plug-in's declared parameters, and combinations. ``validate_loaded``
runs once ``prepare`` has loaded the model, trace and profile, for what depends on them (the cache
floor is k x batch experts, a horizon bounded by the model's layers, prefill routing, CPU timings).
Every problem is one ``MoesimInputError`` line naming the dotted key.

Ranges are where the model stays meaningful *and* float arithmetic stays exact enough: simulated
time is a float of milliseconds, so e.g. a Poisson rate of 1e-300 per second would put arrivals at
1e303 ms, where adding a 10 ms decode step changes nothing and every TPOT reads 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from moesim.errors import fail
from moesim.policies.params import check_params
from moesim.policies.pool import SCOPES
from moesim.policies.sizing import SPLITS

if TYPE_CHECKING:
    from moesim.experiments.scenario import Scenario
    from moesim.models.spec import ModelSpec
    from moesim.policies.registries import Registries
    from moesim.traces.trace import Trace

INT_MAX = 2**31 - 1


@dataclass(frozen=True)
class Bound:
    """Inclusive range of a numeric key; ``inf_ok``: +inf is a documented value (e.g. an ideal link)."""

    lo: float | None = None
    hi: float | None = None
    inf_ok: bool = False
    positive: bool = False  # lo is exclusive


BOUNDS: dict[str, Bound] = {
    "batch": Bound(1, 65_536),
    "prompt_tokens": Bound(0, 10_000_000),
    "refetch_window": Bound(0, INT_MAX),
    "seed": Bound(0, 2**63 - 1),
    "trace.max_sequences": Bound(1, INT_MAX),
    "hardware.h2d_gbps": Bound(1e-3, 1e6, inf_ok=True),  # .inf: the ideal link (overhead only)
    "hardware.h2d_overhead_us": Bound(0, 1e9),
    "hardware.copy_engines": Bound(1, 64),
    "hardware.copy_issue_us": Bound(0, 1e9),
    "hardware.memory_gb": Bound(0, 1e6, positive=True),
    "predictor.horizon": Bound(0, 1_000_000),
    "predictor.top_n": Bound(1, INT_MAX),
    "predictor.overprovision": Bound(0, INT_MAX),
    "predictor.threshold": Bound(-1e30, 1e30),
    "cache.capacity": Bound(None, INT_MAX),  # the floor depends on the model: validate_loaded
    "tiers.dram_gb": Bound(0, 1e9, positive=True),
    "arrivals.rate_per_s": Bound(1e-6, 1e9),
    "runtime.layer_overhead_us": Bound(0, 1e9),
    "runtime.token_overhead_us": Bound(0, 1e9),
    "runtime.launch_us": Bound(0, 1e6),
}
TIMES_MS_MAX = 1e12  # about 30 years of arrivals; beyond, a 0.01 ms step is lost in the float

CHOICES: dict[str, tuple[str, ...]] = {
    "hardware.extrapolation": ("flag", "error"),
    "hardware.lane_sharing": ("static", "active"),
    "cache.scope": SCOPES,
    "cache.split": SPLITS,
    "arrivals.process": ("static", "poisson", "times"),
    "executor": ("auto", "sim", "fast"),
}


def get(sc: Scenario, key: str) -> Any:
    node: Any = sc
    for part in key.split("."):
        node = getattr(node, part)
    return node


def check_bound(key: str, value: Any, b: Bound) -> None:
    if value is None:
        return
    if isinstance(value, float) and math.isnan(value):
        fail(f"{key}: must be a number, got nan")
    if value == math.inf and b.inf_ok:
        return
    if b.lo is not None and (value <= b.lo if b.positive else value < b.lo):
        fail(f"{key}: must be {'>' if b.positive else '>='} {b.lo}, got {value}")
    if b.hi is not None and value > b.hi:
        inf = " (or .inf)" if b.inf_ok else ""
        fail(f"{key}: must be <= {b.hi}{inf}, got {value}")


def validate_scenario(sc: Scenario, registries: Registries | None = None) -> None:
    """Checks that need no loaded input; the first problem raises one line."""
    from moesim.policies.registries import DEFAULT

    reg = registries or DEFAULT
    for key, bound in BOUNDS.items():
        check_bound(key, get(sc, key), bound)
    for key, options in CHOICES.items():
        value = get(sc, key)
        if value not in options:
            fail(f"{key}: unknown value {value!r}; choose one of: {', '.join(options)}")
    _check_plugins(sc, reg)
    _check_arrivals(sc)
    _check_runtime(sc)
    _check_fidelity(sc)


def _check_runtime(sc: Scenario) -> None:
    from moesim.hardware.runtime import preset_names

    names = preset_names()
    if sc.runtime.preset not in names:
        fail(f"runtime.preset: unknown preset {sc.runtime.preset!r}; choose one of: {', '.join(names)}")


def _check_fidelity(sc: Scenario) -> None:
    """Expert format, link and host-memory keys (docs/fidelity.md)."""
    from moesim.hardware.pcie import ALLOWED_LANES, MEMORY_KINDS, PCIE_LANE_GBPS
    from moesim.models.precision import FORMATS

    for key in ("model.expert_dtype", "model.dense_dtype"):
        value = get(sc, key)
        if value is not None and str(value).lower() not in FORMATS:
            fail(f"{key}: unknown format {value!r}; choose one of: {', '.join(sorted(FORMATS))}")
    hw = sc.hardware
    if hw.pcie_gen is not None and hw.pcie_gen not in PCIE_LANE_GBPS:
        fail(f"hardware.pcie_gen: must be one of {sorted(PCIE_LANE_GBPS)}, got {hw.pcie_gen}")
    if hw.pcie_lanes is not None and hw.pcie_lanes not in ALLOWED_LANES:
        fail(f"hardware.pcie_lanes: must be one of {list(ALLOWED_LANES)}, got {hw.pcie_lanes}")
    if hw.host_memory is not None and hw.host_memory not in MEMORY_KINDS:
        fail(
            f"hardware.host_memory: unknown value {hw.host_memory!r}; choose one of: {', '.join(MEMORY_KINDS)}"
        )


def _check_plugins(sc: Scenario, reg: Registries) -> None:
    pred = reg.predictors.get(sc.predictor.name)
    check_params("predictor.params", pred.name, pred.params, sc.predictor.params)
    cache = reg.caches.get(sc.cache.policy)
    check_params("cache.params", cache.name, cache.params, sc.cache.params)
    reg.miss.get(sc.miss.policy)
    dram = reg.caches.get(sc.tiers.dram_policy)
    if dram.needs_future or dram.needs_counts or dram.params:
        fail(f"tiers.dram_policy: {dram.name} needs inputs the host tier does not get; use lru, lfu or fifo")
    if sc.arrivals.process != "static" and cache.needs_future:
        fail(
            f"cache.policy={sc.cache.policy} needs the whole access order in advance, which continuous "
            "batching only forms while it runs; use arrivals.process=static"
        )


def _check_arrivals(sc: Scenario) -> None:
    a = sc.arrivals
    if a.process == "poisson" and a.rate_per_s is None:
        fail("arrivals.rate_per_s: a Poisson process needs a positive rate (requests per second)")
    for i, t in enumerate(a.times_ms):
        if not 0 <= t <= TIMES_MS_MAX:
            fail(f"arrivals.times_ms[{i}]: must be in [0, {TIMES_MS_MAX:g}] ms, got {t}")


def validate_loaded(
    sc: Scenario, model: ModelSpec, trace: Trace, profile: Any, registries: Registries | None = None
) -> None:
    """Checks that depend on the loaded model, trace and profile (run by ``prepare``)."""
    from moesim.policies.registries import DEFAULT

    reg = registries or DEFAULT
    E, k, L = model.num_experts, model.top_k, model.num_moe_layers
    min_slots = min(E, k * sc.batch)
    pred = reg.predictors.get(sc.predictor.name)
    lookback = getattr(pred, "max_horizon_tokens", None)
    if lookback is not None and sc.predictor.horizon > lookback * L:
        fail(
            f"predictor.horizon: {pred.name} looks back {lookback} token(s), so horizon must be <= {lookback * L}"
        )
    floor = 1 if sc.cache.bypass else min_slots
    if sc.cache.capacity < floor:
        where = "per layer" if sc.cache.scope == "per-layer" else "in total"
        fail(
            f"cache.capacity: {sc.cache.capacity} slots {where} cannot hold one layer-step's {min_slots} experts "
            f"(k={k} x batch={sc.batch}); set cache.capacity >= {min_slots}, or cache.bypass=true to stream "
            "what does not fit"
        )
    # every layer-step times these: a missing one is refused here, before any run (or compile) starts
    shared = ("shared_expert_ffn",) if model.num_shared_experts else ()
    profile.require("norm", "attention", "gate", "expert_ffn", "h2d_pinned", *shared)
    handler = reg.miss.get(sc.miss.policy)
    if handler.needs_cpu and not profile.has("cpu_expert_ffn"):
        fail(
            f"miss.policy={sc.miss.policy}: profile {profile.name} has no cpu_expert_ffn table; "
            "use a profile with CPU timings (estimated:<device>, or paper:<gpu>+estimated)"
        )
    if sc.prefill and trace.prefill_experts is None:
        fail(
            f"prefill: {sc.trace.path} has no prefill routing; set prefill=false or use a trace captured "
            "with its prompts"
        )
    if sc.arrivals.process == "times" and len(sc.arrivals.times_ms) < trace.num_sequences:
        fail(
            f"arrivals.times_ms: give one non-negative time (ms) for each of the {trace.num_sequences} sequences"
        )
    gb = sc.tiers.dram_gb
    if gb is not None:
        slots = int(gb * 1e9 // model.expert_bytes)
        if slots < min_slots:
            fail(
                f"tiers.dram_gb: {gb} GB holds {slots} experts of {model.expert_bytes:,} bytes, "
                f"fewer than one layer-step's {min_slots}"
            )
