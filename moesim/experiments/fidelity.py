"""Scenario keys of issue 13 applied to a loaded run (docs/fidelity.md): the PCIe link and host
memory (``hardware.pcie_gen``, ``pcie_lanes``, ``host_memory``), the experts' stored format
(``model.expert_dtype``) and the GPU memory check (``hardware.memory_gb``). With none of them set,
the model and profile pass through untouched (the same objects), so results stay byte-identical.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from moesim.errors import MoesimInputError, fail
from moesim.hardware.devices import DeviceSpec, get_device, list_devices
from moesim.hardware.paper import PAPER_DEVICES
from moesim.models.precision import get_format
from moesim.models.spec import DTYPE_BYTES

if TYPE_CHECKING:
    from moesim.experiments.scenario import Scenario
    from moesim.hardware.profile import LatencyProfile
    from moesim.models.spec import ModelSpec
    from moesim.traces.trace import Trace


def profile_device(profile: LatencyProfile) -> DeviceSpec | None:
    """The catalog device a profile is for: ``estimated:<key>``, ``paper:<key>`` (its roofline
    device), or a file whose device name is a catalog device's name; None if unknown."""
    src = profile.source or profile.name
    scheme, _, rest = src.partition(":")
    if scheme == "estimated":
        return get_device(rest.partition("+")[0])
    if scheme == "paper" and rest.partition("+")[0] in PAPER_DEVICES:
        return get_device(PAPER_DEVICES[rest.partition("+")[0]].roofline_device)
    for key in list_devices():
        d = get_device(key)
        if profile.device in (d.key, d.name):
            return d
    return None


def apply_link(sc: Scenario, profile: LatencyProfile, device: DeviceSpec | None) -> LatencyProfile:
    """``hardware.pcie_gen`` / ``pcie_lanes`` / ``host_memory`` (``h2d_gbps`` wins over them all)."""
    from moesim.hardware.link import pageable_table, pcie_table
    from moesim.hardware.pcie import PAGEABLE_FACTOR, link_gbps

    hw = sc.hardware
    if hw.h2d_gbps is not None:
        return profile
    memory = hw.host_memory or "pinned"
    if hw.pcie_gen is None and hw.pcie_lanes is None:
        if memory == "pinned":
            return profile
        return profile.with_tables([pageable_table(profile, PAGEABLE_FACTOR)])
    if device is None and (hw.pcie_gen is None or hw.pcie_lanes is None):
        fail(
            f"hardware.pcie_gen / hardware.pcie_lanes: profile {profile.name} names no catalog device to "
            "take the other from; set both (or hardware.h2d_gbps)"
        )
    gen = hw.pcie_gen if hw.pcie_gen is not None else device.pcie_gen  # type: ignore[union-attr]
    lanes = hw.pcie_lanes if hw.pcie_lanes is not None else device.pcie_lanes  # type: ignore[union-attr]
    try:
        gbps = link_gbps(gen, lanes, memory)
    except MoesimInputError as e:
        fail(f"hardware.pcie_gen: {e}")
    what = f"hardware.pcie_gen={gen} / pcie_lanes={lanes} / host_memory={memory} (moesim.hardware.pcie)"
    return profile.with_tables([pcie_table(profile, gbps, hw.h2d_overhead_us, what)])


def is_native(model: ModelSpec, expert_dtype: str | None) -> bool:
    """The format stores experts as the model spec already does (a plain type of the same width)."""
    if expert_dtype is None:
        return True
    fmt = get_format(expert_dtype)
    return fmt.kind == "plain" and fmt.bits == 8 * DTYPE_BYTES.get(model.dtype, 0)


def apply_expert_format(
    sc: Scenario, model: ModelSpec, profile: LatencyProfile, device: DeviceSpec | None
) -> tuple[ModelSpec, LatencyProfile]:
    """``model.expert_dtype``: bytes per expert (copies, caches, memory) and the FFN's cost."""
    from moesim.hardware.quantized import quantized_expert_table

    key = sc.model.expert_dtype
    if is_native(model, key):
        return model, profile
    assert key is not None  # is_native(None) is True
    fmt = get_format(key)
    if device is None:
        fail(
            f"model.expert_dtype: profile {profile.name} names no catalog device to estimate the "
            "quantised expert FFN on; use hardware.profile: estimated:<device>"
        )
    assert device is not None
    table = quantized_expert_table(profile, model, fmt, device)
    quantised = dataclasses.replace(model, expert_bytes=round(fmt.bytes_per_expert(model)))
    return quantised, profile.with_tables([table])


def expert_slots(sc: Scenario, model: ModelSpec) -> int:
    """Routed experts resident on the GPU at once: the cache's slots over all layers."""
    L, E, c = model.num_moe_layers, model.num_experts, sc.cache.capacity
    slots = c * L if sc.cache.scope == "per-layer" else c
    return max(0, min(slots, L * E))


def check_memory(
    sc: Scenario, native: ModelSpec, trace: Trace, device: DeviceSpec | None, prompt_tokens: int
) -> None:
    """Dense weights + KV cache + expert slots x bytes must fit the GPU (``hardware.memory_gb``
    overrides the device's). Skipped when neither names a capacity (e.g. a CPU-measured profile)."""
    from moesim.hardware.memory import check_gpu_memory

    hw = sc.hardware
    if device is None and hw.memory_gb is None:
        return
    lens = trace.seq_offsets[1:] - trace.seq_offsets[:-1]
    context = prompt_tokens + (int(lens.max()) if len(lens) else 0)
    check = check_gpu_memory(
        native,
        expert_slots=expert_slots(sc, native),
        context=max(1, context),
        batch=sc.batch,
        expert_dtype=None if is_native(native, sc.model.expert_dtype) else sc.model.expert_dtype,
        dense_dtype=sc.model.dense_dtype or native.dtype,
        device=device,
        memory_gb=hw.memory_gb,
    )
    if not check.fits:
        fail(
            f"{check.message()} (keys: cache.capacity, model.expert_dtype, model.dense_dtype, batch, "
            "prompt_tokens, hardware.memory_gb)"
        )
