"""Roofline estimate of every op for a model on a device: the ``estimated:<device>`` profiles.

Each compute op costs ``max(FLOPs / (peak * compute_eff), bytes / (bandwidth * memory_eff))``
plus ``kernels * launch_overhead``; each copy costs ``overhead + bytes / effective bandwidth``.
The estimate is a lower bound on a well-fused implementation, not a prediction of eager PyTorch
(seed 002's measurements are 1-2 orders of magnitude above it for the expert computation).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from moesim.errors import MoesimInputError
from moesim.hardware.devices import CpuSpec, DeviceSpec, devices_provenance, get_cpu, get_device
from moesim.hardware.profile import LatencyProfile
from moesim.hardware.table import Table
from moesim.models.spec import DTYPE_BYTES, ModelSpec

# Kernels per op in a fused decode implementation (vLLM / SGLang style), each paying the device's
# launch overhead once. Why these counts: norm = 1 fused RMSNorm; GQA attention = qkv proj,
# rope + cache write, attention, o proj, residual add; MLA adds the latent down-projection, its
# norm and the absorbed up-projection; router = gemm + fused softmax/top-k; expert = gate_up gemm,
# silu*mul, down gemm.
DEFAULT_KERNELS: dict[str, int] = {
    "norm": 1,
    "attention_gqa": 5,
    "attention_mla": 7,
    "post_attention_norm": 1,
    "expert_selection": 2,
    "expert_ffn": 3,
    "shared_expert_ffn": 3,
}


# Kernels of the whole-token ops (runtime.whole_token), kept apart from DEFAULT_KERNELS so the
# profiles estimated before them keep their provenance (and fingerprint) byte for byte.
# embedding = 1 gather; dense FFN = gate_up gemm, silu*mul, down gemm; LM head = final RMSNorm +
# logits gemm; sampling = temperature/softmax, top-p sort + cumsum, multinomial draw.
TOKEN_KERNELS: dict[str, int] = {"embedding": 1, "dense_ffn": 3, "lm_head": 2, "sampling": 3}
# Passes over the fp32 logits that sampling makes (softmax read+write, sort read+write).
SAMPLING_PASSES = 4


def _pow2(lo: int, hi: int) -> tuple[float, ...]:
    return tuple(float(2**e) for e in range(lo, hi + 1))


@dataclass(frozen=True)
class RooflineParams:
    memory_efficiency: float = 0.8  # achieved fraction of peak memory bandwidth (streaming GEMV)
    compute_efficiency: float = 0.7  # achieved fraction of dense bf16 tensor peak (large GEMM)
    act_bytes: float = 2.0  # activations, KV cache and non-expert weights are bf16
    pageable_factor: float = 0.5  # pageable copies go through a staging buffer: ~half the pinned rate
    ssd_overhead_us: float = 100.0  # NVMe command + file-system path per read
    kernels: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_KERNELS), hash=False)
    batch_grid: tuple[float, ...] = _pow2(0, 8)  # 1 .. 256
    context_grid: tuple[float, ...] = _pow2(0, 17)  # 1 .. 131072 (from 1 so short prompts are not flagged)
    tokens_grid: tuple[float, ...] = _pow2(0, 10)  # 1 .. 1024
    bytes_grid: tuple[float, ...] = (0.0, *_pow2(16, 30))  # 0, 64 KiB .. 1 GiB


def _need(model: ModelSpec, name: str) -> int:
    v = getattr(model.attention, name)
    if v is None:
        raise MoesimInputError(
            f"model {model.name}: attention.{name} is required for MLA attention; set it in the model spec"
        )
    return int(v)


def attention_shape(model: ModelSpec) -> tuple[float, float, float]:
    """(projection weight params, KV-cache elements per token, attention FLOPs per token of context)
    for one layer and one sequence. MLA uses the absorbed (latent-space) decode formulation."""
    a, h = model.attention, model.hidden_size
    if a.kind == "gqa":
        weights = h * a.head_dim * (2 * a.num_heads + 2 * a.num_kv_heads)
        kv = 2 * a.num_kv_heads * a.head_dim
        flops_per_ctx = 4 * a.num_heads * a.head_dim  # QK^T and AV
    elif a.kind == "mla":
        lora, rope = _need(model, "kv_lora_rank"), _need(model, "qk_rope_head_dim")
        nope, vdim = _need(model, "qk_nope_head_dim"), _need(model, "v_head_dim")
        qdim = a.num_heads * (nope + rope)
        q = h * qdim if a.q_lora_rank is None else h * a.q_lora_rank + a.q_lora_rank * qdim
        weights = q + h * (lora + rope) + lora * a.num_heads * (nope + vdim) + a.num_heads * vdim * h
        kv = lora + rope
        flops_per_ctx = 2 * a.num_heads * (lora + rope) + 2 * a.num_heads * lora
    else:
        raise MoesimInputError(f"model {model.name}: attention.kind {a.kind!r} is not gqa or mla")
    return float(weights), float(kv), float(flops_per_ctx)


class _Roof:
    def __init__(self, model: ModelSpec, device: DeviceSpec, cpu: CpuSpec, p: RooflineParams) -> None:
        self.m, self.d, self.cpu, self.p = model, device, cpu, p
        self.flops_per_ms = device.bf16_dense_tflops * 1e9 * p.compute_efficiency
        self.bytes_per_ms = device.memory_bandwidth_gbps * 1e6 * p.memory_efficiency
        self.launch_ms = device.launch_overhead_us / 1e3
        self.expert_dtype_bytes = DTYPE_BYTES[model.dtype]

    def gpu(self, flops: float, nbytes: float, kernels: int) -> float:
        return max(flops / self.flops_per_ms, nbytes / self.bytes_per_ms) + kernels * self.launch_ms

    def attention(self, batch: float, context: float) -> float:
        weights, kv, flops_ctx = attention_shape(self.m)
        window = self.m.attention.sliding_window
        ctx = min(context, window) if window else context
        act, h = self.p.act_bytes, self.m.hidden_size
        flops = 2 * batch * weights + batch * ctx * flops_ctx
        nbytes = weights * act + batch * ctx * kv * act + batch * 2 * h * act
        kind = "attention_mla" if self.m.attention.kind == "mla" else "attention_gqa"
        return self.gpu(flops, nbytes, self.p.kernels[kind])

    def norm(self, tokens: float, op: str = "norm") -> float:
        h, act = self.m.hidden_size, self.p.act_bytes
        return self.gpu(4 * tokens * h, 2 * tokens * h * act + h * act, self.p.kernels[op])

    def expert_selection(self, tokens: float) -> float:
        h, e, act = self.m.hidden_size, self.m.num_experts, self.p.act_bytes
        flops = 2 * tokens * h * e
        nbytes = e * h * act + tokens * h * act + tokens * e * 4
        return self.gpu(flops, nbytes, self.p.kernels["expert_selection"])

    def ffn(self, tokens: float, inter: int, weight_bytes: float, op: str) -> float:
        h, act = self.m.hidden_size, self.p.act_bytes
        flops = 6 * h * inter * tokens
        # Activation traffic between the three kernels: x, gate_up out/in, act out/in, y.
        nbytes = weight_bytes + tokens * (2 * h + 6 * inter) * act
        return self.gpu(flops, nbytes, self.p.kernels[op])

    def cpu_ffn(self, tokens: float) -> float:
        h, i, act, c = self.m.hidden_size, self.m.expert_intermediate_size, self.p.act_bytes, self.cpu
        flops = 6 * h * i * tokens
        nbytes = self.m.expert_bytes + tokens * (2 * h + 6 * i) * act
        compute = flops / (c.fp32_peak_gflops * 1e6 * c.compute_efficiency)
        memory = nbytes / (c.memory_bandwidth_gbps * 1e6 * c.memory_efficiency)
        return max(compute, memory) + c.call_overhead_us / 1e3

    def token_op(self, op: str, tokens: float) -> float:
        """GPU time of a whole-token op (``TOKEN_KERNELS``) over ``tokens`` tokens (batch for sampling)."""
        h, v, act = self.m.hidden_size, self.m.vocab_size, self.p.act_bytes
        n = TOKEN_KERNELS[op]
        if op == "embedding":
            return self.gpu(0.0, 2 * tokens * h * act, n)
        if op == "dense_ffn":
            inter = dense_intermediate(self.m)
            if not inter:  # no dense layers: never queried, zero like a model without shared experts
                return 0.0
            flops = 6 * h * inter * tokens
            return self.gpu(flops, 3 * h * inter * act + tokens * (2 * h + 6 * inter) * act, n)
        if op == "lm_head":
            flops = 2 * tokens * h * v + 4 * tokens * h
            return self.gpu(flops, v * h * act + 2 * tokens * h * act + 4 * tokens * v, n)
        return self.gpu(5 * tokens * v, SAMPLING_PASSES * 4 * tokens * v, n)  # sampling


def dense_intermediate(model: ModelSpec) -> int:
    """The MLP width of the model's dense layers (0 when it has none); one line if it is unknown."""
    n_dense = model.num_layers - model.num_moe_layers
    inter = model.extra.get("dense_intermediate_size")
    if n_dense and not inter:
        raise MoesimInputError(
            f"model {model.name} has {n_dense} dense layers but no extra.dense_intermediate_size; "
            "add it to the model spec"
        )
    return int(inter or 0)


