"""Shared machinery of the seeds' and the field's predictors: parameter parsing, per-layer horizons,
side data of the replayed trace, predictor cost, and safe model files.

Nothing here imports torch at module level: the registry imports every predictor module when moesim
starts, and ``moesim run`` with a table predictor must not pay torch's import time.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from moesim.errors import MoesimInputError, fail
from moesim.policies.params import Param, ParamSchema
from moesim.policies.predictors.base import Prediction, Predictor, PredictorSetup
from moesim.readers import parse_json_text
from moesim.traces.replay import Group
from moesim.traces.trace import Trace
from moesim.yamlio import load_file

# Keys every planned predictor accepts in ``predictor.params`` (beside its own).
COMMON_PARAMS = ParamSchema(
    # list of L horizons, or {target_layer: horizon}; default predictor.horizon (checked against L)
    horizon_per_layer=Param(None),
    latency_ms=Param(0.0),  # number | {batch: ms} | path to a YAML {batch: ms} table | "measured"
    # "cpu" (delays only its prefetches) or "gpu" (also the compute stream); default: the class's
    runs_on=Param(None, "str", choices=("cpu", "gpu")),
)


def runs_on(setup: PredictorSetup, cls: type[Predictor]) -> str:
    value = setup.params.get("runs_on")
    return cls.runs_on if value is None else as_choice(cls.name, "runs_on", value, ("cpu", "gpu"))


# Where training loops report progress (one line per epoch); the CLI points it at stderr.
PROGRESS: list[Callable[[str], None]] = []


def report_progress(message: str) -> None:
    for fn in PROGRESS:
        fn(message)


# -- parameters ------------------------------------------------------------------------------------
def param(setup: PredictorSetup, cls: type[Predictor], key: str) -> Any:
    """``predictor.params[key]`` or the class default."""
    return setup.params.get(key, cls.params.get(key))


def as_int(name: str, key: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        fail(f"predictor.params.{key}: {name} needs an integer, got {value!r}")
    v = int(value)
    if lo is not None and v < lo:
        fail(f"predictor.params.{key}: {name} needs {key} >= {lo}, got {v}")
    if hi is not None and v > hi:
        fail(f"predictor.params.{key}: {name} needs {key} <= {hi}, got {v}")
    return v


def as_float(name: str, key: str, value: Any, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        fail(f"predictor.params.{key}: {name} needs a number, got {value!r}")
    v = float(value)
    if math.isnan(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = (
            f"in [{lo}, {hi}]"
            if lo is not None and hi is not None
            else (f">= {lo}" if lo is not None else "")
        )
        fail(f"predictor.params.{key}: {name} needs a number {rng}, got {value!r}")
    return v


def as_choice(name: str, key: str, value: Any, choices: Sequence[Any]) -> Any:
    if value not in choices:
        fail(f"predictor.params.{key}: {name} takes one of {', '.join(map(str, choices))}; got {value!r}")
    return value


def as_bool(name: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        fail(f"predictor.params.{key}: {name} needs true or false, got {value!r}")
    return value


# -- per-layer horizons ----------------------------------------------------------------------------
def layer_horizons(setup: PredictorSetup, name: str) -> list[int]:
    """The horizon of each *target* layer: layer ``l``'s experts are predicted ``h[l]`` layer-steps
    before its gate. ``predictor.params.horizon_per_layer`` overrides ``predictor.horizon``, either
    as a list of L values or as a mapping ``{layer: h}`` (unlisted layers keep predictor.horizon).
    A horizon below 1 is raised to 1: after the gate of step s, step s itself is already decided."""
    L = setup.num_layers
    base = max(1, setup.horizon)
    raw = setup.params.get("horizon_per_layer")
    if raw is None:
        return [base] * L
    if isinstance(raw, (list, tuple)):
        if len(raw) != L:
            fail(
                f"predictor.params.horizon_per_layer: {name} needs {L} values (one per MoE layer), got {len(raw)}"
            )
        return [as_int(name, "horizon_per_layer", v, lo=1) for v in raw]
    if isinstance(raw, dict):
        out = [base] * L
        for k, v in raw.items():
            layer = as_int(
                name, "horizon_per_layer", int(k) if isinstance(k, str) and k.isdigit() else k, 0, L - 1
            )
            out[layer] = as_int(name, "horizon_per_layer", v, lo=1)
        return out
    fail(
        f"predictor.params.horizon_per_layer: give a list of {L} horizons or a mapping layer: horizon, got {raw!r}"
    )
    raise AssertionError  # unreachable


class HorizonPlan:
    """Which target steps a predictor firing after step ``s``'s gate predicts: every ``t`` with
    ``t - h[t % L] == s`` (one target for a uniform horizon; zero or several with per-layer ones)."""

    def __init__(self, horizons: list[int]):
        self.h = horizons
        self.L = len(horizons)
        self.max_h = max(horizons)

    def targets(self, s: int, n_steps: int) -> list[int]:
        L, h = self.L, self.h
        return [t for t in range(s + 1, min(s + self.max_h, n_steps - 1) + 1) if t - h[t % L] == s]

    def start_targets(self, n_steps: int) -> list[int]:
        """Targets whose firing step would be before the first gate: announced at request start."""
        L, h = self.L, self.h
        return [t for t in range(min(self.max_h, n_steps)) if t - h[t % L] < 0]


# -- side data of the replayed trace ---------------------------------------------------------------
def hidden_states_of(trace: Trace | None) -> np.ndarray | None:
    """``Trace.hidden_states`` (N, L, H): each MoE layer's pre-attention (input-layernorm) output."""
    return None if trace is None else getattr(trace, "hidden_states", None)


