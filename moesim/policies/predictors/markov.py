"""Cross-layer transition (Markov) table: P(expert f at step s+d | expert e at step s), counted on a
training trace for every source layer and distance d (layer-steps, crossing token boundaries)."""

from __future__ import annotations

import numpy as np

from moesim.policies.params import Param, ParamSchema
from moesim.policies.predictors._common import (
    COMMON_PARAMS,
    PlannedPredictor,
    as_float,
    check_fit_trace,
    khot,
    memo_fit,
    params_key,
    trace_fingerprint,
)
from moesim.policies.predictors.base import PredictorSetup
from moesim.policies.registries import PREDICTORS
from moesim.traces.trace import Trace


def transition_counts(trace: Trace, distances: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """counts[i, l, e, f]: times expert e at a layer-l step was followed, ``distances[i]`` layer-steps
    later in the same sequence, by expert f; and the (L, E) popularity. One sequence at a time."""
    L, E = trace.meta.num_layers, trace.meta.num_experts
    counts = np.zeros((len(distances), L, E, E), np.float64)
    pop = np.zeros((L, E), np.float64)
    for q in range(trace.num_sequences):
        x = khot(np.asarray(trace.sequence(q)), E).reshape(-1, E)  # (T*L, E), layer-step order
        n = len(x)
        for layer in range(L):
            pop[layer] += x[layer::L].sum(0)
        for i, d in enumerate(distances):
            for layer in range(L):
                src = x[layer : max(0, n - d) : L]  # a negative stop would count from the end
                if len(src):
                    counts[i, layer] += src.T @ x[layer + d :: L][: len(src)]
    return counts, pop


@PREDICTORS.register
class Markov(PlannedPredictor):
    """Score of expert f for target ``t`` fired after step ``s``: the mean over the experts e observed
    at ``s`` of P(f at s + d | e at s), d = t - s, plus ``prior`` times f's layer popularity (which
    breaks ties and covers unseen sources). Static: fitted once on ``predictor.fit_trace``."""

    name = "markov"
    observes = frozenset({"routing of the current layer-step", "training trace"})
    params = COMMON_PARAMS | ParamSchema(prior=Param(0.01, "float", 0.0))

    def __init__(self, setup: PredictorSetup):
        super().__init__(setup)
        fit = check_fit_trace(setup, self.name)
        self.prior = as_float(self.name, "prior", setup.params.get("prior", 0.01), 0.0)
        dists = tuple(range(1, self.max_horizon + 1))
        key = (self.name, trace_fingerprint(fit), params_key({"d": dists}))
        counts, pop = memo_fit(key, lambda: transition_counts(fit, dists))
        # Row-normalise once: P[d, l, e, :] = P(f | e); unseen sources give zero rows.
        rows = counts.sum(-1, keepdims=True)
        self.P = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0).astype(np.float32)
        self.pop = (pop / pop.sum(1, keepdims=True).clip(min=1)).astype(np.float32)

    def scores(self, s: int, t: int) -> np.ndarray | None:
        layer_t = t % self.L
        if s < 0:
            return self.prior * self.pop[layer_t]
        ids = self.local_ids(s)
        p = self.P[t - s - 1, s % self.L][ids].mean(0) if len(ids) else 0.0
        return p + self.prior * self.pop[layer_t]