def token_tables(
    model: ModelSpec, device: DeviceSpec | str, params: RooflineParams | None = None
) -> list[Table]:
    """Roofline tables of the whole-token ops (``embedding``, ``dense_ffn``, ``lm_head``,
    ``sampling``) for ``model`` on ``device``: what ``runtime.whole_token`` adds to an estimated
    profile (kept out of ``estimate_profile`` so existing profiles are unchanged)."""
    d = get_device(device) if isinstance(device, str) else device
    p = params or RooflineParams()
    r = _Roof(model, d, get_cpu(d.host_cpu), p)
    inputs = {
        **_device_inputs(d, p),
        **_model_inputs(model),
        "vocab_size": model.vocab_size,
        "dense_intermediate_size": dense_intermediate(model),
    }
    gpu = "max(flops / (bf16_dense_tflops*1e9*compute_eff), bytes / (mem_gbps*1e6*memory_eff)) + kernels*launch_us/1e3  [ms]"
    formulas = {
        "embedding": "flops = 0; bytes = 2*t*H*act (gather one row per token, write it)",
        "dense_ffn": "flops = 6*H*Id*t; bytes = 3*H*Id*act + t*(2H + 6Id)*act (Id = dense_intermediate_size)",
        "lm_head": "flops = 2*t*H*V + 4*t*H; bytes = V*H*act + 2*t*H*act + 4*t*V (final norm, fp32 logits)",
        "sampling": f"flops = 5*b*V; bytes = {SAMPLING_PASSES}*4*b*V (softmax and top-p sort over fp32 logits)",
    }
    out = []
    for op in TOKEN_KERNELS:
        axis = "batch" if op == "sampling" else "tokens"
        g = p.batch_grid if op == "sampling" else p.tokens_grid
        prov = {
            "kind": "estimated",
            "formula": f"{gpu}; {formulas[op]}",
            "inputs": dict(inputs, kernels=TOKEN_KERNELS[op]),
        }
        out.append(Table(op, (axis,), (g,), tuple(r.token_op(op, t) for t in g), prov))
    return out


