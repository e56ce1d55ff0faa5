"""Prophet (seeds 000/001): a small transformer over the routing of the last c layer-steps (and the
previous token's routing at the target layers), with one output head per horizon h = 1..H and
temperature-calibrated confidences.

Features (identical online and in the batched offline path, see ``_features``): after the gate of
layer-step ``s`` (flattened ``token * L + layer`` within a request, so context and targets cross
token boundaries), the context is steps ``s, s-1, ..., s-c+1``; for each horizon ``d`` the temporal
token is step ``s + d - L`` (the previous token at the target layer, always already observed for
``d <= L``) and the query is the target layer ``(s + d) % L``. The paper's L1/L2 confidence tiers are
a cache policy; this predictor supplies the calibrated scores they need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moesim.errors import fail
from moesim.policies.params import Param, ParamSchema
from moesim.policies.predictors._common import (
    COMMON_PARAMS,
    PlannedPredictor,
    as_bool,
    as_float,
    as_int,
    check_fit_trace,
    check_model_config,
    load_model_file,
    memo_fit,
    param,
    params_key,
    save_model_file,
    time_call,
    trace_fingerprint,
)
from moesim.policies.predictors._prophet_batch import GroupPredictions, firing_heads, head_probs
from moesim.policies.predictors.base import Prediction, PredictorSetup
from moesim.policies.registries import PREDICTORS
from moesim.traces.replay import Group
from moesim.traces.trace import Trace

NAME = "prophet"

# Architecture and training knobs (predictor.params, or --set on moesim predictor train).
ARCH_PARAMS: dict[str, object] = {
    "context": 3,  # c: layer-steps of routing history
    "heads": 3,  # H: horizons the model predicts (raised to the run's largest horizon when fitting)
    "d_model": 128,
    "layers": 2,
    "attn_heads": 4,
    "ff": 256,
    "dropout": 0.1,
}
TRAIN_PARAMS: dict[str, object] = {
    "epochs": 6,
    "batch_size": 512,
    "lr": 0.002,
    "weight_decay": 0.01,
    "val_fraction": 0.1,  # training sequences held back to calibrate the temperatures
    "max_samples": None,  # subsample training layer-steps (None: all)
    "time_budget_s": None,  # stop training after the epoch that crosses this
    "calibrate": True,
    "threads": 1,  # torch intra-op threads while training and predicting
}


def _steps(trace: Trace, q: int) -> np.ndarray:
    """(T * L, k) global expert keys (layer * E + id) of sequence q, in layer-step order."""
    L, E = trace.meta.num_layers, trace.meta.num_experts
    ex = np.asarray(trace.sequence(q), dtype=np.int64) + (np.arange(L, dtype=np.int64) * E)[None, :, None]
    return ex.reshape(-1, trace.meta.top_k)


def _rows(s: np.ndarray, base: np.ndarray, n: np.ndarray, c: int, H: int, L: int, pad_row: int):
    """Row indices (into the stacked step table) of each sample's c context and H temporal (query)
    tokens, of its H target steps, and the token layers. s/base/n: (B,) source step, sequence base
    row, sequence steps."""
    j = np.arange(c)
    d = np.arange(1, H + 1)
    ctx = s[:, None] - j[None, :]
    tmp = s[:, None] + d[None, :] - L
    tgt = s[:, None] + d[None, :]
    rows_ctx = np.where(ctx >= 0, base[:, None] + ctx, pad_row)
    rows_tmp = np.where(tmp >= 0, base[:, None] + tmp, pad_row)
    rows_tgt = np.where(tgt < n[:, None], base[:, None] + tgt, pad_row)
    layers = np.concatenate([ctx % L, tgt % L], axis=1)
    return np.concatenate([rows_ctx, rows_tmp], axis=1), rows_tgt, layers


@dataclass
class ProphetModel:
    """A fitted Prophet: the network, its config, per-horizon temperatures and training facts."""

    config: dict[str, Any]
    net: Any  # ProphetNet (torch)
    temperatures: list[float]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_params(self) -> int:
        from moesim.policies.predictors._nets import count_params

        return count_params(self.net)

    # -- inference ---------------------------------------------------------------------------------
    def logits(self, table: np.ndarray, rows: np.ndarray, layers: np.ndarray) -> np.ndarray:
        """(B, H, E) logits for samples given as rows of ``table`` ((R, m) global keys, pad = L*E)."""
        import torch

        from moesim.policies.predictors._nets import torch_threads

        with torch_threads(self.config.get("threads", 1)), torch.inference_mode():
            ids = torch.from_numpy(table[rows])
            out = self.net(ids, torch.from_numpy(layers))
        return out.numpy()

    def probs(self, logits: np.ndarray) -> np.ndarray:
        t = np.asarray(self.temperatures, np.float32)[None, :, None]
        return 1.0 / (1.0 + np.exp(-logits / t))

    # -- files -------------------------------------------------------------------------------------
    def save(self, path) -> None:
        from moesim.policies.predictors._nets import state_to_numpy

        cfg = dict(self.config, predictor=NAME, temperatures=self.temperatures, info=self.info)
        save_model_file(path, state_to_numpy(self.net), cfg)

    @classmethod
    def load(cls, path) -> ProphetModel:
        from moesim.policies.predictors._nets import checked_module

        tensors, cfg = load_model_file(path, NAME)
        ints = ("L", "E", "context", "heads", "d_model", "layers", "attn_heads", "ff")
        check_model_config(path, cfg, (*ints, *(k for k in ("k", "threads") if k in cfg)), ("dropout",))
        net = checked_module(path, lambda: _build_net(cfg), tensors)
        net.eval()
        temps = cfg.get("temperatures", [1.0] * cfg["heads"])
        if (
            not isinstance(temps, list)
            or len(temps) != cfg["heads"]
            or not all(
                isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t < math.inf for t in temps
            )
        ):
            fail(f"{path}: config temperatures must be {cfg['heads']} positive numbers, one per head")
        info = cfg.get("info", {})
        return cls(cfg, net, list(temps), dict(info) if isinstance(info, dict) else {})


def _build_net(cfg: dict[str, Any]):
    from moesim.policies.predictors._nets import ProphetNet

    return ProphetNet(
        cfg["L"],
        cfg["E"],
        cfg["context"],
        cfg["heads"],
        cfg["d_model"],
        cfg["layers"],
        cfg["attn_heads"],
        cfg["ff"],
        cfg["dropout"],
    )


def _check_params(p: dict[str, Any], L: int) -> dict[str, Any]:
    n = NAME
    out: dict[str, Any] = {
        "context": as_int(n, "context", p["context"], 1, 64),
        "heads": as_int(n, "heads", p["heads"], 1, L),
        "d_model": as_int(n, "d_model", p["d_model"], 8),
        "layers": as_int(n, "layers", p["layers"], 1),
        "attn_heads": as_int(n, "attn_heads", p["attn_heads"], 1),
        "ff": as_int(n, "ff", p["ff"], 8),
        "dropout": as_float(n, "dropout", p["dropout"], 0.0, 0.9),
        "epochs": as_int(n, "epochs", p["epochs"], 1),
        "batch_size": as_int(n, "batch_size", p["batch_size"], 1),
        "lr": as_float(n, "lr", p["lr"], 1e-6, 1.0),
        "weight_decay": as_float(n, "weight_decay", p["weight_decay"], 0.0, 1.0),
        "val_fraction": as_float(n, "val_fraction", p["val_fraction"], 0.0, 0.5),
        "max_samples": None if p["max_samples"] is None else as_int(n, "max_samples", p["max_samples"], 1),
        "time_budget_s": None
        if p["time_budget_s"] is None
        else as_float(n, "time_budget_s", p["time_budget_s"], 0.0),
        "calibrate": as_bool(n, "calibrate", p["calibrate"]),
        "threads": as_int(n, "threads", p["threads"], 1, 256),
    }
    if out["d_model"] % out["attn_heads"]:
        fail(f"predictor.params.d_model: {n} needs d_model divisible by attn_heads ({out['attn_heads']})")
    return out


def fit_prophet(trace: Trace, params: dict[str, Any], seed: int) -> ProphetModel:
    """Train on every layer-step of ``trace`` (the last ``val_fraction`` of its sequences calibrate)."""
    from moesim.policies.predictors._nets import torch_threads

    with torch_threads(as_int(NAME, "threads", params.get("threads", 1), 1, 256)):
        return _fit(trace, params, seed)


def _fit(trace: Trace, params: dict[str, Any], seed: int) -> ProphetModel:
    import time

    import torch

    from moesim.policies.predictors._nets import deterministic, fit_temperature, train_loop

    t0 = time.perf_counter()
    L, E, k = trace.meta.num_layers, trace.meta.num_experts, trace.meta.top_k
    p = _check_params(params, L)
    c, H = p["context"], p["heads"]
    gen = deterministic(seed)
    S = trace.num_sequences
    if S == 0 or trace.num_tokens == 0:
        fail(f"predictor.fit_trace: {NAME} needs a training trace with decode tokens")
    n_val = int(round(S * p["val_fraction"])) if p["calibrate"] and S > 1 else 0
    n_val = min(n_val, S - 1)
    tables = [_steps(trace, q) for q in range(S)]
    lens = np.array([len(t) for t in tables], np.int64)
    bases = np.concatenate([[0], np.cumsum(lens)])[:-1]
    table = np.concatenate(tables + [np.full((1, k), L * E, np.int64)])
    pad_row = len(table) - 1
    local = np.where(table < L * E, table % E, -1)

    def samples(seqs: range) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ss, bb, nn_ = [], [], []
        for q in seqs:
            n = int(lens[q])
            if n < 2:
                continue
            ss.append(np.arange(n - 1))
            bb.append(np.full(n - 1, bases[q]))
            nn_.append(np.full(n - 1, n))
        if not ss:
            return (np.zeros(0, np.int64),) * 3
        return np.concatenate(ss), np.concatenate(bb), np.concatenate(nn_)

    tr_s, tr_b, tr_n = samples(range(S - n_val))
    if p["max_samples"] is not None and len(tr_s) > p["max_samples"]:
        keep = np.sort(np.random.default_rng(seed).choice(len(tr_s), p["max_samples"], replace=False))
        tr_s, tr_b, tr_n = tr_s[keep], tr_b[keep], tr_n[keep]
    if len(tr_s) == 0:
        fail(f"predictor.fit_trace: {NAME} needs sequences of at least 2 layer-steps")
    in_rows, tgt_rows, layers = _rows(tr_s, tr_b, tr_n, c, H, L, pad_row)
    in_rows_t = torch.from_numpy(in_rows)
    tgt_rows_t = torch.from_numpy(tgt_rows)
    layers_t = torch.from_numpy(layers)
    table_t = torch.from_numpy(table)
    local_t = torch.from_numpy(local)

    cfg = {"L": L, "E": E, "k": k, "threads": p["threads"], **{key: p[key] for key in ARCH_PARAMS}}
    net = _build_net(cfg)

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        ids = table_t[in_rows_t[idx]]
        logits = net(ids, layers_t[idx])  # (B, H, E)
        tl = local_t[tgt_rows_t[idx]]  # (B, H, k), -1 where no target
        y = torch.zeros_like(logits)
        y.scatter_(2, tl.clamp(min=0), 1.0)
        mask = (tl[:, :, 0] >= 0).to(logits.dtype)[:, :, None]
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
        return (bce * mask).sum() / (mask.sum() * E).clamp(min=1)

    log = train_loop(
        net,
        len(tr_s),
        batch_loss,
        epochs=p["epochs"],
        batch_size=p["batch_size"],
        lr=p["lr"],
        weight_decay=p["weight_decay"],
        gen=gen,
        time_budget_s=p["time_budget_s"],
    )
    temps = [1.0] * H
    if n_val:
        va_s, va_b, va_n = samples(range(S - n_val, S))
        if len(va_s):
            vi, vt, vl = _rows(va_s, va_b, va_n, c, H, L, pad_row)
            model = ProphetModel(cfg, net, temps)
            logit_parts = [
                model.logits(table, vi[i : i + 4096], vl[i : i + 4096]) for i in range(0, len(vi), 4096)
            ]
            lg = np.concatenate(logit_parts)
            tl = local[vt]  # (N, H, k)
            for d in range(H):
                y = np.zeros((len(tl), E), np.float32)
                ok = tl[:, d, 0] >= 0
                np.put_along_axis(y, np.clip(tl[:, d], 0, None), 1.0, axis=1)
                temps[d] = fit_temperature(lg[:, d], y, ok)
    info = {
        "train_sequences": int(S - n_val),
        "calibration_sequences": int(n_val),
        "train_samples": int(log.samples),
        "epochs_run": int(log.epochs),
        "final_loss": round(float(log.final_loss), 6),
        "train_seconds": round(time.perf_counter() - t0, 2),
        "seed": seed,
        "training": {key: p[key] for key in TRAIN_PARAMS},
    }
    return ProphetModel(cfg, net, temps, info)


@PREDICTORS.register
class Prophet(PlannedPredictor):
    """Prophet's transformer predictor (seeds 000/001). Trains on ``predictor.fit_trace`` (default the
    replayed trace: optimistic) or loads ``predictor.params.model`` (``moesim predictor train``)."""

    name = NAME
    observes = frozenset({"routing of the last c layer-steps", "previous token's routing", "training trace"})
    # batch_inference: compute a static group's predictions up front in batched torch (identical to
    # false, the per-step path kept as the reference and for groups that grow while they run)
    params = (
        COMMON_PARAMS
        | ParamSchema(model=Param(None, "str"), batch_inference=Param(True, "bool"))
        | ARCH_PARAMS
        | TRAIN_PARAMS
    )
    trainable = True

    def __init__(self, setup: PredictorSetup):
        super().__init__(setup)
        model_path = setup.params.get("model")
        if isinstance(model_path, ProphetModel):  # an in-memory model (Python API, evaluation)
            self.model = model_path
        elif model_path is not None:
            self.model = ProphetModel.load(model_path)
        else:
            fit = check_fit_trace(setup, NAME)
            merged = {key: param(setup, type(self), key) for key in {**ARCH_PARAMS, **TRAIN_PARAMS}}
            if isinstance(merged["heads"], int) and not isinstance(merged["heads"], bool):
                merged["heads"] = max(merged["heads"], self.max_horizon)
            key = (NAME, trace_fingerprint(fit), params_key(merged), setup.seed)
            self.model = memo_fit(key, lambda: fit_prophet(fit, merged, setup.seed))
        cfg = self.model.config
        if cfg["L"] != self.L or cfg["E"] != self.E:
            fail(
                f"predictor.params.model: model is for L={cfg['L']}, E={cfg['E']}; the run has L={self.L}, E={self.E}"
            )
        if cfg["heads"] < self.max_horizon:
            fail(
                f"predictor.horizon: the {NAME} model predicts up to {cfg['heads']} layer-steps ahead; "
                f"this run asks for {self.max_horizon} (retrain with --set heads={self.max_horizon})"
            )
        self.c, self.H = cfg["context"], cfg["heads"]
        self._pad = self.L * self.E
        self._cache_s = -2
        self._cache_probs: dict[int, np.ndarray] = {}
        self.batch_inference = as_bool(NAME, "batch_inference", setup.params.get("batch_inference", True))
        self._pre: GroupPredictions | None = None

    @classmethod
    def fit_model(cls, trace: Trace, params: dict[str, Any], seed: int) -> ProphetModel:
        merged = {key: params.get(key, cls.params[key]) for key in {**ARCH_PARAMS, **TRAIN_PARAMS}}
        return fit_prophet(trace, merged, seed)

    @classmethod
    def load_model(cls, path) -> ProphetModel:
        return ProphetModel.load(path)

    # -- online ------------------------------------------------------------------------------------
    def start(self, group: Group) -> list[Prediction]:
        self._cache_s = -2  # the cache is keyed by step, and steps restart with every group
        self._pre = None
        # A group still forming (continuous batching) does not hold its steps yet: per step. So does
        # a model whose temporal tokens would lie after the firing step (heads > L).
        if not self.batch_inference or group.dynamic or self.H > self.L:
            return super().start(group)
        self.group, self._n, self.seen = group, len(group.steps), []  # as PlannedPredictor.start
        self._pre = GroupPredictions(self.model, self.plan, group.steps, self.L, self.E)
        return self._pre.at(-1)

    def planned(self, n_pred: int, threshold: float | None) -> tuple[np.ndarray, np.ndarray] | None:
        """Right after ``start``: what ``predict`` will return at every firing of the group, cut as
        the planner cuts it ((keys per firing, the keys); the fast executor's prediction pass), or
        None when this group is predicted per step."""
        return None if self._pre is None else self._pre.cut(n_pred, threshold)

    def observe(self, s: int, keys: list[int]) -> None:
        super().observe(s, keys)
        # The precomputed predictions assume the observed routing is the group's: anything else (a
        # caller feeding other keys) switches to the per-step path, which reads what was observed.
        pre = self._pre
        if pre is not None and keys is not self.group.steps[s] and keys != self.group.steps[s]:
            self._pre = None

    def predict(self, s: int) -> list[Prediction]:
        pre = self._pre
        return pre.at(s) if pre is not None else super().predict(s)

    def _inputs(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        L, c, H, pad = self.L, self.c, self.H, self._pad
        steps = [s - j for j in range(c)] + [s + d - L for d in range(1, H + 1)]
        sets = [self.seen[u] if u >= 0 else [] for u in steps]
        m = max(1, max(len(x) for x in sets))
        ids = np.full((1, len(sets), m), pad, np.int64)
        for i, keys in enumerate(sets):
            ids[0, i, : len(keys)] = keys
        layers = np.array([[u % L for u in steps[:c]] + [(s + d) % L for d in range(1, H + 1)]], np.int64)
        return ids, layers

    def scores(self, s: int, t: int) -> np.ndarray | None:
        """The per-step path (the reference of the batched one): one network call per firing."""
        if s != self._cache_s:
            _, heads = firing_heads(self.plan, s, self._n)
            ids, layers = self._inputs(s)
            probs = head_probs(self.model, ids, layers, heads)[0]
            self._cache_probs = {d: probs[i] for i, d in enumerate(heads)}
            self._cache_s = s
        return self._cache_probs[t - s]

    def _measure_latency(self, batch: int) -> float:
        L, E = self.L, self.E
        rng = np.random.default_rng(0)
        T = self.c + self.H
        table = rng.integers(0, L * E, size=(batch * T, self.setup.top_k)).astype(np.int64)
        rows = np.arange(batch * T).reshape(batch, T)
        layers = rng.integers(0, L, size=(batch, T)).astype(np.int64)
        return time_call(lambda: self.model.logits(table, rows, layers))

    # -- offline (batched) -------------------------------------------------------------------------
    def batch_scores(self, trace: Trace, q: int, d: int) -> np.ndarray:
        """Scores for target ``s + d`` made after the gate of every step ``s`` of sequence ``q``
        ((n_steps - d, E)); the same features and numbers as the online path, batched."""
        L, E, k = self.L, self.E, trace.meta.top_k
        table = np.concatenate([_steps(trace, q), np.full((1, k), L * E, np.int64)])
        n = len(table) - 1
        s = np.arange(max(0, n - d))
        rows, _, layers = _rows(s, np.zeros_like(s), np.full_like(s, n), self.c, self.H, L, n)
        out = np.empty((len(s), E), np.float32)
        for i in range(0, len(s), 4096):
            lg = self.model.logits(table, rows[i : i + 4096], layers[i : i + 4096])
            out[i : i + 4096] = self.model.probs(lg)[:, d - 1]
        return out
