"""The predictor interface.

A predictor declares what it observes and when it fires (docs/design.md, "Predictors"). The policy core
calls, in logical order and never with a clock:

- ``start(group)`` at request start; may return predictions for the first layer-steps;
- ``observe(s, keys)`` after layer-step ``s``'s gate (every predictor sees the routing it is allowed
  to; ``observes`` documents which inputs it actually uses);
- ``predict(s)`` when it fires at step ``s``: after the gate (``fires = "after_gate"``) or before
  attention (``fires = "pre_attention"``, before ``observe(s)``).

A prediction is a tuple ``(target_step, keys, scores)``: ``keys`` ranked most likely first
(``layer * E + id``, all of the target step's layer), ``scores`` the matching scores or None. The
planner cuts the ranked list to top-n (+ over-provisioning) and turns it into transfers.
Predictors that read the trace's future set ``lookahead = True`` (oracle); every other predictor must
give the same predictions when the future is scrambled (checked by the contract tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from moesim.traces.replay import Group
from moesim.traces.trace import Trace

Prediction = tuple[int, list[int], list[float] | None]

AFTER_GATE = "after_gate"
PRE_ATTENTION = "pre_attention"


@dataclass
class PredictorSetup:
    num_layers: int
    num_experts: int
    top_k: int
    batch: int
    horizon: int
    seed: int
    fit_trace: Trace | None = None  # training data for fitted predictors
    params: dict = field(default_factory=dict)
    # The replayed trace, for predictors that read its side data (hidden states, router inputs) of the
    # tokens they are allowed to see; a Group's ``seqs`` index its sequences. None: routing only.
    trace: Trace | None = None


class Predictor:
    name: ClassVar[str]
    fires: ClassVar[str] = AFTER_GATE
    observes: ClassVar[frozenset[str]] = frozenset({"routing"})
    lookahead: ClassVar[bool] = False
    # False: never predicts, so the planner's settings (horizon, top-n...) cannot change a run and
    # the run is its own on-demand baseline (checked by the contract tests).
    predicts: ClassVar[bool] = True
    params: ClassVar[dict[str, object]] = {}  # accepted ``predictor.params`` keys and defaults
    # (a ``moesim.policies.params.ParamSchema`` also declares their types and ranges)
    max_horizon_tokens: ClassVar[int | None] = None  # looks back this many tokens: horizon <= this x L
    # Where the predictor's own computation runs: "cpu" (beside the GPU stream: it only delays its
    # prefetches) or "gpu" (on the compute stream: it also delays the layer).
    runs_on: ClassVar[str] = "cpu"

    def __init__(self, setup: PredictorSetup):
        self.setup = setup
        self.L = setup.num_layers
        self.E = setup.num_experts
        self.h = setup.horizon

    def start(self, group: Group) -> list[Prediction]:
        return []

    def observe(self, s: int, keys: list[int]) -> None:
        pass

    def predict(self, s: int) -> list[Prediction]:
        return []

    def planned(self, n_pred: int, threshold: float | None) -> tuple[np.ndarray, np.ndarray] | None:
        """Right after ``start``, optionally: what ``predict`` will return at each firing of the
        group (the start's first), cut to the first ``n_pred`` keys scoring at least ``threshold``,
        as (keys per firing, the keys). None (the default): the caller asks per step."""
        return None

    def latency_ms(self, batch: int, context: int) -> float:
        """Time one firing takes; its prefetches are issued that much later (0: free)."""
        return 0.0
