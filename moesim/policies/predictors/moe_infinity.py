"""MoE-Infinity's request-level expert activation matrix (EAM) nearest neighbour.

Every training request leaves an EAM: an (L, E) matrix of how often each expert was used over the
request's decode tokens, each layer's row normalised to activation ratios. While serving, the
current request's own EAM (everything observed so far, the current token's finished layers
included) is matched by cosine similarity against the stored ones; the target layer's experts are
ranked by the best matches' ratios (similarity-weighted over ``neighbours``), and the scores decay
with the distance to the target as in MoE-Infinity's prefetch priority: ``ratio x (1 - (d-1)/L)``.
Before anything is observed, the mean EAM (plain popularity) is used.
"""

from __future__ import annotations

import numpy as np

from moesim.policies.params import Param, ParamSchema
from moesim.policies.predictors._common import (
    COMMON_PARAMS,
    PlannedPredictor,
    as_int,
    check_fit_trace,
    khot,
    memo_fit,
    params_key,
    trace_fingerprint,
)
from moesim.policies.predictors.base import Prediction, PredictorSetup
from moesim.policies.registries import PREDICTORS
from moesim.traces.replay import Group
from moesim.traces.trace import Trace


def request_eams(trace: Trace) -> np.ndarray:
    """(S, L, E) per-request activation ratios (each layer's row sums to 1 over the request)."""
    L, E = trace.meta.num_layers, trace.meta.num_experts
    out = np.zeros((trace.num_sequences, L, E), np.float32)
    for q in range(trace.num_sequences):
        c = khot(np.asarray(trace.sequence(q)), E).sum(0)  # (L, E)
        out[q] = c / c.sum(1, keepdims=True).clip(min=1)
    return out


@PREDICTORS.register
class MoEInfinity(PlannedPredictor):
    name = "moe-infinity"
    observes = frozenset({"routing of the current request so far", "training trace (request EAMs)"})
    params = COMMON_PARAMS | ParamSchema(neighbours=Param(1, "int", 1))

    def __init__(self, setup: PredictorSetup):
        super().__init__(setup)
        fit = check_fit_trace(setup, self.name)
        self.nn = as_int(self.name, "neighbours", setup.params.get("neighbours", 1), 1)
        eams = memo_fit((self.name, trace_fingerprint(fit), params_key({})), lambda: request_eams(fit))
        if not len(eams):
            eams = np.zeros((1, self.L, self.E), np.float32)
        self.store = eams.reshape(len(eams), -1)  # (S, L*E)
        self.store_norm = np.linalg.norm(self.store, axis=1).clip(min=1e-12)
        self.mean = eams.mean(0)  # (L, E)
        self.nn = min(self.nn, len(eams))

    def start(self, group: Group) -> list[Prediction]:
        self._cur = np.zeros(self.L * self.E, np.float32)  # the current request's activation counts
        self._dots = np.zeros(len(self.store), np.float64)  # store @ _cur, kept incrementally
        self._cur_sq = 0.0
        self._best_at = -2
        return super().start(group)

    def observe(self, s: int, keys: list[int]) -> None:
        super().observe(s, keys)
        idx = np.asarray(keys, np.int64)
        # Adding 1 at idx: ||c + 1_idx||^2 = ||c||^2 + 2 sum c[idx] + |idx|, and dots += store[:, idx]
        self._cur_sq += 2.0 * float(self._cur[idx].sum()) + len(idx)
        self._cur[idx] += 1.0
        self._dots += self.store[:, idx].sum(1)

    def _neighbours(self, s: int) -> np.ndarray:
        if self._best_at != s:
            sim = self._dots / (self.store_norm * max(np.sqrt(self._cur_sq), 1e-12))
            order = np.argsort(-sim, kind="stable")[: self.nn]
            w = sim[order].clip(min=0)
            w = w / w.sum() if w.sum() > 0 else np.full(len(order), 1.0 / len(order))
            self._best = (self.store[order] * w[:, None]).sum(0).reshape(self.L, self.E)
            self._best_at = s
        return self._best

    def scores(self, s: int, t: int) -> np.ndarray | None:
        layer_t = t % self.L
        decay = max(0.0, 1.0 - (t - s - 1) / self.L)
        if s < 0:
            return self.mean[layer_t] * decay
        # A tiny popularity term breaks ties among experts the neighbours never used.
        return (self._neighbours(s)[layer_t] + 1e-3 * self.mean[layer_t]) * decay