def _device_inputs(d, p: RooflineParams) -> dict:
    """The device and roofline parameters an estimate depends on (its provenance's inputs)."""
    return {
        "device": d.key,
        "memory_bandwidth_gbps": d.memory_bandwidth_gbps,
        "bf16_dense_tflops": d.bf16_dense_tflops,
        "memory_efficiency": p.memory_efficiency,
        "compute_efficiency": p.compute_efficiency,
        "launch_overhead_us": d.launch_overhead_us,
        "act_bytes": p.act_bytes,
    }


def _model_inputs(m: ModelSpec) -> dict:
    a = m.attention
    return {
        "model": m.name,
        "hidden_size": m.hidden_size,
        "expert_intermediate_size": m.expert_intermediate_size,
        "shared_expert_intermediate_size": m.shared_expert_intermediate_size,
        "num_experts": m.num_experts,
        "dtype": m.dtype,
        "expert_bytes": m.expert_bytes,
        "attention": {k: v for k, v in asdict(a).items() if v is not None},
    }


def estimate_profile(
    model: ModelSpec,
    device: DeviceSpec | str,
    params: RooflineParams | None = None,
    cpu: CpuSpec | str | None = None,
    extrapolation: str = "flag",
) -> LatencyProfile:
    """Roofline profile of every op in ``OP_AXES`` for ``model`` on ``device`` (kind ``estimated``)."""
    d = get_device(device) if isinstance(device, str) else device
    p = params or RooflineParams()
    c = get_cpu(cpu or d.host_cpu) if not isinstance(cpu, CpuSpec) else cpu
    r = _Roof(model, d, c, p)
    dev_in = _device_inputs(d, p)
    minp = _model_inputs(model)
    gpu_formula = "max(flops / (bf16_dense_tflops*1e9*compute_eff), bytes / (mem_gbps*1e6*memory_eff)) + kernels*launch_us/1e3  [ms]"

    def prov(formula: str, **inputs) -> dict:
        return {"kind": "estimated", "formula": formula, "inputs": inputs}

    def tok(op: str, fn, formula: str, **inputs) -> Table:
        g = p.tokens_grid
        return Table(op, ("tokens",), (g,), tuple(fn(t) for t in g), prov(formula, **inputs))

    wts, kv, fctx = attention_shape(model)
    k = p.kernels
    tables = [
        Table(
            "attention",
            ("batch", "context"),
            (p.batch_grid, p.context_grid),
            tuple(tuple(r.attention(b, s) for s in p.context_grid) for b in p.batch_grid),
            prov(
                gpu_formula
                + "; flops = 2*batch*W + batch*ctx*F; bytes = W*act + batch*ctx*KV*act + 2*batch*H*act",
                W_params=wts,
                KV_elems_per_token=kv,
                F_flops_per_context_token=fctx,
                sliding_window=model.attention.sliding_window,
                sliding_window_note=(
                    "context capped at the window on every layer; models alternating sliding and full "
                    "layers are underestimated at long context"
                    if model.attention.sliding_window
                    else None
                ),
                kernels=k["attention_mla" if model.attention.kind == "mla" else "attention_gqa"],
                **dev_in,
                **minp,
            ),
        ),
        tok(
            "norm",
            r.norm,
            gpu_formula + "; flops = 4*t*H; bytes = 2*t*H*act + H*act",
            kernels=k["norm"],
            **dev_in,
            **minp,
        ),
        tok(
            "post_attention_norm",
            lambda t: r.norm(t, "post_attention_norm"),
            gpu_formula + "; flops = 4*t*H; bytes = 2*t*H*act + H*act",
            kernels=k["post_attention_norm"],
            **dev_in,
            **minp,
        ),
        tok(
            "expert_selection",
            r.expert_selection,
            gpu_formula + "; flops = 2*t*H*E; bytes = E*H*act + t*H*act + 4*t*E",
            kernels=k["expert_selection"],
            **dev_in,
            **minp,
        ),
        tok(
            "gate",
            lambda t: r.norm(t, "post_attention_norm") + r.expert_selection(t),
            "post_attention_norm(t) + expert_selection(t)",
            **dev_in,
            **minp,
        ),
        tok(
            "expert_ffn",
            lambda t: r.ffn(t, model.expert_intermediate_size, model.expert_bytes, "expert_ffn"),
            gpu_formula + "; flops = 6*H*I*t; bytes = expert_bytes + t*(2H + 6I)*act",
            kernels=k["expert_ffn"],
            **dev_in,
            **minp,
        ),
        _shared_table(
            model,
            r,
            p,
            prov(
                gpu_formula
                + "; as expert_ffn with I = shared_expert_intermediate_size, weights = 3*H*I*dtype_bytes",
                kernels=k["shared_expert_ffn"],
                **dev_in,
                **minp,
            ),
        ),
        tok(
            "cpu_expert_ffn",
            r.cpu_ffn,
            "max(6*H*I*t / (fp32_peak_gflops*1e6*compute_eff), (expert_bytes + t*(2H+6I)*act) / "
            "(mem_gbps*1e6*memory_eff)) + call_overhead_us/1e3  [ms]; weights already in host DRAM, "
            "activation copies not included",
            cpu=asdict(c),
            **minp,
        ),
        *_copy_tables(d, p),
    ]
    return LatencyProfile(
        f"estimated:{d.key}",
        d.name,
        tables,
        model=model.name,
        provenance={
            "kind": "estimated",
            "method": "roofline (moesim.hardware.roofline)",
            "device": asdict(d),
            "host_cpu": asdict(c),
            "params": {k2: (list(v) if isinstance(v, tuple) else v) for k2, v in asdict(p).items()},
            "devices_file": devices_provenance(),
        },
        extrapolation=extrapolation,
        source=f"estimated:{d.key}",
    )


