"""Service times of one run, looked up in the latency profile once and memoised.

The simulator asks for the same few shapes millions of times (batch size, context length, tokens per
expert), so each distinct query reaches the profile's interpolation exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass

from moesim.hardware.link import fixed_cost_ms
from moesim.hardware.ops import host_op
from moesim.hardware.profile import LatencyProfile, host_tables
from moesim.hardware.runtime import RuntimeCosts
from moesim.models.spec import ModelSpec

# Kernels each engine op launches, for its host issue time ``runtime.launch_us`` x kernels when the
# profile has no host_<op> table (the roofline's counts: moesim.hardware.roofline).
OP_KERNELS: dict[str, int] = {
    "norm": 1,
    "gate": 3,  # post-attention norm + router gemm + softmax/top-k
    "expert_ffn": 3,
    "shared_expert_ffn": 3,
    "embedding": 1,
    "dense_ffn": 3,
    "lm_head": 2,
    "sampling": 3,
}


@dataclass(frozen=True)
class CopyOptions:
    """How copies behave beyond the link's table (docs/fidelity.md); the defaults are today's."""

    lane_sharing: str = "static"  # static: a lane always gets 1/lanes of the link; active: see copy_engine
    issue_us: float | None = None  # demand copies start this long after the gate (runtime hand-off)
    writeback: bool = False  # an evicted expert is copied back to the host before its slot is reused


class CostModel:
    def __init__(
        self,
        profile,
        model: ModelSpec,
        copy_engines: int = 1,
        loop_overhead: bool = True,
        copies: CopyOptions | None = None,
        runtime: RuntimeCosts | None = None,
    ):
        self.profile = profile
        self.model = model
        self.expert_bytes = model.expert_bytes
        self.copy_engines = copy_engines
        copies = copies or CopyOptions()
        # Processor sharing only differs from the static split with two or more lanes.
        self.shared_link = copies.lane_sharing == "active" and copy_engines > 1
        self.copy_issue_ms = (copies.issue_us or 0.0) / 1e3
        # Host time an executor's own loop spends per layer-step, before the gate (it delays the
        # gate and so the demand copies) and after it (it overlaps the copies the gate issued).
        # Only profiles measured with the live executor have these ops (moesim/profiling/overhead.py).
        self._pre_loop = loop_overhead and profile.has("layer_overhead_pre_gate")
        self._post_loop = loop_overhead and profile.has("layer_overhead_post_gate")
        # Lanes split the link's bandwidth: one copy on a lane moves its bytes at 1/lanes of the rate
        # while the fixed per-copy cost stays (see copy_engine.py).
        # Shared by active copies instead: a copy's time at the whole link, split into the fixed
        # per-copy cost (it overlaps other copies) and the bytes (they share the link).
        lanes = 1 if self.shared_link else copy_engines
        self.h2d_ms = profile.time_ms("h2d_pinned", bytes=model.expert_bytes * lanes)
        self.h2d_fixed_ms = (
            min(self.h2d_ms, fixed_cost_ms(profile, "h2d_pinned")) if self.shared_link else 0.0
        )
        # Write-back: the victim's bytes back over the same link before the load (PCIe moves the
        # same bytes per second each way; the copies are serialised on one stream).
        self.writeback_ms = self.h2d_ms if copies.writeback else 0.0
        self._has_shared = model.num_shared_experts > 0
        self._memo: dict[tuple, float] = {}
        self._init_runtime(runtime or RuntimeCosts())

    # -- the runtime around the kernels (issue 13: host timeline, overheads, whole token) ---------
    def _init_runtime(self, rt: RuntimeCosts) -> None:
        self.runtime = rt
        # Host times live in their own profile so the run's own records extrapolations of GPU ops only.
        tables = host_tables(self.profile)
        self._host_prof = LatencyProfile(self.profile.name, self.profile.device, tables) if tables else None
        # Two timelines when the profile times the host or the runtime costs host time; else the
        # simulator runs its one GPU timeline exactly as before.
        self.host_timeline = bool(tables) or rt.host_time
        self.whole_token = rt.whole_token
        self.layer_overhead_ms = rt.layer_overhead_ms
        self.token_overhead_ms = rt.token_overhead_ms
        m = self.model
        moe = m.moe_layer_indices
        # dense layers before each MoE layer (after the previous one), and after the last one
        self.dense_before = [
            sum(1 for i in range(moe[j - 1] + 1 if j else 0, moe[j]) if i not in moe) for j in range(len(moe))
        ]
        self.dense_after = max(0, m.num_layers - 1 - moe[-1]) if moe else m.num_layers

    def host_ms(self, op: str, **axes) -> float:
        """Host (issue) time of ``op``: its host_<op> table, else launch_us x its kernels, else 0."""
        hp = self._host_prof
        if hp is not None and hp.has(host_op(op)):
            key = (host_op(op), *axes.values())
            v = self._memo.get(key)
            if v is None:
                v = self._memo[key] = float(hp.time_ms(host_op(op), **axes))
            return v
        launch = self.runtime.launch_ms
        if not launch:
            return 0.0
        if op == "attention":
            return launch * (7 if self.model.attention.kind == "mla" else 5)
        if op == "shared_expert_ffn" and not self._has_shared:
            return 0.0
        return launch * OP_KERNELS[op]

    def dense_layer_ms(self, batch: int, context: int) -> float:
        """GPU time of one dense layer: norm, attention, post-attention norm, MLP."""
        post = "post_attention_norm" if self.profile.has("post_attention_norm") else "norm"
        return (
            self._q("norm", tokens=batch)
            + self.attention_ms(batch, context)
            + self._q(post, tokens=batch)
            + self._q("dense_ffn", tokens=batch)
        )

    def host_dense_layer_ms(self, batch: int, context: int) -> float:
        return (
            2 * self.host_ms("norm", tokens=batch)
            + self.host_ms("attention", batch=batch, context=context)
            + self.host_ms("dense_ffn", tokens=batch)
        )

    def embedding_ms(self, batch: int) -> float:
        return self._q("embedding", tokens=batch)

    def head_ms(self, batch: int) -> float:
        """LM head (final norm + logits) and sampling."""
        return self._q("lm_head", tokens=batch) + self._q("sampling", batch=batch)

    def host_head_ms(self, batch: int) -> float:
        return self.host_ms("lm_head", tokens=batch) + self.host_ms("sampling", batch=batch)

    @property
    def ssd_ms(self) -> float:
        """SSD -> host memory read of one expert. Paper tables time disk -> GPU end to end, so the
        host -> GPU hop they include is taken out (the simulator adds its own copy)."""
        v = self._memo.get(("ssd",))
        if v is None:
            b = self.expert_bytes
            v = self.profile.time_ms("ssd_read", bytes=b)
            table = self.profile.tables.get("ssd_read")
            if table is not None and table.provenance.get("includes_h2d"):
                v = max(0.0, v - self.profile.time_ms("h2d_pinned", bytes=b))
            self._memo[("ssd",)] = v
        return v

    def cpu_expert_ms(self, tokens: int) -> float:
        return self._q("cpu_expert_ffn", tokens=tokens)

    def activation_ms(self, tokens: int) -> float:
        """Hidden states of ``tokens`` tokens to the CPU and the expert's output back (bf16)."""
        b = tokens * self.model.hidden_size * 2
        return self._q("d2h", bytes=b) + self._q("h2d_pinned", bytes=b)

    def _q(self, op: str, **axes) -> float:
        key = (op, *axes.values())
        v = self._memo.get(key)
        if v is None:
            v = self._memo[key] = float(self.profile.time_ms(op, **axes))
        return v

    def pre_attention_ms(self, batch: int) -> float:
        v = self._q("norm", tokens=batch)
        return v + self._q("layer_overhead_pre_gate", batch=batch) if self._pre_loop else v

    def attention_ms(self, batch: int, context: int) -> float:
        return self._q("attention", batch=batch, context=context)

    def gate_ms(self, batch: int) -> float:
        return self._q("gate", tokens=batch)

    def shared_ms(self, batch: int) -> float:
        v = self._q("shared_expert_ffn", tokens=batch) if self._has_shared else 0.0
        return v + self._q("layer_overhead_post_gate", batch=batch) if self._post_loop else v

    def expert_ms(self, tokens: int) -> float:
        return self._q("expert_ffn", tokens=tokens)
