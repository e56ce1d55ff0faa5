"""Scenarios: a YAML file (or the built-in default) plus ``--set key=value`` overrides, validated
into plain dataclasses. Every error names the dotted key and the fix."""

from __future__ import annotations

import functools
import math
import types
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union, get_args, get_origin, get_type_hints

from moesim.data import DATA_DIR, DEFAULT_SCENARIO, shipped_scenario, shipped_scenario_names
from moesim.errors import fail
from moesim.experiments.overrides import apply_overrides, parse_override
from moesim.yamlio import load_file

if TYPE_CHECKING:
    from moesim.policies.registries import Registries


@dataclass
class ModelConfig:
    name: str | None = "olmoe-1b-7b"  # catalog key or HF id
    config: str | None = None  # path to a Hugging Face config.json (overrides name)
    expert_dtype: str | None = None  # stored expert format (docs/fidelity.md; None: the model's own)
    dense_dtype: str | None = None  # attention/shared weights' format, for the memory check only


@dataclass
class TraceConfig:
    path: str = "traces/default.moetrace"
    domain: str | None = None  # replay only this domain's sequences
    max_sequences: int | None = None  # replay only the first N sequences


@dataclass
class HardwareConfig:
    profile: str = "estimated:h100-pcie"  # paper:<gpu>, estimated:<device> or a YAML path
    h2d_gbps: float | None = None  # replace the host-to-GPU table by overhead + bytes / bandwidth
    h2d_overhead_us: float | None = None  # fixed cost per copy (None: keep the profile's)
    extrapolation: str = "flag"  # outside a table: flag (extrapolate, recorded) or error
    copy_engines: int = 1  # host-to-GPU copy engines sharing the link
    lane_sharing: str = "static"  # static: each lane 1/N of the link; active: shared by active copies
    pcie_gen: int | None = None  # replace the device's link (docs/fidelity.md; h2d_gbps wins)
    pcie_lanes: int | None = None
    host_memory: str | None = None  # pinned | pageable (None: the profile's copies, pinned)
    copy_issue_us: float | None = None  # demand copy: gate -> copy start hand-off (None: 0)
    memory_gb: float | None = None  # GPU memory for the memory check (None: the device's)


@dataclass
class PredictorConfig:
    name: str = "none"
    horizon: int = 1  # layer-steps ahead
    top_n: int | None = None  # experts taken per prediction (default: k x batch, at most E)
    overprovision: int = 0  # extra experts beyond top_n
    threshold: float | None = None  # minimum score of a prefetched expert
    fit_trace: str | None = None  # training trace for fitted predictors (default: the replayed trace)
    cancel_stale: bool = False  # drop a prefetch its target layer-step did not use (cancel it if not started)
    replay_training: bool = False  # learned predictors: replay their training sequences too (optimistic)
    params: dict = field(default_factory=dict)


@dataclass
class CacheConfig:
    policy: str = "lru"
    capacity: int = 256  # expert slots: in total (global, split) or for each layer (per-layer)
    scope: str = "global"  # global | per-layer | split
    split: str = "uniform"  # with scope split: uniform | proportional | dp (AdapMoE-style sizing)
    bypass: bool = False  # allow capacity below a layer-step's experts: what does not fit streams through
    reset_per_sequence: bool = False
    params: dict = field(default_factory=dict)  # policy parameters (see docs/caches.md)


@dataclass
class TiersConfig:
    dram_gb: float | None = None  # host memory for expert weights (None: every expert fits)
    dram_policy: str = "lru"  # cache policy of the host tier; what is not there is read from SSD


@dataclass
class MissConfig:
    policy: str = "fetch"  # fetch | cpu | cost | skip | substitute
    writeback: bool = False  # copy each evicted expert back to the host before its slot is reused


@dataclass
class ArrivalsConfig:
    process: str = "static"  # static (batches of B, all present at 0) | poisson | times: continuous batching
    rate_per_s: float | None = None  # poisson: requests per second (seeded by ``seed``)
    times_ms: list[float] = field(default_factory=list)  # times: one arrival time per trace sequence


@dataclass
class RuntimeConfig:
    """What the serving runtime adds to the kernels (docs/fidelity.md "Timing model"). The defaults
    add nothing; ``is_default`` tells executors that model none of it (the fast executor) to defer."""

    preset: str = "none"  # named host overheads (moesim/hardware/data/runtime_presets.yaml)
    layer_overhead_us: float | None = None  # host time per MoE layer after the gate (None: the preset's)
    token_overhead_us: float | None = None  # host time per token before its first kernel (None: the preset's)
    launch_us: float | None = None  # host issue time per kernel without host tables (None: the preset's)
    whole_token: bool = False  # time embedding, dense layers, LM head and sampling too

    def is_default(self) -> bool:
        return self == RuntimeConfig()


