"""Expert weight formats (``model.expert_dtype``): bytes per routed expert and a dequantisation
cost hook. ``model.expert_dtype`` applies it to a run (``moesim.experiments.fidelity``,
``moesim.hardware.quantized``); docs/fidelity.md gives the formulas and sources.

Three families:

* plain element types (bf16, fp16, fp8, int8, int4): ``bits`` per weight, any per-tensor scale
  ignored (a few bytes per matrix);
* HQQ group quantisation (Badri & Shaji 2023, the library mixtral-offloading uses): ``nbits``-bit
  codes packed (2-bit: four per byte; 3-bit: ten per int32 word; 4-bit: two per byte), one scale and
  one zero per group of ``group_size`` weights. With ``quant_scale`` the scales are themselves 8-bit,
  re-quantised per ``scale_group_size`` scales with an fp16 scale and zero each; with ``quant_zero``
  the zeros are 8-bit with one fp16 scale and zero for the whole matrix (hqq's
  ``BaseQuantizeConfig``: zero_quant_params group_size None);
* GGUF Q4_K_M (llama.cpp): gate and up in Q4_K (144-byte blocks of 256 weights: 4.5 bits), down in
  Q6_K (210-byte blocks: 6.5625 bits) on the layers llama.cpp's ``use_more_bits`` picks (the first
  and last eighth of the layers and every third one between), Q4_K elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from moesim.errors import MoesimInputError
from moesim.models.spec import ModelSpec

FP16_BYTES = 2


@dataclass(frozen=True)
class HqqConfig:
    nbits: int  # 2, 3, 4 or 8
    group_size: int
    scale_group_size: int = 128
    quant_scale: bool = True
    quant_zero: bool = True

    def packed_bytes(self, n: int) -> int:
        if self.nbits == 3:
            return 4 * math.ceil(n / 10)  # ten 3-bit codes per int32 word
        if self.nbits in (2, 4, 8):
            return math.ceil(n * self.nbits / 8)
        raise MoesimInputError(f"HQQ nbits must be 2, 3, 4 or 8 (got {self.nbits!r})")

    def matrix_bytes(self, n: int) -> int:
        """Stored bytes of one matrix of ``n`` weights (``n`` a multiple of ``group_size``)."""
        groups = math.ceil(n / self.group_size)
        if self.quant_scale:
            scales = groups + 2 * FP16_BYTES * math.ceil(groups / self.scale_group_size)
        else:
            scales = FP16_BYTES * groups
        zeros = groups + 2 * FP16_BYTES if self.quant_zero else FP16_BYTES * groups
        return self.packed_bytes(n) + scales + zeros


@dataclass(frozen=True)
class DequantCost:
    """Per-weight cost of turning stored expert weights into the bf16 operands of the GEMMs.

    ``flops``: arithmetic per weight (affine group formats: subtract zero, multiply scale, plus
    the per-group scale/zero dequantisation spread over the group). ``bytes_fused``: device-memory
    bytes per weight when a fused kernel reads the codes directly; ``bytes_unfused``: a separate
    dequantise kernel that writes a bf16 copy the GEMM then reads (``bits/8 + 2 + 2``).
    """

    flops: float
    bytes_fused: float
    bytes_unfused: float


@dataclass(frozen=True)
class ExpertFormat:
    key: str
    kind: str  # "plain", "hqq" or "gguf"
    bits: float = 0.0  # plain formats: bits per weight
    hqq: HqqConfig | None = None
    source: str = ""

    def tensor_bytes(self, n: int) -> int:
        """Stored bytes of ``n`` weights taken as one matrix (GGUF: Q4_K throughout)."""
        if self.kind == "plain":
            return math.ceil(n * self.bits / 8)
        if self.kind == "hqq":
            assert self.hqq is not None
            return self.hqq.matrix_bytes(n)
        return math.ceil(n / QK_K) * Q4_K_BLOCK_BYTES

    def layer_bytes(self, model: ModelSpec, layer: int) -> int:
        """Stored bytes of one routed expert of ``model`` at model layer index ``layer``."""
        n = model.hidden_size * model.expert_intermediate_size
        if self.kind == "gguf":
            return _q4_k_m_expert_bytes(n, layer, model.num_layers)
        return 3 * self.tensor_bytes(n)

    def bytes_per_expert(self, model: ModelSpec) -> float:
        """Mean stored bytes of one routed expert over the model's MoE layers."""
        per_layer = [self.layer_bytes(model, i) for i in model.moe_layer_indices]
        return sum(per_layer) / len(per_layer)

    def bits_per_weight(self, model: ModelSpec) -> float:
        return 8 * self.bytes_per_expert(model) / model.expert_matrix_params

    def dequant(self, model: ModelSpec) -> DequantCost:
        bits = self.bits_per_weight(model)
        if self.kind == "plain" and self.bits >= 16:
            return DequantCost(0.0, bits / 8, bits / 8)
        if self.kind == "plain":
            flops = 1.0  # one scale multiply
        elif self.kind == "hqq":
            assert self.hqq is not None
            per_group = 4.0 if (self.hqq.quant_scale or self.hqq.quant_zero) else 0.0
            flops = 2.0 + per_group / self.hqq.group_size
        else:
            flops = 2.0 + 4.0 / 32  # K-quants: sub-block scale and min dequantised per 32 weights
        return DequantCost(flops, bits / 8, bits / 8 + 2 * FP16_BYTES)


