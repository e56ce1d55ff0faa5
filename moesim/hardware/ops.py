"""The op vocabulary shared by profiles, the engine, the live profiler and the roofline estimator."""

from __future__ import annotations

# Each op and the axes it may depend on, in the order a 2-D table stores them (values[i][j] with
# i along the first axis). A table may declare a subset of these (it does not depend on the rest).
OP_AXES: dict[str, tuple[str, ...]] = {
    "attention": ("batch", "context"),
    "norm": ("tokens",),  # pre-attention norm
    "gate": ("tokens",),  # post-attention norm + router / expert selection
    "post_attention_norm": ("tokens",),  # the two halves of ``gate``, kept where a source has them
    "expert_selection": ("tokens",),
    "expert_ffn": ("tokens",),  # one routed expert over that many tokens
    "shared_expert_ffn": ("tokens",),  # the whole shared-expert block of one layer
    "cpu_expert_ffn": ("tokens",),  # one routed expert on the host CPU
    "h2d_pinned": ("bytes",),
    "h2d_pageable": ("bytes",),
    "d2h": ("bytes",),
    "ssd_read": ("bytes",),
    # measured by the live profiler: an executor loop's own host time per layer-step, the delay of a
    # copy hand-off between threads, and two contention diagnostics (moesim/profiling/)
    "layer_overhead_pre_gate": ("batch",),
    "layer_overhead_post_gate": ("batch",),
    "copy_handoff": (),
    "h2d_pinned_during_compute": ("bytes",),
    "expert_ffn_during_copies": ("tokens",),
    # the whole token (runtime.whole_token): what a token runs besides its MoE layers
    "embedding": ("tokens",),  # token-embedding lookup
    "dense_ffn": ("tokens",),  # the MLP of one dense (non-MoE) layer
    "lm_head": ("tokens",),  # final norm + logits
    "sampling": ("batch",),  # next-token selection over the logits
}

# Ops whose host (issue) time a profile may give as a ``host_<op>`` table of the same axes: the
# CPU time to launch the op, beside the table's GPU time (docs/profiles.md). A profile with any
# host table runs on two timelines (docs/fidelity.md).
HOST_OPS: tuple[str, ...] = (
    "norm",
    "attention",
    "gate",
    "expert_ffn",
    "shared_expert_ffn",
    "embedding",
    "dense_ffn",
    "lm_head",
    "sampling",
)
HOST_PREFIX = "host_"
OP_AXES.update({HOST_PREFIX + op: OP_AXES[op] for op in HOST_OPS})


def host_op(op: str) -> str:
    """The name of ``op``'s host-time table."""
    return HOST_PREFIX + op


# What the engine queries. The other ops in OP_AXES are optional detail.
ENGINE_OPS: tuple[str, ...] = (
    "attention",
    "norm",
    "gate",
    "expert_ffn",
    "shared_expert_ffn",
    "h2d_pinned",
    "h2d_pageable",
    "d2h",
    "ssd_read",
    "cpu_expert_ffn",
)

TRANSFER_OPS: frozenset[str] = frozenset({"h2d_pinned", "h2d_pageable", "d2h", "ssd_read"})

PROVENANCE_KINDS: tuple[str, ...] = ("measured", "paper", "estimated")

# Keys each provenance kind must carry, so every number can be traced back. Values may be null
# where they do not apply (e.g. ``driver`` for a CPU-only measurement).
REQUIRED_PROVENANCE: dict[str, tuple[str, ...]] = {
    "measured": ("device", "driver", "torch", "date"),
    "paper": ("citation",),
    "estimated": ("formula", "inputs"),
}

EXTRAPOLATION_POLICIES: tuple[str, ...] = ("error", "flag")
