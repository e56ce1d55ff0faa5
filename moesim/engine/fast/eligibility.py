"""Which runs the fast executor covers: an allow-list, by scenario value and by exact class.

A scenario key is covered when the fast path models it (``_ANY``: every value), when it has one of
the values listed in ``_ONLY``, or, for a key this module does not know (a section or key added
later), when it has its default value: a feature that is on falls back to the simulation executor
until the fast path models it. Plug-ins are checked by exact class (never by name), so a subclass
or a plug-in registered from outside runs on the simulation executor.
"""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from typing import Any

from moesim.hardware.costs import CostModel
from moesim.policies.caches.belady import Belady
from moesim.policies.caches.fifo import FIFO
from moesim.policies.caches.lfu import LFU
from moesim.policies.caches.lru import LRU
from moesim.policies.core import PolicyCore
from moesim.policies.pool import ExpertPool
from moesim.policies.predictors.markov import Markov
from moesim.policies.predictors.noisy_oracle import NoisyOracle
from moesim.policies.predictors.none import NoPrediction
from moesim.policies.predictors.oracle import Oracle
from moesim.policies.predictors.popularity import Popularity
from moesim.policies.predictors.prev_token import PreviousToken
from moesim.policies.predictors.prophet import Prophet
from moesim.policies.predictors.st_moe import STMoE

CACHE_CLASSES: dict[type, str] = {LRU: "lru", FIFO: "fifo", LFU: "lfu", Belady: "belady"}
# predictions that depend only on the routing observed (never on the cache or the clock)
PREDICTOR_CLASSES = (NoPrediction, Oracle, NoisyOracle, Popularity, PreviousToken, Markov, STMoE, Prophet)

# keys whose every value the fast path models (the plug-in names are checked by class below)
_ANY = {
    "name", "executor", "batch", "prompt_tokens", "refetch_window", "seed",
    "model.name", "model.config",
    "trace.path", "trace.domain", "trace.max_sequences",
    "hardware.profile", "hardware.h2d_gbps", "hardware.h2d_overhead_us", "hardware.extrapolation",
    "hardware.copy_engines",
    "predictor.name", "predictor.horizon", "predictor.top_n", "predictor.overprovision",
    "predictor.threshold", "predictor.fit_trace", "predictor.replay_training", "predictor.params",
    "cache.policy", "cache.capacity", "cache.scope", "cache.split", "cache.bypass", "cache.params",
    "tiers.dram_gb", "tiers.dram_policy",  # the host tier itself is checked on the built core
    "miss.policy",
    "arrivals.rate_per_s", "arrivals.times_ms",  # unused under static batching
}  # fmt: skip
# keys the fast path models for these values only
_ONLY: dict[str, tuple[Any, ...]] = {
    "prefill": (False,),
    "cache.reset_per_sequence": (False,),
    "predictor.cancel_stale": (False,),
    "arrivals.process": ("static",),
}


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and (prefix + k) not in _ANY:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def scenario_gap(sc: Any) -> str | None:
    """The first scenario setting the fast path does not model, as ``key=value``; None if all are.
    Defaults are those of ``type(sc)()`` (the scenario class's own)."""
    base = type(sc)()
    # every field, also those to_dict leaves out at their defaults (the runtime section)
    default = _flat(asdict(base) if is_dataclass(base) and not isinstance(base, type) else base.to_dict())
    for key, value in _flat(sc.to_dict()).items():
        if key in _ANY:
            continue
        if key in _ONLY:
            if value not in _ONLY[key]:
                return f"{key}={value!r}"
            continue
        if key not in default or value != default[key]:  # not modelled here: only its default
            return f"{key}={value!r}"
    return None


def core_gap(core: PolicyCore) -> str | None:
    """The first part of the built policy core the fast path does not model; None if all are."""
    if type(core) is not PolicyCore:
        return f"policy core class {type(core).__name__}"
    if core.log is not None:
        return "the decision log (--record)"
    if core.dram is not None:
        return "tiers.dram_gb (a host-memory tier)"
    if core.miss_handler is not None:
        return f"miss.policy={core.miss_handler.name}"
    if core._by_target is not None:
        return "predictor.cancel_stale=true"
    if core._reset:
        return "cache.reset_per_sequence=true"
    pool = core.pool
    if type(pool) is not ExpertPool:
        return f"expert pool class {type(pool).__name__}"
    for pol in pool.policies:
        if type(pol) not in CACHE_CLASSES:
            return f"cache.policy={getattr(pol, 'name', type(pol).__name__)} (class {type(pol).__name__})"
    if pool.preloaded:
        return "a cache policy that preloads experts"
    pred = core.predictor
    if type(pred) not in PREDICTOR_CLASSES:
        return f"predictor.name={getattr(pred, 'name', '?')} (class {type(pred).__name__})"
    return None


def run_gap(
    sc: Any, core: PolicyCore, costs: Any, *, timeline: bool, batching: bool, record: bool
) -> str | None:
    """Why a run cannot take the fast path (one short phrase), or None when it can."""
    if timeline:
        return "the timeline (--timeline)"
    if record:
        return "the decision log (--record)"
    if batching and sc.arrivals.process != "static":
        return f"arrivals.process={sc.arrivals.process!r} (continuous batching)"
    if costs is not None and type(costs) is not CostModel:
        return f"cost model class {type(costs).__name__}"
    if not miss_handler_class_ok(sc):
        return f"miss.policy={sc.miss.policy}"
    # the scenario's own key names the gap best; a cost model's host tables come from its profile
    return scenario_gap(sc) or core_gap(core) or (cost_gap(costs) if costs is not None else None)


def cost_gap(costs: CostModel) -> str | None:
    """Timing the cost model asks for beyond one GPU stream and one duration per copy: the
    scenario keys behind these fall back already, but a profile alone can turn on host times."""
    if costs.host_timeline:
        return "host (issue) times (a profile with host tables, or runtime keys)"
    if costs.whole_token:
        return "runtime.whole_token=true"
    if costs.shared_link:
        return "hardware.lane_sharing=active"
    if costs.copy_issue_ms:
        return "hardware.copy_issue_us"
    if costs.writeback_ms:
        return "miss.writeback=true"
    return None


def miss_handler_class_ok(sc: Any) -> bool:
    """The scenario's miss handler is the built-in fetch handler itself (not a plug-in named so)."""
    from moesim.policies.miss.handlers import Fetch
    from moesim.policies.registries import MISS_HANDLERS

    return MISS_HANDLERS.get(sc.miss.policy) is Fetch
