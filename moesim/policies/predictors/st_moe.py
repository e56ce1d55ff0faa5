"""ST-MoE (seed 003): a history table of spatial (cross-layer) and temporal (cross-token) expert
co-activation, updated online as routing is observed.

Spatial table ``S[d, l, e, f]``: expert f used d layer-steps after expert e at layer l (same request).
Temporal table ``T[l, e, f]``: expert f used at layer l right after expert e at layer l for the
previous token. Both are warm-started from ``predictor.fit_trace`` (``warm_start``) and then count
every observed layer-step of the replay, across requests: the table keeps learning while serving.
"""

from __future__ import annotations

import numpy as np

from moesim.policies.params import Param, ParamSchema
from moesim.policies.predictors._common import (
    COMMON_PARAMS,
    PlannedPredictor,
    as_bool,
    as_float,
    check_fit_trace,
    memo_fit,
    params_key,
    trace_fingerprint,
)
from moesim.policies.predictors.base import Prediction, PredictorSetup
from moesim.policies.predictors.markov import transition_counts
from moesim.policies.registries import PREDICTORS
from moesim.traces.replay import Group


@PREDICTORS.register
class STMoE(PlannedPredictor):
    """Score = ``spatial_weight`` x P_spatial(f | experts at step s) + (1 - spatial_weight) x
    P_temporal(f | the previous token's experts at the target layer), each a normalised table row
    mean; the temporal term is used once that previous-token step has been observed."""

    name = "st-moe"
    observes = frozenset({"routing of the current layer-step", "previous token's routing", "training trace"})
    params = COMMON_PARAMS | ParamSchema(
        spatial_weight=Param(0.5, "float", 0.0, 1.0),
        warm_start=Param(True, "bool"),
        online=Param(True, "bool"),
    )

    def __init__(self, setup: PredictorSetup):
        super().__init__(setup)
        n = self.name
        self.alpha = as_float(n, "spatial_weight", setup.params.get("spatial_weight", 0.5), 0.0, 1.0)
        self.online = as_bool(n, "online", setup.params.get("online", True))
        warm = as_bool(n, "warm_start", setup.params.get("warm_start", True))
        L, E, D = self.L, self.E, self.max_horizon
        self.S = np.zeros((D, L, E, E), np.float32)
        self.T = np.zeros((L, E, E), np.float32)
        if warm:
            fit = check_fit_trace(setup, n)
            # d = L from layer l lands on layer l of the next token: exactly the temporal table.
            dists = (*range(1, D + 1), L)
            key = ("markov", trace_fingerprint(fit), params_key({"d": dists}))
            counts, _ = memo_fit(key, lambda: transition_counts(fit, dists))
            self.S += counts[:D].astype(np.float32)
            self.T += counts[D].astype(np.float32)

    def start(self, group: Group) -> list[Prediction]:
        self._ids: list[np.ndarray] = []
        return super().start(group)

    def observe(self, s: int, keys: list[int]) -> None:
        super().observe(s, keys)
        ids = self.local_ids(s)
        self._ids.append(ids)
        if not self.online or not len(ids):
            return
        L = self.L
        for d in range(1, self.max_horizon + 1):
            if s - d >= 0:
                src = self._ids[s - d]
                if len(src):
                    self.S[d - 1, (s - d) % L][np.ix_(src, ids)] += 1.0
        if s - L >= 0:
            src = self._ids[s - L]
            if len(src):
                self.T[s % L][np.ix_(src, ids)] += 1.0

    @staticmethod
    def _row_mean(table: np.ndarray, ids: np.ndarray) -> np.ndarray | None:
        if not len(ids):
            return None
        rows = table[ids]
        tot = rows.sum(1, keepdims=True)
        rows = np.divide(rows, tot, out=np.zeros_like(rows), where=tot > 0)
        return rows.mean(0)

    def scores(self, s: int, t: int) -> np.ndarray | None:
        if s < 0:
            return None
        L = self.L
        sp = self._row_mean(self.S[t - s - 1, s % L], self._ids[s])
        u = t - L
        tm = self._row_mean(self.T[t % L], self._ids[u]) if 0 <= u <= s else None
        if sp is None and tm is None:
            return None
        if tm is None:
            return sp
        if sp is None:
            return tm
        return self.alpha * sp + (1.0 - self.alpha) * tm