@dataclass
class Scenario:
    name: str = "scenario"
    model: ModelConfig = field(default_factory=ModelConfig)
    trace: TraceConfig = field(default_factory=TraceConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    tiers: TiersConfig = field(default_factory=TiersConfig)
    miss: MissConfig = field(default_factory=MissConfig)
    arrivals: ArrivalsConfig = field(default_factory=ArrivalsConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    batch: int = 1
    prefill: bool = False  # simulate each request's prompt pass (needs prefill routing in the trace)
    prompt_tokens: int = 512  # context before the first decode step when the trace has no prefill
    refetch_window: int = 16  # decode steps within which a reload counts as a re-fetch
    seed: int = 0
    # which executor simulates the run: auto (fast where it covers every setting, else sim), sim, fast.
    # Not part of the run's identity (to_dict leaves it out): both give the same results.
    executor: str = "auto"
    base_dir: str = field(default=".", metadata={"internal": True})  # relative paths resolve here
    cwd: str | None = field(default=None, metadata={"internal": True})  # then here (None: the process's)

    def resolve_path(self, p: str) -> Path:
        path = Path(p).expanduser()
        if path.is_absolute():
            return path
        # the scenario file's folder first; then the working directory (for --set paths) and the package data
        for root in (Path(self.base_dir), Path(self.cwd) if self.cwd else Path.cwd(), DATA_DIR):
            if (root / path).exists():
                return root / path
        return Path(self.base_dir) / path

    def validate(self, registries: Registries | None = None) -> Scenario:
        """Check every value against the scenario schema and the plug-ins' declared parameters
        (``moesim.experiments.validate``); checks needing the loaded model, trace and profile run
        in ``prepare``. Returns ``self``; one ``MoesimInputError`` line on the first problem."""
        from moesim.experiments.validate import validate_scenario

        validate_scenario(self, registries)
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("base_dir")
        d.pop("cwd")
        if self.runtime.is_default():  # runs without it keep the provenance (and sweep identity) they had
            d.pop("runtime")
        d.pop("executor")  # how it ran, not what: summary.json records the executor that ran
        return d


_SECTIONS = {
    "model": ModelConfig,
    "trace": TraceConfig,
    "hardware": HardwareConfig,
    "predictor": PredictorConfig,
    "cache": CacheConfig,
    "tiers": TiersConfig,
    "miss": MissConfig,
    "arrivals": ArrivalsConfig,
    "runtime": RuntimeConfig,
}


@functools.cache
def _hints(cls) -> dict[str, Any]:
    return get_type_hints(cls)  # resolves the annotations' text: ~0.5 ms per class and call


def _field_names(cls) -> list[str]:
    return [f.name for f in fields(cls) if not f.metadata.get("internal")]


def _kind(tp: Any) -> tuple[Any, bool]:
    """The type behind ``X | None`` and whether None is allowed."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else Any), len(args) < len(get_args(tp))
    return tp, False


def _scalar_error(value: Any, tp: Any) -> str | None:
    """What ``value`` should have been, or None when it is a ``tp`` (never coerced)."""
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        return "an integer"
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "a number"
        if isinstance(value, float) and math.isnan(value):
            return "a number (not NaN)"
    if tp is str and not isinstance(value, str):
        return "a string"
    if tp is bool and not isinstance(value, bool):
        return "true or false"
    if tp is dict and not isinstance(value, dict):
        return "a mapping"
    return None


def check_type(key: str, value: Any, tp: Any, origin: str) -> Any:
    """``value`` if it is of the declared type ``tp`` (ints count as floats); one line if not."""
    tp, optional = _kind(tp)
    if value is None:
        if optional:
            return None
        fail(f"{origin}: {key} may not be empty")
    if get_origin(tp) is list:
        if not isinstance(value, list):
            fail(f"{origin}: {key} must be a list, got {value!r}")
        (item,) = get_args(tp) or (Any,)
        for i, v in enumerate(value):
            check_type(f"{key}[{i}]", v, item, origin)
        return value
    want = _scalar_error(value, tp)
    if want:
        fail(f"{origin}: {key} must be {want}, got {value!r}")
    return value


def _build(cls, raw: dict, prefix: str, origin: str, sources: Mapping[str, str] | None = None):
    """``cls`` from ``raw``; ``sources`` names where an overridden key came from (``--set``)."""
    sources = sources or {}
    names = _field_names(cls)
    hints = _hints(cls)
    kwargs = {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            fail(
                f"{origin}: unknown key {dotted!r}; valid keys{' under ' + prefix[:-1] if prefix else ''}: {', '.join(names)}"
            )
        if key in _SECTIONS and not prefix:
            if not isinstance(value, dict):
                fail(
                    f"{origin}: {dotted} must be a mapping of its keys ({', '.join(_field_names(_SECTIONS[key]))})"
                )
            kwargs[key] = _build(_SECTIONS[key], value, f"{dotted}.", origin, sources)
        else:
            kwargs[key] = check_type(dotted, value, hints[key], sources.get(dotted, origin))
    return cls(**kwargs)


def load_scenario(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    values: Mapping[str, Any] | None = None,
    validate: bool = True,
) -> Scenario:
    """Read a scenario YAML (None = the built-in default), apply ``--set`` texts ``overrides`` and then
    the Python ``values`` by dotted key (later keys win), and validate the result."""
    src = Path(path) if path is not None else DEFAULT_SCENARIO
    if path is not None and not src.is_file():
        src = shipped_scenario(path) or src  # a shipped scenario by name, e.g. seed-claims/st-moe-accuracy
    origin = str(src)
    if not src.is_file():
        if path is None:
            fail(f"built-in default scenario {src} not found; reinstall moesim (pip install .)")
        if src.is_dir():
            fail(f"{origin}: is a directory; give a path to a YAML scenario (see scenarios/)")
        fail(
            f"{origin}: scenario file not found; give a path to a YAML scenario or a shipped name ({', '.join(shipped_scenario_names())})"
        )
    raw = load_file(src, "YAML scenario")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        fail(
            f"{origin}: a scenario is a mapping of keys (name, model, trace, hardware, predictor, cache, ...)"
        )
    pairs = [parse_override(text) for text in overrides or []]
    raw = apply_overrides(raw, [*pairs, *(values or {}).items()])
    sources = {k: "--set" for k, _ in pairs} | {k: "override" for k in values or {}}
    scenario = _build(Scenario, raw, "", origin, sources)
    scenario.base_dir = str(src.resolve().parent)
    if scenario.name == "scenario":
        scenario.name = src.stem
    if validate:
        scenario.validate()
    return scenario
