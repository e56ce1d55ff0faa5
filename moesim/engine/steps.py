"""What both executors compute the same way around a layer-step: its shape, the prefetch-hit
samples, and the per-token rows (the tokens table)."""

from __future__ import annotations

from dataclasses import dataclass

from moesim.metrics.stats import RunStats
from moesim.policies.core import PolicyCore
from moesim.traces.replay import Group


def step_shape(group: Group, s: int, num_layers: int, prompt_tokens: int) -> tuple[int, int, int]:
    """(decode step, or -1 in the prompt pass; batch; context) of layer-step ``s`` of a static group."""
    ps = group.prefill_steps
    if s < ps:
        # the prompt pass: every prompt token at once, attending to half the prompt on average
        batch = group.prompt_tokens
        return -1, batch, max(1, batch // 2)
    t = (s - ps) // num_layers
    return t, group.active[t], prompt_tokens + t


def prefetched_hit(stats: RunStats, t_gate: float, issued: float, late: bool) -> None:
    """A hit on a prefetched expert: its lead time (issue to gate), and whether it arrived late."""
    stats.lead_samples.append(t_gate - issued)
    if late:
        stats.prefetch_late += 1


@dataclass(slots=True)
class TokenTally:
    """One token's (or prompt pass's) counts, summed over its layer-steps. The churn columns are
    differences of running totals from when the tally started (group-start work counts to the
    group's first step)."""

    bytes0: int  # the executor's host-to-GPU bytes when the tally started
    evictions0: int
    refetches0: int
    stall: float = 0.0
    compute: float = 0.0
    hits: int = 0  # arrived by the gate
    late: int = 0  # present but still copying at the gate
    misses: int = 0

    @classmethod
    def start(cls, h2d_bytes: int, core: PolicyCore) -> TokenTally:
        return cls(h2d_bytes, core.evictions, core.refetches)

    def add_step(self, accesses: int, present: int, late: int, stall: float) -> None:
        self.stall += stall
        self.hits += present - late
        self.late += late
        self.misses += accesses - present

    def churn(self, h2d_bytes: int, core: PolicyCore) -> tuple[int, int, int]:
        """(bytes copied to the GPU, evictions, refetches) since the tally started."""
        return h2d_bytes - self.bytes0, core.evictions - self.evictions0, core.refetches - self.refetches0


def append_token_row(
    stats: RunStats,
    group: int,
    step: int,
    batch: int,
    latency_ms: float,
    tally: TokenTally,
    churn: tuple[int, int, int],
) -> None:
    """One row of the tokens table. Compute is everything that is not waiting for weights."""
    stats.tok_group.append(group)
    stats.tok_step.append(step)
    stats.tok_batch.append(batch)
    stats.tok_latency_ms.append(latency_ms)
    stats.tok_compute_ms.append(tally.compute)
    stats.tok_stall_ms.append(tally.stall)
    stats.tok_hits.append(tally.hits)
    stats.tok_late.append(tally.late)
    stats.tok_misses.append(tally.misses)
    stats.tok_bytes_h2d.append(churn[0])
    stats.tok_evictions.append(churn[1])
    stats.tok_refetches.append(churn[2])
