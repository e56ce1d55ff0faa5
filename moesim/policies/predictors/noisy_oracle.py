"""An oracle with a chosen per-expert accuracy, to ask "what accuracy do I need for X% of the oracle's
TPOT?" (sweep ``predictor.params.accuracy``).

For every target layer-step, each true expert is kept with probability ``accuracy`` and otherwise
replaced by a wrong expert drawn uniformly from the layer's others; the kept and replacement experts
lead the ranking (in the true rank order of the slots they fill), followed by the remaining experts
in a random order, so over-provisioning recovers dropped experts only at chance. The draws are
seeded by the scenario seed, the request's sequence indices and the target step: a rerun, or a
different cache or horizon, sees the same mistakes for the same target.
"""

from __future__ import annotations

import numpy as np

from moesim.policies.params import Param, ParamSchema
from moesim.policies.predictors._common import COMMON_PARAMS, PlannedPredictor, as_float
from moesim.policies.predictors.base import PredictorSetup
from moesim.policies.registries import PREDICTORS


@PREDICTORS.register
class NoisyOracle(PlannedPredictor):
    name = "noisy-oracle"
    observes = frozenset({"future routing"})
    lookahead = True
    params = COMMON_PARAMS | ParamSchema(accuracy=Param(0.8, "float", 0.0, 1.0))

    def __init__(self, setup: PredictorSetup):
        super().__init__(setup)
        self.acc = as_float(self.name, "accuracy", setup.params.get("accuracy", 0.8), 0.0, 1.0)
        self.seed = setup.seed

    def scores(self, s: int, t: int) -> np.ndarray | None:
        E = self.E
        truth = [k % E for k in self.group.steps[t]]
        rng = np.random.default_rng([self.seed, *self.group.seqs, t])
        keep = rng.random(len(truth)) < self.acc
        wrong = [e for e in rng.permutation(E).tolist() if e not in set(truth)]
        chosen = [e if kp or not wrong else wrong.pop() for e, kp in zip(truth, keep)]
        rest = [e for e in rng.permutation(E).tolist() if e not in set(chosen)]
        sc = np.zeros(E, np.float32)
        n = len(chosen) + len(rest)
        for i, e in enumerate(chosen + rest):
            sc[e] = 1.0 - i / n  # strictly decreasing: the ranking above, as scores in (0, 1]
        return sc
