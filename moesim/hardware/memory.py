"""GPU memory check: do the dense weights, the KV cache and the expert cache slots fit the device?

``prepare`` runs it (``moesim.experiments.fidelity.check_memory``; ``hardware.memory_gb``). Sizes:

* dense (non-routed-expert) weights: per layer the attention projections (in ``dense_dtype``, an
  expert format key such as ``bf16`` or ``hqq4``), two RMSNorm vectors, and per MoE layer the router
  and any shared experts; per dense layer a SwiGLU FFN of ``extra["dense_intermediate_size"]``;
  the token embedding and the LM head (one matrix if ``tie_embeddings``). Norms, router, embedding
  and LM head stay 16-bit, as mixtral-offloading keeps them (arXiv 2312.17238 Sec. 4.2);
* KV cache: ``batch x min(context, sliding_window) x num_layers x kv_elems x kv_bytes`` with
  ``kv_elems = 2 x kv_heads x head_dim`` (GQA) or ``kv_lora_rank + qk_rope_head_dim`` (MLA);
* expert slots: ``expert_slots x bytes_per_expert(expert_dtype)``; the slots are every routed
  expert kept on the GPU at once (cache slots over all layers plus any staging buffers).

Device memory: ``memory_gb`` overrides the device's; both are binary GB (GiB), the unit behind
vendors' "80GB" (an A100 80GB reports 81,920 MiB).
"""

from __future__ import annotations

from dataclasses import dataclass

from moesim.errors import MoesimInputError
from moesim.hardware.devices import DeviceSpec, get_device
from moesim.hardware.roofline import attention_shape
from moesim.models.precision import get_format
from moesim.models.spec import ModelSpec

GIB = 2**30
HALF = 2  # bytes of a 16-bit value


@dataclass(frozen=True)
class DenseBytes:
    attention: int
    norms: int
    router: int
    shared_experts: int
    dense_ffn: int
    embedding: int
    lm_head: int

    @property
    def total(self) -> int:
        return (
            self.attention
            + self.norms
            + self.router
            + self.shared_experts
            + self.dense_ffn
            + self.embedding
            + self.lm_head
        )


@dataclass(frozen=True)
class MemoryCheck:
    model: str
    device: str
    capacity_bytes: int
    capacity_from: str  # "device <key>" or "memory_gb"
    dense: DenseBytes
    kv_cache_bytes: int
    expert_slots: int
    bytes_per_expert: float
    expert_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.dense.total + self.kv_cache_bytes + self.expert_bytes

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.capacity_bytes

    @property
    def headroom_bytes(self) -> int:
        return self.capacity_bytes - self.total_bytes

    def message(self) -> str:
        g = GIB
        return (
            f"model {self.model} does not fit {self.device}: needs {self.total_bytes / g:.2f} GiB "
            f"(dense weights {self.dense.total / g:.2f} + KV cache {self.kv_cache_bytes / g:.2f} + "
            f"{self.expert_slots} expert slots x {self.bytes_per_expert / 2**20:.1f} MiB = "
            f"{self.expert_bytes / g:.2f}) but has {self.capacity_bytes / g:.2f} GiB ({self.capacity_from}); "
            "use fewer cache slots, a shorter context or a smaller expert_dtype, or set hardware.memory_gb"
        )

    def raise_if_over(self) -> None:
        if not self.fits:
            raise MoesimInputError(self.message())


def _positive_int(value: int, name: str, allow_zero: bool = False) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise MoesimInputError(f"{name} must be an integer {'>= 0' if allow_zero else '> 0'} (got {value!r})")
    return value


def dense_bytes(model: ModelSpec, dense_dtype: str = "bf16", tie_embeddings: bool = False) -> DenseBytes:
    fmt = get_format(dense_dtype)
    h, layers = model.hidden_size, model.num_layers
    attn_params = int(attention_shape(model)[0])
    moe = model.num_moe_layers
    n_dense = layers - moe
    inter = model.extra.get("dense_intermediate_size")
    if n_dense and not inter:
        raise MoesimInputError(
            f"model {model.name} has {n_dense} dense layers but no extra.dense_intermediate_size; "
            "add it to the model spec"
        )
    shared = 3 * h * model.shared_expert_intermediate_size if model.num_shared_experts else 0
    embed = model.vocab_size * h * HALF
    return DenseBytes(
        attention=layers * fmt.tensor_bytes(attn_params),
        norms=layers * 2 * h * HALF,
        router=moe * model.num_experts * h * HALF,
        shared_experts=moe * fmt.tensor_bytes(shared) if shared else 0,
        dense_ffn=n_dense * fmt.tensor_bytes(3 * h * int(inter)) if n_dense and inter else 0,
        embedding=embed,
        lm_head=0 if tie_embeddings else embed,
    )


def kv_cache_bytes(model: ModelSpec, context: int, batch: int = 1, kv_bytes: float = 2.0) -> int:
    _positive_int(context, "context")
    _positive_int(batch, "batch")
    window = model.attention.sliding_window
    ctx = min(context, window) if window else context
    kv_elems = attention_shape(model)[1]
    return int(batch * ctx * model.num_layers * kv_elems * kv_bytes)


def check_gpu_memory(
    model: ModelSpec,
    *,
    expert_slots: int,
    context: int,
    batch: int = 1,
    expert_dtype: str | None = None,
    dense_dtype: str = "bf16",
    kv_bytes: float = 2.0,
    device: DeviceSpec | str | None = None,
    memory_gb: float | None = None,
    tie_embeddings: bool = False,
) -> MemoryCheck:
    """The memory breakdown of ``model`` on ``device`` (or ``memory_gb`` GiB); see the module doc."""
    _positive_int(expert_slots, "expert_slots", allow_zero=True)
    d = get_device(device) if isinstance(device, str) else device
    if memory_gb is not None:
        if isinstance(memory_gb, bool) or not isinstance(memory_gb, (int, float)) or not memory_gb > 0:
            raise MoesimInputError(f"hardware.memory_gb must be a positive number of GiB (got {memory_gb!r})")
        capacity, cap_from = int(memory_gb * GIB), "memory_gb"
    elif d is not None:
        capacity, cap_from = int(d.memory_gb * GIB), f"device {d.key}"
    else:
        raise MoesimInputError("the memory check needs a device or hardware.memory_gb")
    per_expert = (
        float(model.expert_bytes)
        if expert_dtype is None
        else get_format(expert_dtype).bytes_per_expert(model)
    )
    return MemoryCheck(
        model=model.name,
        device=d.key if d is not None else "memory_gb",
        capacity_bytes=capacity,
        capacity_from=cap_from,
        dense=dense_bytes(model, dense_dtype, tie_embeddings),
        kv_cache_bytes=kv_cache_bytes(model, context, batch, kv_bytes),
        expert_slots=expert_slots,
        bytes_per_expert=per_expert,
        expert_bytes=round(expert_slots * per_expert),
    )