def _shared_table(model: ModelSpec, r: _Roof, p: RooflineParams, prov: dict) -> Table:
    inter = model.shared_expert_intermediate_size
    g = p.tokens_grid
    if model.num_shared_experts == 0 or inter == 0:
        prov = dict(prov, note=f"model {model.name} has no shared experts: zero time")
        return Table("shared_expert_ffn", ("tokens",), (g,), tuple(0.0 for _ in g), prov)
    weight_bytes = 3 * model.hidden_size * inter * DTYPE_BYTES[model.dtype]
    return Table(
        "shared_expert_ffn",
        ("tokens",),
        (g,),
        tuple(r.ffn(t, inter, weight_bytes, "shared_expert_ffn") for t in g),
        prov,
    )


def _copy_tables(d: DeviceSpec, p: RooflineParams) -> list[Table]:
    g = p.bytes_grid
    pcie = d.pcie_effective_gbps
    link = {
        "device": d.key,
        "pcie_gen": d.pcie_gen,
        "pcie_lanes": d.pcie_lanes,
        "pcie_gbps": d.pcie_gbps,
        "pcie_efficiency": d.pcie_efficiency,
        "copy_overhead_us": d.copy_overhead_us,
    }

    def copy(op: str, gbps: float, overhead_us: float, formula: str, **inputs) -> Table:
        ms = tuple(overhead_us / 1e3 + b / (gbps * 1e6) for b in g)
        prov = {"kind": "estimated", "formula": formula, "inputs": {**inputs, "effective_gbps": gbps}}
        return Table(op, ("bytes",), (g,), ms, prov)

    f = "copy_overhead_us/1e3 + bytes / (pcie_gbps*pcie_efficiency*1e6)  [ms]"
    return [
        copy("h2d_pinned", pcie, d.copy_overhead_us, f, **link),
        copy("d2h", pcie, d.copy_overhead_us, f, **link),
        copy(
            "h2d_pageable",
            pcie * p.pageable_factor,
            d.copy_overhead_us,
            "copy_overhead_us/1e3 + bytes / (pcie_gbps*pcie_efficiency*pageable_factor*1e6)  [ms]",
            pageable_factor=p.pageable_factor,
            **link,
        ),
        Table(
            "ssd_read",
            ("bytes",),
            (g,),
            tuple(p.ssd_overhead_us / 1e3 + b / (d.nvme_gbps * 1e6) for b in g),
            {
                "kind": "estimated",
                "formula": "ssd_overhead_us/1e3 + bytes / (nvme_gbps*1e6)  [ms]; SSD -> host DRAM only",
                "inputs": {"device": d.key, "nvme_gbps": d.nvme_gbps, "ssd_overhead_us": p.ssd_overhead_us},
                "includes_h2d": False,
            },
        ),
    ]