def router_inputs_of(trace: Trace | None) -> np.ndarray | None:
    """``Trace.router_inputs`` (N, L, H): what each layer's router received (post-attention norm)."""
    return None if trace is None else getattr(trace, "router_inputs", None)


def trace_label(trace: Trace | None) -> str:
    if trace is None:
        return "<no trace>"
    return str(trace.path) if trace.path is not None else f"<in-memory trace of model {trace.meta.model!r}>"


def require_hidden(
    trace: Trace | None, name: str, what: str = "hidden states", role: str = "trace"
) -> np.ndarray:
    arr = router_inputs_of(trace) if what == "router inputs" else hidden_states_of(trace)
    if arr is None:
        fail(
            f"{trace_label(trace)}: predictor {name} needs a {role} with {what} "
            f"(Trace.{'router_inputs' if what == 'router inputs' else 'hidden_states'}); this one has none; "
            "capture one with hidden states or choose a routing-only predictor"
        )
    return arr  # type: ignore[return-value]


def active_rows(trace: Trace, group: Group, t: int) -> list[int]:
    """Trace rows of the group's sequences still decoding at decode step ``t`` (sequence order)."""
    offs = trace.seq_offsets
    return [int(offs[q]) + t for q in group.seqs if int(offs[q + 1] - offs[q]) > t]


# -- ranking ---------------------------------------------------------------------------------------
def ranked(scores: np.ndarray, layer: int, E: int, limit: int | None = None) -> tuple[list[int], list[float]]:
    """Keys of ``layer`` ranked by score (ties by lower expert id) and their scores."""
    order = np.argsort(-scores, kind="stable")
    if limit is not None:
        order = order[:limit]
    return (order + layer * E).tolist(), scores[order].astype(np.float64).tolist()


def khot(ids: np.ndarray, E: int) -> np.ndarray:
    """(..., k) expert ids -> (..., E) float32 indicator."""
    out = np.zeros((*ids.shape[:-1], E), np.float32)
    np.put_along_axis(out, ids.astype(np.int64), 1.0, axis=-1)
    return out


# -- predictor cost --------------------------------------------------------------------------------
class LatencyModel:
    """``predictor.params.latency_ms``: a number (every firing costs that), a table ``{batch: ms}``
    (piecewise linear in the batch, clamped at the ends) or a path to a YAML file holding one (e.g.
    the ``latency.yaml`` that ``moesim predictor eval`` writes), or ``"measured"``: timed on this
    CPU once per batch size (learned predictors only; the run then depends on this machine)."""

    def __init__(self, name: str, value: Any, measure: Callable[[int], float] | None = None):
        self.name = name
        self._const: float | None = None
        self._table: tuple[np.ndarray, np.ndarray] | None = None
        self._measure = None
        self._measured: dict[int, float] = {}
        if value is None:
            value = 0.0
        if isinstance(value, str) and value == "measured":
            if measure is None:
                fail(
                    f"predictor.params.latency_ms: {name} has no model to time; give a number or a {{batch: ms}} table"
                )
            self._measure = measure
        elif isinstance(value, str):
            path = Path(value).expanduser()
            if not path.is_file():
                fail(f"predictor.params.latency_ms: {value}: no such latency table file (YAML {{batch: ms}})")
            table = load_file(path, "YAML latency table ({batch: ms})")
            if isinstance(table, dict) and "batch_ms" in table:
                table = table["batch_ms"]
            self._set_table(table, str(path))
        elif isinstance(value, dict):
            self._set_table(value, "predictor.params.latency_ms")
        else:
            self._const = as_float(name, "latency_ms", value, lo=0.0)

    def _set_table(self, table: Any, where: str) -> None:
        if not isinstance(table, dict) or not table:
            fail(f"{where}: a latency table is a non-empty mapping batch: ms")
        try:
            pts = sorted((int(b), float(ms)) for b, ms in table.items())
        except (TypeError, ValueError):
            fail(f"{where}: latency table entries must be batch (integer): ms (number)")
        if any(b < 1 or ms < 0 or math.isnan(ms) for b, ms in pts):
            fail(f"{where}: latency table needs batch >= 1 and ms >= 0")
        self._table = (np.array([p[0] for p in pts], float), np.array([p[1] for p in pts], float))

    @property
    def free(self) -> bool:
        return self._const == 0.0

    def __call__(self, batch: int, context: int) -> float:
        if self._const is not None:
            return self._const
        if self._table is not None:
            xs, ys = self._table
            return float(np.interp(batch, xs, ys))
        if batch not in self._measured:
            self._measured[batch] = self._measure(batch)  # type: ignore[misc]
        return self._measured[batch]


