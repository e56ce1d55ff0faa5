"""Scenarios: a YAML file (or the built-in default) plus ``--set key=value`` overrides, validated
into plain dataclasses. Every error names the dotted key and the fix."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from moesim.data import DATA_DIR, DEFAULT_SCENARIO, shipped_scenario, shipped_scenario_names
from moesim.errors import fail


@dataclass
class ModelConfig:
    name: str | None = "olmoe-1b-7b"  # catalog key or HF id
    config: str | None = None  # path to a Hugging Face config.json (overrides name)


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


@dataclass
class ArrivalsConfig:
    process: str = "static"  # static (batches of B, all present at 0) | poisson | times: continuous batching
    rate_per_s: float | None = None  # poisson: requests per second (seeded by ``seed``)
    times_ms: list = field(default_factory=list)  # times: one arrival time per trace sequence


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
    batch: int = 1
    prefill: bool = False  # simulate each request's prompt pass (needs prefill routing in the trace)
    prompt_tokens: int = 512  # context before the first decode step when the trace has no prefill
    refetch_window: int = 16  # decode steps within which a reload counts as a re-fetch
    seed: int = 0
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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("base_dir")
        d.pop("cwd")
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
}


def _field_names(cls) -> list[str]:
    return [f.name for f in fields(cls) if not f.metadata.get("internal")]


def _check_type(key: str, value: Any, annotation: str, origin: str) -> Any:
    ann = annotation.replace(" ", "")
    optional = "None" in ann
    if value is None:
        if optional:
            return None
        fail(f"{origin}: {key} may not be empty")
    base = ann.replace("|None", "")
    if base == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            fail(f"{origin}: {key} must be an integer, got {value!r}")
    elif base == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(f"{origin}: {key} must be a number, got {value!r}")
        value = float(value)
        if math.isnan(value):
            fail(f"{origin}: {key} is NaN; give a number")
    elif base == "str":
        if not isinstance(value, str):
            fail(f"{origin}: {key} must be a string, got {value!r}")
    elif base == "bool":
        if not isinstance(value, bool):
            fail(f"{origin}: {key} must be true or false, got {value!r}")
    elif base == "dict" and not isinstance(value, dict):
        fail(f"{origin}: {key} must be a mapping, got {value!r}")
    elif base == "list" and not isinstance(value, list):
        fail(f"{origin}: {key} must be a list, got {value!r}")
    return value


def _build(cls, raw: dict, prefix: str, origin: str):
    names = _field_names(cls)
    kwargs = {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            fail(
                f"{origin}: unknown key {dotted!r}; valid keys{' under ' + prefix[:-1] if prefix else ''}: {', '.join(names)}"
            )
        f = next(x for x in fields(cls) if x.name == key)
        if key in _SECTIONS and not prefix:
            if not isinstance(value, dict):
                fail(
                    f"{origin}: {dotted} must be a mapping of its keys ({', '.join(_field_names(_SECTIONS[key]))})"
                )
            kwargs[key] = _build(_SECTIONS[key], value, f"{dotted}.", origin)
        else:
            kwargs[key] = _check_type(dotted, value, str(f.type), origin)
    return cls(**kwargs)


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        fail(f"--set {text!r}: expected key=value, e.g. --set cache.capacity=128")
    key, _, value = text.partition("=")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for text in overrides:
        key, value = parse_override(text)
        parts = key.split(".")
        if len(parts) > 2 or not all(parts):
            fail(f"--set {key}: keys are 'name' or 'section.name', e.g. cache.capacity")
        if len(parts) == 1:
            raw[key] = value
        else:
            section, name = parts
            if section not in _SECTIONS:
                fail(f"--set {key}: unknown section {section!r}; sections: {', '.join(_SECTIONS)}")
            if name not in _field_names(_SECTIONS[section]):
                fail(
                    f"--set {key}: unknown key; valid keys under {section}: {', '.join(_field_names(_SECTIONS[section]))}"
                )
            raw.setdefault(section, {})
            if not isinstance(raw[section], dict):
                raw[section] = {}
            raw[section][name] = value
    return raw


def load_scenario(path: str | Path | None = None, overrides: list[str] | None = None) -> Scenario:
    """Read a scenario YAML (None = the built-in default) and apply dotted overrides."""
    src = Path(path) if path is not None else DEFAULT_SCENARIO
    if path is not None and not src.is_file():
        src = shipped_scenario(path) or src  # a shipped scenario by name, e.g. seed-claims/st-moe-accuracy
    origin = str(src)
    if not src.is_file():
        if path is None:
            fail(
                f"built-in default scenario {src} not found; reinstall moesim (pip install .)"
            )
        fail(
            f"{origin}: scenario file not found; give a path to a YAML scenario or a shipped name ({', '.join(shipped_scenario_names())})"
        )
    try:
        raw = yaml.safe_load(src.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        fail(f"{origin}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        fail(
            f"{origin}: a scenario is a mapping of keys (name, model, trace, hardware, predictor, cache, ...)"
        )
    raw = apply_overrides(raw, overrides or [])
    scenario = _build(Scenario, raw, "", origin)
    scenario.base_dir = str(src.resolve().parent)
    if scenario.name == "scenario":
        scenario.name = src.stem
    return scenario
