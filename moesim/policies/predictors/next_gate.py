"""Next-layer gate on the current hidden state (AdapMoE, Fate, Pre-gated MoE style).

After layer l's gate, the hidden state layer l just routed (its router input, else its pre-attention
hidden state) is fed to the gate of the target layer l + d: the router's ranking of that state is
the prediction. Residual streams change little from one layer to the next, which is why this
training-free shortcut works. Gates come from ``predictor.params.gates`` (a safetensors file with
one ``gate.{layer}`` tensor of shape (E, H) per MoE layer, e.g. exported from the model) or, when
not given, are fitted per layer on ``predictor.fit_trace`` by ridge regression from each layer's
router input to its router weights (the k selected experts' weights, or full router
probabilities where the trace has them); a fitted gate can be saved with ``moesim predictor train``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from moesim.errors import fail
from moesim.policies.params import Param, ParamSchema
from moesim.policies.predictors._common import (
    COMMON_PARAMS,
    PlannedPredictor,
    active_rows,
    as_float,
    check_fit_trace,
    load_model_file,
    memo_fit,
    params_key,
    require_hidden,
    router_inputs_of,
    save_model_file,
    trace_fingerprint,
    trace_label,
)
from moesim.policies.predictors.base import PredictorSetup
from moesim.policies.registries import PREDICTORS
from moesim.traces.trace import Trace

NAME = "next-gate"


def gate_inputs(trace: Trace | None, role: str) -> np.ndarray:
    """The router inputs of ``trace`` (N, L, H), else its pre-attention hidden states."""
    x = router_inputs_of(trace)
    return x if x is not None else require_hidden(trace, NAME, role=role)


def fit_gates(trace: Trace, ridge: float) -> np.ndarray:
    """(L, E, H) linear gates: per layer, argmin ||X W - Y||^2 + ridge ||W||^2 with X the router
    inputs and Y the router weights (k-sparse, or full probabilities when captured)."""
    X_all = gate_inputs(trace, "training trace (predictor.fit_trace)")
    L, E, k = trace.meta.num_layers, trace.meta.num_experts, trace.meta.top_k
    H = X_all.shape[2]
    gates = np.zeros((L, E, H), np.float32)
    probs = getattr(trace, "router_probs", None)
    for layer in range(L):
        X = np.asarray(X_all[:, layer], dtype=np.float64)
        if probs is not None:
            Y = np.asarray(probs[:, layer], dtype=np.float64)
        else:
            Y = np.zeros((len(X), E))
            w = (
                np.asarray(trace.weights[:, layer], np.float64)
                if trace.weights is not None
                else np.full((len(X), k), 1.0 / k)
            )
            np.put_along_axis(Y, np.asarray(trace.experts[:, layer], np.int64), w, axis=1)
        A = X.T @ X + ridge * len(X) * np.eye(H)
        gates[layer] = np.linalg.solve(A, X.T @ Y).T.astype(np.float32)
    return gates


@PREDICTORS.register
class NextGate(PlannedPredictor):
    name = NAME
    observes = frozenset({"router input (else pre-attention hidden state) of the current layer"})
    params = COMMON_PARAMS | ParamSchema(
        gates=Param(None, "str"), model=Param(None, "str"), ridge=Param(1e-3, "float", 0.0)
    )
    trainable = True

    def __init__(self, setup: PredictorSetup):
        super().__init__(setup)
        self.trace = setup.trace
        self.X = gate_inputs(setup.trace, "replayed trace")
        path = setup.params.get("gates")
        if path is None:
            path = setup.params.get("model")
        if isinstance(path, np.ndarray):  # in-memory gates (Python API, evaluation)
            self.gates = path
        elif path is not None:
            self.gates = self.load_model(path)
        else:
            fit = check_fit_trace(setup, NAME)
            ridge = as_float(NAME, "ridge", setup.params.get("ridge", 1e-3), 0.0)
            key = (NAME, trace_fingerprint(fit), params_key({"ridge": ridge}))
            self.gates = memo_fit(key, lambda: fit_gates(fit, ridge))
        if self.gates.shape[:2] != (self.L, self.E) or self.gates.shape[2] != self.X.shape[2]:
            fail(
                f"predictor.params.gates: gates of shape {tuple(self.gates.shape)} do not fit "
                f"L={self.L}, E={self.E}, hidden size {self.X.shape[2]} of {trace_label(setup.trace)}"
            )

    # -- model files -------------------------------------------------------------------------------
    @classmethod
    def fit_model(cls, trace: Trace, params: dict[str, Any], seed: int) -> np.ndarray:
        ridge = as_float(NAME, "ridge", params.get("ridge", 1e-3), 0.0)
        return fit_gates(trace, ridge)

    @classmethod
    def save_model(cls, gates: np.ndarray, path) -> None:
        tensors = {f"gate.{layer}": gates[layer] for layer in range(len(gates))}
        save_model_file(path, tensors, {"predictor": NAME, "L": int(gates.shape[0])})

    @classmethod
    def load_model(cls, path) -> np.ndarray:
        p = Path(path)
        if p.suffix == ".safetensors" and p.is_file():
            from safetensors import safe_open

            with safe_open(str(p), framework="np") as fh:
                foreign = "moesim_config" not in (fh.metadata() or {})
            if foreign:  # gates exported from a model: gate.{layer} tensors, no moesim metadata
                from safetensors.numpy import load_file

                tensors = load_file(str(p))
                return _stack_gates(tensors, p)
        tensors, _ = load_model_file(p, NAME)
        return _stack_gates(tensors, p)

    # -- prediction --------------------------------------------------------------------------------
    def scores(self, s: int, t: int) -> np.ndarray | None:
        if s < 0 or self.trace is None:
            return None
        tok, layer = divmod(s, self.L)
        rows = active_rows(self.trace, self.group, tok)
        x = np.asarray(self.X[rows, layer], dtype=np.float32)  # (B, H)
        z = x @ self.gates[t % self.L].T  # (B, E)
        z = np.exp(z - z.max(1, keepdims=True))
        p = z / z.sum(1, keepdims=True)
        return p.max(0)  # batch: an expert is needed if any sequence needs it


def _stack_gates(tensors: dict[str, np.ndarray], path: Path) -> np.ndarray:
    layers = sorted(
        int(k.split(".")[1]) for k in tensors if k.startswith("gate.") and k.split(".")[1].isdigit()
    )
    if not layers or layers != list(range(len(layers))):
        fail(f"{path}: expected tensors gate.0 .. gate.{{L-1}} of shape (E, H)")
    return np.stack([np.asarray(tensors[f"gate.{i}"], np.float32) for i in layers])
