"""Pre-attention expert prediction (seed 002, section 4): per MoE layer, a 2-layer MLP on the
pre-attention hidden state (the input layernorm's output) predicts that same layer's experts while
attention runs. Fires before attention; the target is the current layer-step.

Architectures (4.3): 1 = Linear(H, hidden) - BatchNorm1d - GELU - Dropout(0.1) - Linear(hidden, E);
2 = Linear(H, hidden) - SiLU - Linear(hidden, E); hidden = 2048 as in the paper.
Losses (4.5): ``wbce`` = weighted BCE, weight 3.0 on the true top-10 experts and 0.5 elsewhere
(eq. 6-8); ``ranking`` = weighted BCE with 3.0 / 1.5 / 0.5 on true ranks 1-10 / 11-30 / rest plus
lambda (0.3) x the pairwise hinge over the true top-10 with margin 0.1 (eq. 9-11). The paper pairs
``ranking`` with architecture 1 and ``wbce`` with architecture 2 (``loss: auto``). True ranks beyond
the k selected experts need the full router probabilities (``Trace.router_probs``); without them only
the k selected experts are ranked (rank k..E-1 unknown, weight 0.5).
Modes: ``ranked`` (the whole ranking; the planner's top_n / overprovision / threshold cut it),
``topk`` (exactly k x batch), ``overprovision`` (k + m), ``top1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moesim.errors import fail
from moesim.policies.params import Param, ParamSchema
from moesim.policies.predictors._common import (
    COMMON_PARAMS,
    LatencyModel,
    active_rows,
    as_choice,
    as_float,
    as_int,
    check_fit_trace,
    check_model_config,
    load_model_file,
    memo_fit,
    params_key,
    ranked,
    require_hidden,
    runs_on,
    save_model_file,
    time_call,
    trace_fingerprint,
    trace_label,
)
from moesim.policies.predictors.base import PRE_ATTENTION, Prediction, Predictor, PredictorSetup
from moesim.policies.registries import PREDICTORS
from moesim.traces.replay import Group
from moesim.traces.trace import Trace

NAME = "pre-attention"

FIT_PARAMS: dict[str, object] = {
    "arch": 2,
    "hidden": 2048,
    "loss": "auto",  # auto | wbce | ranking
    "lambda": 0.3,
    "margin": 0.1,
    "epochs": 10,
    "batch_size": 256,
    "lr": 0.001,
    "weight_decay": 0.0,
    "threads": 1,
}


@dataclass
class PreAttentionModel:
    config: dict[str, Any]
    nets: list[Any]  # one torch MLP per MoE layer
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_params(self) -> int:
        from moesim.policies.predictors._nets import count_params

        return sum(count_params(n) for n in self.nets)

    def logits(self, layer: int, x: np.ndarray) -> np.ndarray:
        import torch

        from moesim.policies.predictors._nets import torch_threads

        with torch_threads(self.config.get("threads", 1)), torch.inference_mode():
            return self.nets[layer](torch.from_numpy(np.asarray(x, np.float32))).numpy()

    def save(self, path) -> None:
        from moesim.policies.predictors._nets import state_to_numpy

        tensors = {}
        for layer, net in enumerate(self.nets):
            tensors.update({f"layer{layer}.{k}": v for k, v in state_to_numpy(net).items()})
        save_model_file(path, tensors, dict(self.config, predictor=NAME, info=self.info))

    @classmethod
    def load(cls, path) -> PreAttentionModel:
        from moesim.policies.predictors._nets import checked_module, pre_attention_mlp

        tensors, cfg = load_model_file(path, NAME)
        check_model_config(
            path, cfg, ("L", "E", "H", "hidden", "arch", *(k for k in ("k", "threads") if k in cfg))
        )
        L = cfg.get("L")
        stored = {k.split(".", 1)[0] for k in tensors}
        if isinstance(L, bool) or not isinstance(L, int) or stored != {f"layer{i}" for i in range(L)}:
            fail(f"{path}: config L={L!r} but the file holds {len(stored)} layer network(s)")
        nets = []
        for layer in range(L):
            net = checked_module(
                path,
                lambda: pre_attention_mlp(cfg["arch"], cfg["H"], cfg["hidden"], cfg["E"]),
                tensors,
                prefix=f"layer{layer}.",
            )
            net.eval()
            nets.append(net)
        info = cfg.get("info", {})
        return cls(cfg, nets, dict(info) if isinstance(info, dict) else {})


def _check(p: dict[str, Any]) -> dict[str, Any]:
    n = NAME
    out = {
        "arch": as_choice(n, "arch", p["arch"], (1, 2)),
        "hidden": as_int(n, "hidden", p["hidden"], 1),
        "loss": as_choice(n, "loss", p["loss"], ("auto", "wbce", "ranking")),
        "lambda": as_float(n, "lambda", p["lambda"], 0.0),
        "margin": as_float(n, "margin", p["margin"], 0.0),
        "epochs": as_int(n, "epochs", p["epochs"], 1),
        "batch_size": as_int(n, "batch_size", p["batch_size"], 2),
        "lr": as_float(n, "lr", p["lr"], 1e-7, 1.0),
        "weight_decay": as_float(n, "weight_decay", p["weight_decay"], 0.0, 1.0),
        "threads": as_int(n, "threads", p["threads"], 1, 256),
    }
    if out["loss"] == "auto":
        out["loss"] = "ranking" if out["arch"] == 1 else "wbce"
    return out


UNKNOWN_RANK = 1 << 30  # beyond every weight tier, whatever E is


def true_ranks(trace: Trace, layer: int) -> np.ndarray:
    """(N, E) int: each expert's true router rank at ``layer`` (0 = highest); UNKNOWN_RANK where the
    trace does not say. With ``router_probs`` every expert is ranked; otherwise only the k selected."""
    E = trace.meta.num_experts
    probs = getattr(trace, "router_probs", None)
    N = trace.num_tokens
    if probs is not None:
        order = np.argsort(-np.asarray(probs[:, layer], np.float32), axis=1, kind="stable")
        rank = np.empty((N, E), np.int64)
        np.put_along_axis(rank, order, np.arange(E)[None, :].repeat(N, 0), axis=1)
        return rank
    rank = np.full((N, E), UNKNOWN_RANK, np.int64)
    ex = np.asarray(trace.experts[:, layer], np.int64)
    np.put_along_axis(rank, ex, np.arange(ex.shape[1])[None, :].repeat(N, 0), axis=1)
    return rank


def fit_pre_attention(trace: Trace, params: dict[str, Any], seed: int) -> PreAttentionModel:
    from moesim.policies.predictors._nets import torch_threads

    p = _check(params)
    with torch_threads(p["threads"]):
        return _fit(trace, p, seed)


def _fit(trace: Trace, p: dict[str, Any], seed: int) -> PreAttentionModel:
    import time

    import torch

    from moesim.policies.predictors._nets import (
        deterministic,
        pre_attention_mlp,
        ranking_loss,
        train_loop,
        weighted_bce,
    )

    t0 = time.perf_counter()
    hs = require_hidden(trace, NAME, role="training trace (predictor.fit_trace)")
    L, E, k = trace.meta.num_layers, trace.meta.num_experts, trace.meta.top_k
    H = hs.shape[2]
    if trace.num_tokens < 2:
        fail(f"predictor.fit_trace: {NAME} needs at least 2 decode tokens with hidden states")
    tiers = (10, 10) if p["loss"] == "wbce" else (10, 30)
    gen = deterministic(seed)
    nets, logs = [], []
    for layer in range(L):
        net = pre_attention_mlp(p["arch"], H, p["hidden"], E)
        X = torch.from_numpy(np.asarray(hs[:, layer], np.float32))
        rank = torch.from_numpy(true_ranks(trace, layer))
        known = k if getattr(trace, "router_probs", None) is None else E  # ranks the trace tells us
        top = torch.from_numpy(np.argsort(rank.numpy(), axis=1, kind="stable")[:, : min(10, known)])

        def batch_loss(idx: torch.Tensor, net=net, X=X, rank=rank, top=top) -> torch.Tensor:
            if len(idx) < 2:  # BatchNorm cannot train on one sample: reuse a neighbour
                idx = torch.cat([idx, (idx + 1) % len(X)])
            z = net(X[idx])
            loss = weighted_bce(z, rank[idx], tiers, k)
            if p["loss"] == "ranking":
                loss = loss + p["lambda"] * ranking_loss(z, top[idx], p["margin"])
            return loss

        log = train_loop(
            net,
            len(X),
            batch_loss,
            epochs=p["epochs"],
            batch_size=p["batch_size"],
            lr=p["lr"],
            weight_decay=p["weight_decay"],
            gen=gen,
        )
        nets.append(net)
        logs.append(round(float(log.final_loss), 6))
    cfg = {"L": L, "E": E, "k": k, "H": int(H), **{key: p[key] for key in ("arch", "hidden", "threads")}}
    info = {
        "loss": p["loss"],
        "train_tokens": int(trace.num_tokens),
        "final_loss_per_layer": logs,
        "train_seconds": round(time.perf_counter() - t0, 2),
        "seed": seed,
        "training": {key: p[key] for key in FIT_PARAMS},
        "rank_source": "router_probs" if getattr(trace, "router_probs", None) is not None else "top-k only",
    }
    return PreAttentionModel(cfg, nets, info)


@PREDICTORS.register
class PreAttention(Predictor):
    name = NAME
    fires = PRE_ATTENTION
    observes = frozenset({"pre-attention hidden state of the current layer"})
    params = (
        COMMON_PARAMS
        | ParamSchema(
            model=Param(None, "str"),
            mode=Param("ranked", "str", choices=("ranked", "topk", "overprovision", "top1")),
            m=Param(4, "int", 0),
        )
        | FIT_PARAMS
    )
    trainable = True

    def __init__(self, setup: PredictorSetup):
        super().__init__(setup)
        self.k = setup.top_k
        if setup.params.get("horizon_per_layer") is not None:
            fail(f"predictor.params.horizon_per_layer: {NAME} predicts the current layer (horizon 0)")
        self.trace = setup.trace
        self.hs = require_hidden(setup.trace, NAME, role="replayed trace")
        self.mode = as_choice(
            NAME, "mode", setup.params.get("mode", "ranked"), ("ranked", "topk", "overprovision", "top1")
        )
        self.m = as_int(NAME, "m", setup.params.get("m", 4), 0)
        path = setup.params.get("model")
        if isinstance(path, PreAttentionModel):  # an in-memory model (Python API, evaluation)
            self.model = path
        elif path is not None:
            self.model = PreAttentionModel.load(path)
        else:
            fit = check_fit_trace(setup, NAME)
            merged = {key: setup.params.get(key, FIT_PARAMS[key]) for key in FIT_PARAMS}
            key = (NAME, trace_fingerprint(fit), params_key(merged), setup.seed)
            self.model = memo_fit(key, lambda: fit_pre_attention(fit, merged, setup.seed))
        cfg = self.model.config
        if (cfg["L"], cfg["E"], cfg["H"]) != (self.L, self.E, self.hs.shape[2]):
            fail(
                f"predictor.params.model: model is for L={cfg['L']}, E={cfg['E']}, hidden {cfg['H']}; "
                f"{trace_label(setup.trace)} has L={self.L}, E={self.E}, hidden {self.hs.shape[2]}"
            )
        self._latency = LatencyModel(NAME, setup.params.get("latency_ms", 0.0), self._measure)
        self.runs_on = runs_on(setup, type(self))  # type: ignore[misc]  # instance override of the class default

    @classmethod
    def fit_model(cls, trace: Trace, params: dict[str, Any], seed: int) -> PreAttentionModel:
        return fit_pre_attention(trace, {key: params.get(key, FIT_PARAMS[key]) for key in FIT_PARAMS}, seed)

    @classmethod
    def load_model(cls, path) -> PreAttentionModel:
        return PreAttentionModel.load(path)

    def _measure(self, batch: int) -> float:
        x = np.zeros((batch, self.hs.shape[2]), np.float32)
        return time_call(lambda: self.model.logits(0, x))

    def latency_ms(self, batch: int, context: int) -> float:
        return self._latency(batch, context)

    def _limit(self, batch: int) -> int | None:
        n = min(self.E, self.k * batch)
        return {"ranked": None, "topk": n, "overprovision": min(self.E, n + self.m), "top1": 1}[self.mode]

    def start(self, group: Group) -> list[Prediction]:
        self.group = group
        return []

    def predict(self, s: int) -> list[Prediction]:
        if self.trace is None:
            return []
        t, layer = divmod(s, self.L)
        rows = active_rows(self.trace, self.group, t)
        z = self.model.logits(layer, np.asarray(self.hs[rows, layer], np.float32))
        p = (1.0 / (1.0 + np.exp(-z))).max(0)  # batch: needed if any sequence needs it
        keys, vals = ranked(p, layer, self.E, self._limit(len(rows)))
        return [(s, keys, vals)]

    def batch_scores(self, trace: Trace, q: int, d: int) -> np.ndarray:
        """(T * L, E) probabilities for every layer-step of sequence ``q`` (target = the step itself)."""
        hs = require_hidden(trace, NAME)
        lo, hi = int(trace.seq_offsets[q]), int(trace.seq_offsets[q + 1])
        out = np.empty((hi - lo, self.L, self.E), np.float32)
        for layer in range(self.L):
            z = self.model.logits(layer, np.asarray(hs[lo:hi, layer], np.float32))
            out[:, layer] = 1.0 / (1.0 + np.exp(-z))
        return out.reshape(-1, self.E)
