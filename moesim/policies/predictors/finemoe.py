"""FineMoE-style trajectory matching over gate probabilities.

A store of expert maps is sampled from the training trace: for a token, its (L, E) map holds each
layer's router weights of the selected experts (1/k each where the trace has no weights), and it
keeps a link to the same request's next token's map. While serving, the current token's trajectory
(the maps of the layers observed so far) is matched by cosine similarity against the stored maps'
same-layer prefixes; the best ``neighbours`` (similarity-weighted) give the target layer's scores,
read from their own map when the target is later in this token and from their next token's map when
the target crosses into the next token. FineMoE's semantic (prompt embedding) matching is not
modelled: traces carry no prompt embeddings.

Router weights of the current token come from the replayed trace (``PredictorSetup.trace``) for
the rows and layers already observed; without them each observed expert weighs 1/k.
"""

from __future__ import annotations

import numpy as np

from moesim.policies.params import Param, ParamSchema
from moesim.policies.predictors._common import (
    COMMON_PARAMS,
    PlannedPredictor,
    as_int,
    check_fit_trace,
    memo_fit,
    params_key,
    trace_fingerprint,
)
from moesim.policies.predictors.base import Prediction, PredictorSetup
from moesim.policies.registries import PREDICTORS
from moesim.traces.replay import Group
from moesim.traces.trace import Trace


def expert_maps(trace: Trace, store: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(M, L, E) maps of ``store`` tokens sampled without replacement (seeded), and (M, L, E) maps of
    each one's next token in its request (its own map for a request's last token)."""
    L, E, k = trace.meta.num_layers, trace.meta.num_experts, trace.meta.top_k
    N = trace.num_tokens
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(N, min(store, N), replace=False)) if N else np.zeros(0, np.int64)
    ends = np.asarray(trace.seq_offsets[1:])
    last = np.isin(pick, ends - 1)
    nxt = np.where(last, pick, pick + 1)

    def maps(rows: np.ndarray) -> np.ndarray:
        ex = np.asarray(trace.experts[rows], dtype=np.int64)  # (M, L, k)
        if trace.weights is not None:
            w = np.asarray(trace.weights[rows], dtype=np.float32)
        else:
            w = np.full(ex.shape, 1.0 / k, np.float32)
        out = np.zeros((len(rows), L, E), np.float32)
        np.put_along_axis(out, ex, w, axis=2)
        return out

    return maps(pick), maps(nxt)


def top_n_stable(values: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n largest values, ties by lower index: ``argsort(-values, stable)[:n]`` in
    O(len) rather than O(len log len) (this runs at every layer-step)."""
    if n >= len(values):
        return np.argsort(-values, kind="stable")
    kth = np.partition(values, len(values) - n)[len(values) - n]  # the n-th largest value
    above = np.flatnonzero(values > kth)
    equal = np.flatnonzero(values == kth)[: n - len(above)]
    cand = np.concatenate([above, equal])
    return cand[np.argsort(-values[cand], kind="stable")]


@PREDICTORS.register
class FineMoE(PlannedPredictor):
    name = "finemoe"
    observes = frozenset(
        {"routing and router weights of the current token's observed layers", "training trace (expert maps)"}
    )
    params = COMMON_PARAMS | ParamSchema(store=Param(4096, "int", 1), neighbours=Param(8, "int", 1))

    def __init__(self, setup: PredictorSetup):
        super().__init__(setup)
        n = self.name
        fit = check_fit_trace(setup, n)
        size = as_int(n, "store", setup.params.get("store", 4096), 1)
        self.nn = as_int(n, "neighbours", setup.params.get("neighbours", 8), 1)
        key = (n, trace_fingerprint(fit), params_key({"store": size}), setup.seed)
        self.maps, self.next_maps = memo_fit(key, lambda: expert_maps(fit, size, setup.seed))
        # Squared norm of each stored map's layer prefix 0..l: the denominators of prefix cosines.
        self.prefix_sq = np.cumsum((self.maps**2).sum(2), axis=1)  # (M, L)
        # (L, E, M) copy: an observed expert's column over the whole store is one contiguous row.
        self.by_expert = np.ascontiguousarray(self.maps.transpose(1, 2, 0))
        self.nn = max(1, min(self.nn, len(self.maps)))
        self.trace = setup.trace

    def start(self, group: Group) -> list[Prediction]:
        self._dots = np.zeros(len(self.maps), np.float64)
        self._cur_sq = 0.0
        self._best_at = -2
        return super().start(group)

    def _weights(self, s: int, keys: list[int]) -> np.ndarray:
        tr = self.trace
        k = self.setup.top_k
        if tr is None or tr.weights is None or len(self.group.seqs) != 1:
            return np.full(len(keys), 1.0 / k, np.float32)
        t, layer = divmod(s, self.L)
        row = int(tr.seq_offsets[self.group.seqs[0]]) + t
        return np.asarray(tr.weights[row, layer], dtype=np.float32)[: len(keys)]

    def observe(self, s: int, keys: list[int]) -> None:
        super().observe(s, keys)
        layer = s % self.L
        if layer == 0:  # a new token: its trajectory starts afresh
            self._dots[:] = 0.0
            self._cur_sq = 0.0
        w = self._weights(s, keys)
        ids = self.local_ids(s)
        self._dots += w @ self.by_expert[layer, ids]
        self._cur_sq += float((w**2).sum())

    def _neighbours(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        if self._best_at != s:
            layer = s % self.L
            denom = np.sqrt(self.prefix_sq[:, layer] * max(self._cur_sq, 1e-12)).clip(min=1e-12)
            sim = self._dots / denom
            order = top_n_stable(sim, self.nn)
            w = sim[order].clip(min=0)
            w = w / w.sum() if w.sum() > 0 else np.full(len(order), 1.0 / len(order))
            self._best = (order, w)
            self._best_at = s
        return self._best

    def scores(self, s: int, t: int) -> np.ndarray | None:
        if s < 0:
            return None
        order, w = self._neighbours(s)
        same_token = t // self.L == s // self.L
        maps = self.maps if same_token else self.next_maps
        return (maps[order, t % self.L] * w[:, None]).sum(0)