def time_call(fn: Callable[[], object], repeats: int = 30) -> float:
    """Median wall time of ``fn`` in ms, after a warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


# -- base class ------------------------------------------------------------------------------------
class PlannedPredictor(Predictor):
    """A predictor firing after the gate with per-layer horizons and a configurable cost.

    Subclasses implement ``scores(s, t)`` (an (E,) score vector for target step ``t`` given what has
    been observed up to step ``s``; None for no prediction) and may override ``start``/``observe``
    (calling super). ``max_horizon`` is the furthest target any firing asks for.
    """

    params: ClassVar[dict[str, object]] = COMMON_PARAMS

    def __init__(self, setup: PredictorSetup):
        super().__init__(setup)
        self.k = setup.top_k
        self.plan = HorizonPlan(layer_horizons(setup, self.name))
        self.max_horizon = self.plan.max_h
        self._latency = LatencyModel(self.name, setup.params.get("latency_ms", 0.0), self._measure_latency)
        self.runs_on = runs_on(setup, type(self))  # type: ignore[misc]  # an instance override of the class default
        self._n = 0
        self.seen: list[list[int]] = []  # observed keys per layer-step of the current group

    # cost ------------------------------------------------------------------------------------------
    def _measure_latency(self, batch: int) -> float:
        fail(f"predictor.params.latency_ms: {self.name} cannot be measured; give a number or a table")
        raise AssertionError

    def latency_ms(self, batch: int, context: int) -> float:
        return self._latency(batch, context)

    # interface -------------------------------------------------------------------------------------
    def start(self, group: Group) -> list[Prediction]:
        self.group = group
        self._n = len(group.steps)
        self.seen = []
        out: list[Prediction] = []
        for t in self.plan.start_targets(self._n):
            sc = self.scores(-1, t)
            if sc is not None:
                keys, vals = ranked(sc, t % self.L, self.E)
                out.append((t, keys, vals))
        return out

    def observe(self, s: int, keys: list[int]) -> None:
        self.seen.append(keys)

    def predict(self, s: int) -> list[Prediction]:
        out: list[Prediction] = []
        for t in self.plan.targets(s, self._n):
            sc = self.scores(s, t)
            if sc is not None:
                keys, vals = ranked(sc, t % self.L, self.E)
                out.append((t, keys, vals))
        return out

    def scores(self, s: int, t: int) -> np.ndarray | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def local_ids(self, u: int) -> np.ndarray:
        """Expert ids (within its layer) observed at step ``u`` of the current group."""
        E = self.E
        return np.fromiter((k % E for k in self.seen[u]), dtype=np.int64)


def check_fit_trace(setup: PredictorSetup, name: str, trace: Trace | None = None) -> Trace:
    tr = setup.fit_trace if trace is None else trace
    if tr is None:
        fail(f"predictor.fit_trace: {name} needs a training trace")
    if tr.meta.num_layers != setup.num_layers or tr.meta.num_experts != setup.num_experts:
        fail(
            f"predictor.fit_trace: training trace has L={tr.meta.num_layers}, E={tr.meta.num_experts}; "
            f"the run needs L={setup.num_layers}, E={setup.num_experts}"
        )
    return tr  # type: ignore[return-value]


# -- fitted-model memo -----------------------------------------------------------------------------
# Sweeps and the contract tests build many cores over the same training trace: fitting once per
# (predictor, training data, parameters, seed) keeps them fast. Bounded, so long sweeps do not grow.
_FIT_CACHE: dict[tuple, object] = {}
_FIT_CACHE_SIZE = 6


def trace_fingerprint(trace: Trace) -> str:
    """Content hash of what fitting reads: routing, weights, offsets and side data."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for arr in (
        trace.experts,
        trace.seq_offsets,
        trace.seq_domain,
        trace.weights,
        hidden_states_of(trace),
        router_inputs_of(trace),
    ):
        if arr is None:
            h.update(b"-")
            continue
        a = np.ascontiguousarray(arr)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.view(np.uint8).reshape(-1) if a.size else b"")  # type: ignore[arg-type]
    return h.hexdigest()


