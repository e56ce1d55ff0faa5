"""In-time accuracy: would a correct prediction's transfer have finished before its demand?

This uses a simple per-layer compute-time budget from the latency profile, not the simulator's
event timing (which also has cache hits, queueing behind other copies and stalls that shift later
layers). At batch 1 and context ``prompt + decode step``:

- a predictor firing after the gate of step s has, until the gate of target t: the rest of step s
  (shared experts + k routed experts), every full layer-step strictly between them
  (norm + attention + gate + shared + k experts), and the target's norm + attention + gate;
- a pre-attention predictor firing at step t has t's attention + gate (it fires after the norm).

The predictor's own latency is subtracted first. Its prefetch set is then copied one expert after
another over an otherwise idle link (cold cache: nothing predicted is assumed resident), each copy
taking ``h2d_pinned(expert bytes)``; the expert at position j of the set arrives at
``latency + (j + 1) x copy time`` and counts as in time if that is within the budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moesim.hardware.costs import CostModel


@dataclass
class TimingBudget:
    costs: CostModel
    L: int
    k: int
    prompt_tokens: int
    predictor_ms: float = 0.0

    @property
    def copy_ms(self) -> float:
        return float(self.costs.h2d_ms)

    def _layer_parts(self, context: int) -> tuple[float, float]:
        """(norm + attention + gate, shared + k routed experts) of one layer-step at batch 1."""
        c = self.costs
        front = c.pre_attention_ms(1) + c.attention_ms(1, context) + c.gate_ms(1)
        back = c.shared_ms(1) + self.k * c.expert_ms(1)
        return front, back

    def budgets(self, src: np.ndarray, tgt: np.ndarray, pre_attention: bool) -> np.ndarray:
        """ms from each firing (after src's gate, or before tgt's attention) to tgt's gate."""
        L = self.L
        tokens = int(max(int(tgt.max()) if len(tgt) else 0, int(src.max()) if len(src) else 0) // L + 1)
        front = np.empty(tokens)
        back = np.empty(tokens)
        for t in range(tokens):
            front[t], back[t] = self._layer_parts(self.prompt_tokens + t)
        if pre_attention:
            c = self.costs
            attn_gate = np.array(
                [c.attention_ms(1, self.prompt_tokens + t) + c.gate_ms(1) for t in range(tokens)]
            )
            out = attn_gate[tgt // L]
        else:
            # prefix sums over layer-steps: end_of_gate(u) = sum_{v<u} full(v) + front(u)
            steps = tokens * L
            full = np.repeat(front + back, L)[:steps]
            cum = np.concatenate([[0.0], np.cumsum(full)])
            fr = np.repeat(front, L)[:steps]
            gate_end = cum[:-1] + fr
            out = gate_end[tgt] - gate_end[src]
        return out - self.predictor_ms

    def arrival_ok(self, budgets: np.ndarray, width: int) -> np.ndarray:
        """(n, width) whether the expert at prefetch position j arrives within each budget."""
        arrive = (np.arange(width) + 1) * self.copy_ms
        return arrive[None, :] <= budgets[:, None]
