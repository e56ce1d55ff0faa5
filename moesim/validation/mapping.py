"""A catalog case's scenario keys, as the scenario schema of this moesim can take them.

The catalog names the fidelity keys of issue 13 (``model.expert_dtype``, ``hardware.pcie_gen``,
``runtime.preset``, ``miss.writeback``, ...) whether or not this build's schema knows them yet. A key
the schema knows is passed as is; one it does not know is replaced by a documented fallback (below)
or dropped, and every replacement or drop is written down in the case's notes, so the report says
exactly what was simulated. When the keys land, the same command uses them with no change here.

Fallbacks (only for keys the schema lacks):

- ``hardware.pcie_gen`` / ``pcie_lanes`` / ``host_memory`` -> ``hardware.h2d_gbps`` =
  ``link_gbps(gen, lanes, memory)`` (moesim/hardware/pcie.py, the measured efficiency per generation).
- ``model.expert_dtype`` -> the link bandwidth is multiplied by bf16 bytes / quantised bytes per
  expert (``precision.expert_bytes``), so a copy takes the quantised expert's time; the expert's
  compute stays the bf16 roofline (no dequantisation cost).
- ``miss.writeback: true`` -> the link bandwidth is halved: every copy into the cache is paired with
  a device-to-host copy of the same size on the same stream (what the source's code does for every
  load, demand or prefetch; docs/validation.md). Streamed (bypass) copies are halved too.
- ``model.dense_dtype``, ``runtime.*``, ``hardware.memory_gb``: dropped (noted).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from moesim.validation.catalog import PublishedCase, PublishedSource

LINK_KEYS = ("hardware.pcie_gen", "hardware.pcie_lanes", "hardware.host_memory")


def schema_keys() -> frozenset[str]:
    """Every dotted key the scenario schema of this build accepts (section.key and top-level)."""
    from moesim.experiments.scenario import Scenario

    keys: set[str] = set()
    for f in dataclasses.fields(Scenario):
        if f.metadata.get("internal"):
            continue
        default = f.default_factory() if callable(f.default_factory) else None  # type: ignore[misc]
        if default is not None and dataclasses.is_dataclass(default):
            keys.update(f"{f.name}.{g.name}" for g in dataclasses.fields(default))
        else:
            keys.add(f.name)
    return frozenset(keys)


@dataclass
class MappedScenario:
    """The override values of one case and what was done to keys this build does not know."""

    values: dict[str, Any]
    preset: str | None  # the runtime preset the case runs with (None: the schema has no presets)
    fallbacks: list[str] = field(default_factory=list)  # keys replaced by a documented fallback
    dropped: list[str] = field(default_factory=list)  # keys this build cannot express


def _link_gbps(wanted: dict[str, Any], device_key: str) -> float:
    from moesim.hardware import get_device
    from moesim.hardware.pcie import link_gbps

    dev = get_device(device_key)
    gen = wanted.get("hardware.pcie_gen", dev.pcie_gen)
    lanes = wanted.get("hardware.pcie_lanes", dev.pcie_lanes)
    memory = wanted.get("hardware.host_memory", "pinned")
    return float(link_gbps(int(gen), int(lanes), memory))


def _quant_factor(model_name: str, dtype: str) -> float:
    """The bytes moesim copies per expert of ``model_name`` (its spec's dtype) over ``dtype``'s."""
    from moesim.models import get_model
    from moesim.models.precision import expert_bytes

    model = get_model(model_name)
    return float(model.expert_bytes) / float(expert_bytes(model, dtype))


def map_case(
    case: PublishedCase, source: PublishedSource, known: frozenset[str], trace_path: str
) -> MappedScenario:
    """``case``'s scenario values for a schema that knows the keys ``known``."""
    wanted = dict(case.scenario)
    if source.runtime_preset and "runtime.preset" not in wanted:
        wanted["runtime.preset"] = source.runtime_preset
    wanted["trace.path"] = trace_path
    out = MappedScenario({}, None)
    for key, value in wanted.items():
        if key in known:
            out.values[key] = value
        elif key not in LINK_KEYS and key not in ("model.expert_dtype", "miss.writeback"):
            out.dropped.append(key)
    out.preset = out.values.get("runtime.preset")
    _link_fallbacks(wanted, known, out)
    return out


def _link_fallbacks(wanted: dict[str, Any], known: frozenset[str], out: MappedScenario) -> None:
    link_missing = [k for k in LINK_KEYS if k in wanted and k not in known]
    dtype = wanted.get("model.expert_dtype")
    dtype_missing = dtype is not None and "model.expert_dtype" not in known
    wb_missing = wanted.get("miss.writeback") is True and "miss.writeback" not in known
    missing = (
        link_missing
        + (["model.expert_dtype"] if dtype_missing else [])
        + (["miss.writeback"] if wb_missing else [])
    )
    if not missing:
        return
    profile = str(wanted.get("hardware.profile", ""))
    device = profile.split(":", 1)[1] if profile.startswith("estimated:") else None
    if "hardware.h2d_gbps" in wanted or "hardware.h2d_gbps" not in known or device is None:
        out.dropped.extend(missing)
        return
    gbps = _link_gbps(wanted, device)
    note = f"hardware.h2d_gbps={gbps:.4g} from {', '.join(link_missing) or 'the device link'}"
    if dtype_missing:
        factor = _quant_factor(str(wanted.get("model.name")), str(dtype))
        gbps *= factor
        note += f", x{factor:.4g} for model.expert_dtype={dtype} (copy bytes; compute stays bf16)"
    if wb_missing:
        gbps /= 2.0
        note += (
            ", /2 for miss.writeback (each copy paired with a same-size device-to-host copy on its stream)"
        )
    out.values["hardware.h2d_gbps"] = round(gbps, 6)
    out.fallbacks.append(note)