def memo_fit(key: tuple, build: Callable[[], Any]) -> Any:
    if key in _FIT_CACHE:
        return _FIT_CACHE[key]
    value = build()
    if len(_FIT_CACHE) >= _FIT_CACHE_SIZE:
        _FIT_CACHE.pop(next(iter(_FIT_CACHE)))
    _FIT_CACHE[key] = value
    return value


def params_key(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=str)


# -- safe model files ------------------------------------------------------------------------------
def save_model_file(path: str | os.PathLike, tensors: dict[str, np.ndarray], config: dict[str, Any]) -> Path:
    """A model as safetensors (``.safetensors``, the default) or a torch state_dict (``.pt``/``.pth``,
    read back with ``weights_only=True``); ``config`` rides along as JSON. Written atomically."""
    from moesim.io import atomic_write_with

    path = Path(path)
    text = json.dumps(config, sort_keys=True)
    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    if path.suffix in (".pt", ".pth"):
        import torch

        def write(tmp: Path) -> None:
            state = {k: torch.from_numpy(v.copy()) for k, v in arrays.items()}
            torch.save({"state_dict": state, "config_json": text}, tmp)

    else:
        from safetensors.numpy import save_file

        def write(tmp: Path) -> None:
            save_file(arrays, str(tmp), metadata={"moesim_config": text})

    atomic_write_with(path, write)
    return path


def check_model_config(
    path: Any, cfg: dict[str, Any], ints: Sequence[str], floats: Sequence[str] = ()
) -> None:
    """Refuse a model config whose sizes are not positive integers (booleans, strings and
    fractions included) or whose rates are not finite numbers in [0, 1]: nothing is built from it."""
    for key in ints:
        v, hi = cfg.get(key), 256 if key == "threads" else _MODEL_INT_MAX
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= hi:
            fail(f"{path}: model config {key} is {v!r}; expected an integer in [1, {hi}]")
    for key in floats:
        v = cfg.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
            fail(f"{path}: model config {key} is {v!r}; expected a number in [0, 1]")


_MODEL_INT_MAX = 1 << 24


def load_model_file(path: str | os.PathLike, expect: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a model written by :func:`save_model_file`; ``expect`` is the predictor name it must be for."""
    path = Path(path).expanduser()
    if not path.is_file():
        fail(f"predictor.params.model: {path}: no such model file (train one with moesim predictor train)")
    try:
        if path.suffix in (".pt", ".pth"):
            import torch

            raw = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(raw, dict) or "state_dict" not in raw or "config_json" not in raw:
                fail(f"{path}: not a moesim predictor state_dict (expected keys state_dict, config_json)")
            if not isinstance(raw["state_dict"], dict) or not isinstance(raw["config_json"], str):
                fail(f"{path}: state_dict must map names to tensors and config_json must be a string")
            config = parse_json_text(raw["config_json"], f"{path}: config_json")
            tensors = {str(k): v.numpy() for k, v in raw["state_dict"].items()}
        else:
            from safetensors import safe_open
            from safetensors.numpy import load_file

            with safe_open(str(path), framework="np") as fh:
                meta = fh.metadata() or {}
            if "moesim_config" not in meta:
                fail(f"{path}: safetensors file without moesim_config metadata; not a moesim predictor model")
            config = parse_json_text(meta["moesim_config"], f"{path}: moesim_config")
            if not isinstance(config, dict) or config.get("predictor") != expect:
                got = config.get("predictor") if isinstance(config, dict) else None
                fail(f"{path}: model was trained for predictor {got!r}, not {expect!r}")
            tensors = load_file(str(path))
    except MoesimInputError:
        raise
    except Exception as exc:  # a corrupt file: torch, safetensors and json each raise their own types
        fail(
            f"{path}: cannot read predictor model ({exc.__class__.__name__}: {(str(exc).splitlines() or [''])[0][:120]})"
        )
    if not isinstance(config, dict):
        fail(f"{path}: model config is a JSON {type(config).__name__}, expected an object")
    if config.get("predictor") != expect:
        fail(f"{path}: model was trained for predictor {config.get('predictor')!r}, not {expect!r}")
    return tensors, config
