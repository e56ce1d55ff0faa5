"""Timing-side measurements an executor collects (the decision-side counters live in the policy core).

Both executors fill one ``RunStats`` so that metrics, reports and calibration never care which
executor produced a run. The long per-step and per-prefetch series are ``array.array`` (int64 ``q``
or float64 ``d``): executors ``append`` to them as to lists, at a quarter of a list's memory.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field


def _ints() -> array:
    return array("q")  # int64, the dtype pandas gave the former lists of Python ints


def _floats() -> array:
    return array("d")


@dataclass
class RunStats:
    num_layers: int
    # per decode step (one row per step of a batch group). Typed arrays, not lists: a million-token
    # run has a million rows, 8 bytes a value here against ~32 for a list's pointer and object.
    tok_group: array = field(default_factory=_ints)
    tok_step: array = field(default_factory=_ints)
    tok_batch: array = field(default_factory=_ints)
    tok_latency_ms: array = field(default_factory=_floats)
    tok_compute_ms: array = field(default_factory=_floats)
    tok_stall_ms: array = field(default_factory=_floats)
    tok_hits: array = field(default_factory=_ints)
    tok_late: array = field(default_factory=_ints)
    tok_misses: array = field(default_factory=_ints)
    tok_bytes_h2d: array = field(default_factory=_ints)
    tok_evictions: array = field(default_factory=_ints)  # GPU evictions during the step
    tok_refetches: array = field(default_factory=_ints)  # loads of experts evicted shortly before
    # per MoE layer
    layer_late: list[int] = field(default_factory=list)
    layer_stall_ms: list[float] = field(default_factory=list)
    layer_bytes_demand: list[int] = field(default_factory=list)
    layer_bytes_prefetch: list[int] = field(default_factory=list)
    layer_bytes_wasted: list[int] = field(default_factory=list)
    layer_prefetch_wasted: list[int] = field(default_factory=list)
    layer_prefetch_cancelled: list[int] = field(default_factory=list)
    # prefetch timing over useful prefetches
    prefetch_late: int = 0
    # issue -> demand and arrival -> demand of every useful prefetch (compact: one float each)
    lead_samples: array = field(default_factory=_floats)
    slack_samples: array = field(default_factory=_floats)
    bytes_ssd_read: int = 0
    makespan_ms: float = 0.0
    ttft_ms: list[float] = field(default_factory=list)  # per group, when the prompt pass is simulated
    prefill_stall_ms: float = 0.0
    timeline: list[dict] | None = None  # executor events, when recording was asked for (metrics/timeline.py)

    def __post_init__(self) -> None:
        L = self.num_layers
        for name in (
            "layer_late",
            "layer_bytes_demand",
            "layer_bytes_prefetch",
            "layer_bytes_wasted",
            "layer_prefetch_wasted",
            "layer_prefetch_cancelled",
        ):
            if not getattr(self, name):
                setattr(self, name, [0] * L)
        if not self.layer_stall_ms:
            self.layer_stall_ms = [0.0] * L

    def unused_prefetch(self, layer: int, nbytes: int, cancelled: bool) -> int:
        """Count a prefetch dropped undemanded: cancelled (its copy never ran) or wasted (it did).
        Returns the bytes that did not move (to take off the transfer totals)."""
        if cancelled:
            self.layer_prefetch_cancelled[layer] += 1
            self.layer_bytes_prefetch[layer] -= nbytes
            return nbytes
        self.layer_prefetch_wasted[layer] += 1
        self.layer_bytes_wasted[layer] += nbytes
        return 0
