"""Continuous batching: requests arrive over time and join a running batch of at most B.

The batch is re-formed at every decode-step boundary: arrived requests take free slots (their
prompt pass runs first when ``prefill`` is on), finished ones leave. Steps are appended to one
growing ``Group`` (``dynamic=True``), so the policy core and the predictors see them in order as
usual; which requests share a step depends on simulated time, so, unlike static batching, the
decision sequence is not timing-independent (the live executor replays static batches only).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from moesim.traces.replay import Group, decode_step, prefill_steps
from moesim.traces.trace import Trace


@dataclass
class Request:
    seq: int  # trace sequence
    arrival: float  # ms
    row: int  # next decode token row in the trace
    end_row: int
    prompt: int  # prompt tokens (context before decoding)
    admitted: float = -1.0
    first_token: float = -1.0
    finish: float = -1.0
    generated: int = 0


def poisson_arrivals(n: int, rate_per_s: float, seed: int) -> list[float]:
    """Arrival times (ms) of ``n`` requests of a Poisson process, the first at time 0."""
    gaps = np.random.default_rng(seed).exponential(1000.0 / rate_per_s, size=n)
    gaps[0] = 0.0
    return np.cumsum(gaps).tolist()


class ContinuousBatcher:
    def __init__(self, trace: Trace, batch: int, arrivals_ms: list[float], prefill: bool, prompt_tokens: int):
        self.trace = trace
        self.batch = batch
        self.prefill = prefill and trace.prefill_offsets is not None
        L = trace.meta.num_layers
        order = sorted(range(trace.num_sequences), key=lambda q: (arrivals_ms[q], q))
        self.requests: list[Request] = []
        for q in order:
            prompt = prompt_tokens
            if self.prefill:
                assert trace.prefill_offsets is not None  # self.prefill checked it
                prompt = int(trace.prefill_offsets[q + 1] - trace.prefill_offsets[q])
            off = trace.seq_offsets
            self.requests.append(Request(q, float(arrivals_ms[q]), int(off[q]), int(off[q + 1]), prompt))
        self.pending = deque(r for r in self.requests if r.end_row > r.row)
        self.active: list[Request] = []
        self.group = Group(0, (), [], [], [], L, dynamic=True)
        self.blocks: list[tuple[int, int, int]] = []  # per token-block: (batch, context, decode step or -1)
        self._block_reqs: list[tuple[bool, list[Request]]] = []
        self._decode_steps = 0

    def extend(self, now: float) -> float | None:
        """Append the next token-block (L layer-steps) if one can start at ``now``. Returns ``now`` if
        one was appended, the next arrival time if the batch is empty until then, None when done."""
        joined: list[Request] = []
        while self.pending and len(self.active) < self.batch and self.pending[0].arrival <= now:
            r = self.pending.popleft()
            r.admitted = now
            self.active.append(r)
            joined.append(r)
        g = self.group
        assert g.counts is not None  # a list since __init__
        if joined and self.prefill:
            steps, counts, tokens = prefill_steps(self.trace, tuple(r.seq for r in joined))
            g.steps.extend(steps)
            g.counts.extend(counts)
            g.seqs = g.seqs + tuple(r.seq for r in joined)
            self.blocks.append((tokens, max(1, tokens // 2), -1))
            self._block_reqs.append((True, joined))
            return now
        if joined:
            g.seqs = g.seqs + tuple(r.seq for r in joined)
        if self.active:
            steps, counts = decode_step(self.trace, [r.row for r in self.active])
            g.steps.extend(steps)
            g.counts.extend(counts)
            g.active.append(len(self.active))
            context = max(r.prompt + r.generated for r in self.active)
            self.blocks.append((len(self.active), context, self._decode_steps))
            self._block_reqs.append((False, list(self.active)))
            self._decode_steps += 1
            return now
        if self.pending:
            return self.pending[0].arrival
        return None

    def block_done(self, index: int, now: float) -> None:
        is_prefill, reqs = self._block_reqs[index]
        for r in reqs:
            if r.first_token < 0:
                r.first_token = now  # the prompt pass, or without one the first decode step, emits it
            if is_prefill:
                continue
            r.row += 1
            r.generated += 1
            if r.row >= r.end_row:
                r.finish = now
                self.active.remove(r)
