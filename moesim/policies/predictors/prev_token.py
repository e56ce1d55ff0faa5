from __future__ import annotations

from moesim.policies.predictors.base import Prediction, Predictor
from moesim.policies.registries import PREDICTORS
from moesim.traces.replay import Group


@PREDICTORS.register
class PreviousToken(Predictor):
    """Temporal reuse: predict that a layer will use the experts it used for the previous token.

    Firing after step ``s``'s gate, the target ``s + h`` is layer ``(s + h) % L`` of a later token;
    its previous-token step ``s + h - L`` must already be observed, so ``h`` is at most L.
    """

    name = "prev-token"
    max_horizon_tokens = 1

    def start(self, group: Group) -> list[Prediction]:
        self._seen: list[list[int]] = []
        return []

    def observe(self, s: int, keys: list[int]) -> None:
        self._seen.append(keys)

    def predict(self, s: int) -> list[Prediction]:
        src = s + self.h - self.L
        if 0 <= src <= s:
            return [(s + self.h, self._seen[src], None)]
        return []