# llama.cpp block layouts (ggml-common.h): block_q4_K = 2 fp16 + 12 scale bytes + 128 code bytes
# per 256 weights; block_q6_K = 128 + 64 + 16 scale bytes + 1 fp16 per 256 weights.
QK_K = 256
Q4_K_BLOCK_BYTES = 2 * FP16_BYTES + 12 + QK_K // 2  # 144
Q6_K_BLOCK_BYTES = QK_K // 2 + QK_K // 4 + QK_K // 16 + FP16_BYTES  # 210


def use_more_bits(layer: int, n_layers: int) -> bool:
    """llama.cpp's layer schedule for Q4_K_M's Q6_K ffn_down tensors."""
    return layer < n_layers // 8 or layer >= 7 * n_layers // 8 or (layer - n_layers // 8) % 3 == 2


def _q4_k_m_expert_bytes(n: int, layer: int, n_layers: int) -> int:
    blocks = math.ceil(n / QK_K)
    down = Q6_K_BLOCK_BYTES if use_more_bits(layer, n_layers) else Q4_K_BLOCK_BYTES
    return blocks * (2 * Q4_K_BLOCK_BYTES + down)


_HQQ_SRC = (
    "mixtral-offloading (arXiv 2312.17238 Sec. 4.2; dvmazur/mixtral-offloading notebooks/demo.ipynb "
    "BaseQuantizeConfig) and hqq's BaseQuantizeConfig / BitPack"
)
FORMATS: dict[str, ExpertFormat] = {
    "fp32": ExpertFormat("fp32", "plain", bits=32),
    "bf16": ExpertFormat("bf16", "plain", bits=16),
    "fp16": ExpertFormat("fp16", "plain", bits=16),
    "fp8": ExpertFormat("fp8", "plain", bits=8),
    "int8": ExpertFormat("int8", "plain", bits=8),
    "int4": ExpertFormat("int4", "plain", bits=4),
    "mxfp4": ExpertFormat("mxfp4", "plain", bits=4.25, source="OCP MX: 32 fp4 values share one 8-bit scale"),
    # The mixtral-offloading expert configs: 2-bit g16 and 3-bit g64, scales re-quantised per 128.
    "hqq2": ExpertFormat("hqq2", "hqq", hqq=HqqConfig(2, 16, 128), source=_HQQ_SRC),
    "hqq3": ExpertFormat("hqq3", "hqq", hqq=HqqConfig(3, 64, 128), source=_HQQ_SRC),
    # The paper's attention config (4-bit g64, scale group 256), also usable for experts.
    "hqq4": ExpertFormat("hqq4", "hqq", hqq=HqqConfig(4, 64, 256), source=_HQQ_SRC),
    "gguf-q4_k_m": ExpertFormat(
        "gguf-q4_k_m",
        "gguf",
        source="llama.cpp ggml-common.h block_q4_K / block_q6_K; src/llama-quant.cpp use_more_bits",
    ),
}


def get_format(key: str) -> ExpertFormat:
    fmt = FORMATS.get(str(key).lower())
    if fmt is None:
        raise MoesimInputError(
            f"model.expert_dtype {key!r} is not a known expert format; known: {', '.join(sorted(FORMATS))}"
        )
    return fmt


def expert_bytes(model: ModelSpec, expert_dtype: str) -> float:
    """Mean stored bytes of one routed expert of ``model`` in ``expert_dtype``."""
    return get_format(expert_dtype).bytes_per_expert(model)
