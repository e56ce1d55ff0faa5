"""The expert FFN in a stored format other than the model's own (``model.expert_dtype``).

A documented roofline estimate, not a measurement. Runtimes that keep experts quantised run the
FFN with kernels that read the packed codes and dequantise in registers (mixtral-offloading:
``HQQLinearTritonSavable.forward_triton`` calls ``triton_matmul{2,3,4}_transpose`` on the packed
weights, after two small kernels that dequantise each matrix's 8-bit scales and zeros;
dvmazur/mixtral-offloading ``src/custom_layers.py``; llama.cpp's quantised mat-vec kernels read
K-quant blocks the same way). So per expert and ``t`` tokens, with ``n`` weights:

    quantised(t) = max((6*H*I*t + n*dq_flops) / compute, (n*bytes_fused + act(t)) / memory)
                   + (3 + extra_kernels) * launch
    native(t)    = the roofline's expert_ffn (moesim.hardware.roofline) with the native bytes

and the run's ``expert_ffn`` table becomes ``table(t) + quantised(t) - native(t)``: on an
``estimated:<device>`` profile exactly the quantised roofline, on a measured one the measured
native kernel plus the roofline's difference. ``dq_flops`` and ``bytes_fused`` per weight come
from ``ExpertFormat.dequant`` (moesim.models.precision); ``extra_kernels`` is 6 for HQQ with
quantised scales and zeros (two per matrix), else 0.
"""

from __future__ import annotations

from moesim.errors import MoesimInputError
from moesim.hardware.devices import DeviceSpec, get_cpu
from moesim.hardware.profile import LatencyProfile
from moesim.hardware.roofline import RooflineParams, _Roof
from moesim.hardware.table import Table
from moesim.models.precision import ExpertFormat
from moesim.models.spec import ModelSpec


def extra_kernels(fmt: ExpertFormat) -> int:
    """Launches beyond the three GEMMs: HQQ dequantises each matrix's 8-bit scale and zero first."""
    if fmt.kind == "hqq" and fmt.hqq is not None:
        return 3 * (int(fmt.hqq.quant_scale) + int(fmt.hqq.quant_zero))
    return 0


def ffn_delta_ms(model: ModelSpec, fmt: ExpertFormat, device: DeviceSpec, tokens: float) -> float:
    """Roofline time of the quantised expert FFN minus the native one, for ``tokens`` tokens."""
    p = RooflineParams()
    r = _Roof(model, device, get_cpu(device.host_cpu), p)
    h, inter, act = model.hidden_size, model.expert_intermediate_size, p.act_bytes
    n = model.expert_matrix_params
    dq = fmt.dequant(model)
    act_bytes = tokens * (2 * h + 6 * inter) * act
    kernels = p.kernels["expert_ffn"]
    quant = r.gpu(
        6 * h * inter * tokens + n * dq.flops, n * dq.bytes_fused + act_bytes, kernels + extra_kernels(fmt)
    )
    native = r.ffn(tokens, inter, model.expert_bytes, "expert_ffn")
    return quant - native


def quantized_expert_table(
    profile: LatencyProfile, model: ModelSpec, fmt: ExpertFormat, device: DeviceSpec
) -> Table:
    """The profile's ``expert_ffn`` table plus the roofline difference of ``fmt`` (module doc)."""
    old = profile.tables.get("expert_ffn")
    if old is None or old.axes != ("tokens",):
        raise MoesimInputError(
            f"model.expert_dtype: profile {profile.name} has no expert_ffn table over tokens to adjust; "
            "use estimated:<device>"
        )
    (grid,) = old.grid
    deltas = [ffn_delta_ms(model, fmt, device, t) for t in grid]
    ms = tuple(max(0.0, float(v) + d) for v, d in zip(old.ms, deltas))  # type: ignore[arg-type]
    return Table(
        op="expert_ffn",
        axes=old.axes,
        grid=old.grid,
        ms=ms,
        provenance={
            "kind": "estimated",
            "formula": "replaced expert_ffn + roofline(quantised) - roofline(native)  [ms] (moesim.hardware.quantized)",
            "inputs": {
                "expert_dtype": fmt.key,
                "device": device.key,
                "dequant_flops_per_weight": fmt.dequant(model).flops,
                "bytes_per_weight": fmt.dequant(model).bytes_fused,
                "extra_kernels": extra_kernels(fmt),
            },
            "note": "scenario model.expert_dtype: fused dequantise-in-kernel estimate",
            "replaces": old.provenance,
        },
    )
