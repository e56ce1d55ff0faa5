from __future__ import annotations

import numpy as np

from moesim.errors import fail
from moesim.policies.predictors._common import as_bool
from moesim.policies.predictors.base import Prediction, Predictor, PredictorSetup
from moesim.policies.registries import PREDICTORS
from moesim.traces.replay import Group, expert_counts


@PREDICTORS.register
class Popularity(Predictor):
    """Static popularity (Fiddler / KTransformers placement): the most used experts of each layer,
    counted on a training trace (``predictor.fit_trace``; defaults to the replayed trace itself,
    which is optimistic and recorded as such in the run's provenance).

    The plan is per sequence: every sequence of a batch gets the same ranking, so the batch's plan is
    one sequence's top-k (``params.per_sequence``, default true). Handing the planner the whole
    ranking at batch B let it take k x B experts per layer-step, which at E = k x B is every expert of
    the next layer: the prefetches then flush the cache each token (0 hits on OLMoE at batch 8)."""

    name = "popularity"
    observes = frozenset({"training trace"})
    params = {"per_sequence": True}

    def __init__(self, setup: PredictorSetup):
        super().__init__(setup)
        tr = setup.fit_trace
        if tr is None:
            fail("predictor.fit_trace: popularity needs a training trace")
        if tr.meta.num_layers != self.L or tr.meta.num_experts != self.E:
            fail(
                f"predictor.fit_trace: training trace has L={tr.meta.num_layers}, E={tr.meta.num_experts}; "
                f"the run needs L={self.L}, E={self.E}"
            )
        per_seq = as_bool(self.name, "per_sequence", setup.params.get("per_sequence", True))
        # At batch 1 the whole ranking goes to the planner, which cuts it at top_n (+ overprovision).
        keep = setup.top_k if per_seq and setup.batch > 1 else self.E
        counts = expert_counts(tr)
        # Stable ranking: ties by lower expert id, so the prediction is deterministic.
        order = np.argsort(-counts, axis=1, kind="stable")[:, :keep]
        total = counts.sum(axis=1, keepdims=True).clip(min=1)
        self._ranked = [(order[layer] + layer * self.E).tolist() for layer in range(self.L)]
        self._scores = [
            (np.take_along_axis(counts, order, 1)[layer] / total[layer]).tolist() for layer in range(self.L)
        ]

    def start(self, group: Group) -> list[Prediction]:
        self._n = group.horizon
        return [(t, self._ranked[t % self.L], self._scores[t % self.L]) for t in range(min(self.h, self._n))]

    def predict(self, s: int) -> list[Prediction]:
        t = s + self.h
        if t < self._n:
            layer = t % self.L
            return [(t, self._ranked[layer], self._scores[layer])]
        return []
