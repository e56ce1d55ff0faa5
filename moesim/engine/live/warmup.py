"""The prompt-pass shapes a live run will meet, so the executor can warm them before the first token.

A prompt pass runs norm, causal attention, gate and shared experts over the group's P prompt tokens
and each routed expert over the n prompt tokens sent to it. Every distinct P and n is a new kernel
shape: on CUDA its first call pays kernel selection (cuBLAS heuristics, SDPA backend choice) and
allocator growth, which would otherwise be charged to the group's TTFT. The shapes come from the
trace itself (the same grouping and counts as ``moesim.traces.replay.iter_groups``), so a run warms
exactly the shapes it uses, up to ``MAX_WARM_SHAPES`` of each kind.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from moesim.traces.replay import group_indices, prefill_steps
from moesim.traces.trace import Trace

# More distinct shapes than this (a long trace at batch 1 with varied prompt lengths) would make the
# warm-up itself slow; beyond it the most frequent shapes are warmed (ties: the longer first), and
# the longest prompt always. The rest pay their first-call cost in the run.
MAX_WARM_SHAPES = 256


@dataclass(frozen=True)
class PromptShapes:
    """Distinct prompt-pass token counts: ``lengths`` per group (P), ``expert_tokens`` per routed
    expert (n); both sorted descending, the longest first."""

    lengths: tuple[int, ...] = ()
    expert_tokens: tuple[int, ...] = ()


def _pick(counts: Counter[int], bound: int) -> tuple[int, ...]:
    if not counts:
        return ()
    chosen = sorted(counts, key=lambda v: (-counts[v], -v))[:bound]
    longest = max(counts)
    if longest not in chosen:
        chosen[-1] = longest
    return tuple(sorted(chosen, reverse=True))


def prompt_shapes(trace: Trace, batch: int, bound: int = MAX_WARM_SHAPES) -> PromptShapes:
    """The shapes of every group's prompt pass when ``trace`` is replayed in static batches of
    ``batch`` with prefill (empty when the trace has no prompt routing)."""
    if trace.prefill_offsets is None or trace.prefill_experts is None:
        return PromptShapes()
    lengths: Counter[int] = Counter()
    tokens: Counter[int] = Counter()
    for seqs in group_indices(trace.num_sequences, batch):
        _, counts, prompt = prefill_steps(trace, tuple(seqs))
        if prompt == 0:  # with_prefill: no prompt pass for this group
            continue
        lengths[prompt] += 1
        for layer_counts in counts:
            tokens.update(layer_counts)
    return PromptShapes(_pick(lengths, bound), _pick(tokens, bound))
