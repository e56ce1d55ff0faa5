from __future__ import annotations

from moesim.policies.predictors.base import Predictor
from moesim.policies.registries import PREDICTORS


@PREDICTORS.register
class NoPrediction(Predictor):
    """On-demand loading only: never predicts, so every non-resident expert is fetched at its gate."""

    name = "none"
    observes = frozenset()
    predicts = False
