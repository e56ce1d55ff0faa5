"""The shape of an MoE model, as far as timing and memory are concerned."""

from __future__ import annotations

from dataclasses import dataclass, field

# Bytes per stored parameter. mxfp4 is 4-bit values plus one shared 8-bit scale per 32 values.
DTYPE_BYTES: dict[str, float] = {
    "fp32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5,
    "mxfp4": 4.25 / 8.0,
}


@dataclass(frozen=True)
class AttentionSpec:
    """Attention shape. ``kind`` is "gqa" (covers MHA/MQA) or "mla" (DeepSeek multi-head latent)."""

    kind: str
    num_heads: int
    num_kv_heads: int
    head_dim: int
    q_lora_rank: int | None = None
    kv_lora_rank: int | None = None
    qk_nope_head_dim: int | None = None
    qk_rope_head_dim: int | None = None
    v_head_dim: int | None = None
    sliding_window: int | None = None


@dataclass(frozen=True)
class ModelSpec:
    name: str  # catalog key, e.g. "olmoe-1b-7b"
    hf_id: str  # e.g. "allenai/OLMoE-1B-7B-0924"
    num_layers: int  # all transformer layers, dense ones included
    moe_layer_indices: tuple[int, ...]  # model layer index of each MoE layer, ascending
    num_experts: int  # routed experts per MoE layer (E)
    top_k: int  # routed experts per token (k)
    num_shared_experts: int  # always-resident experts per MoE layer (never counted as accesses)
    hidden_size: int
    expert_intermediate_size: int  # per routed expert
    shared_expert_intermediate_size: int  # whole shared block per layer (0 if none)
    attention: AttentionSpec
    vocab_size: int
    dtype: str  # stored dtype of expert weights, a key of DTYPE_BYTES
    expert_bytes: int  # exact bytes of one routed expert (gate+up+down, biases/scales included)
    source: str  # where the numbers come from (config.json URL at a revision)
    notes: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)
    # One matrix serves as token embedding and LM head (HF ``tie_word_embeddings``): the LM head
    # still reads it every token, so only memory, not time, depends on it. No catalog model ties them.
    tie_embeddings: bool = False

    @property
    def expert_matrix_params(self) -> int:
        """Weights of one routed expert's gate, up and down matrices (3 x H x I; biases excluded)."""
        return 3 * self.hidden_size * self.expert_intermediate_size

    @property
    def dense_layer_indices(self) -> tuple[int, ...]:
        """Model layer index of each dense (non-MoE) layer, ascending (e.g. DeepSeek's first)."""
        moe = set(self.moe_layer_indices)
        return tuple(i for i in range(self.num_layers) if i not in moe)

    @property
    def dense_intermediate_size(self) -> int | None:
        """MLP width of the dense layers (``extra["dense_intermediate_size"]``), None if not given."""
        v = self.extra.get("dense_intermediate_size")
        return int(v) if v else None

    @property
    def num_moe_layers(self) -> int:
        return len(self.moe_layer_indices)

    @property
    def total_expert_bytes(self) -> int:
        return self.expert_bytes * self.num_experts * self.num_moe_layers
