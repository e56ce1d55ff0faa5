"""GPU and host-CPU specs (``data/devices.yaml``) for the roofline estimator."""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, fields
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from moesim.errors import MoesimInputError
from moesim.hardware.pcie import MEASUREMENTS, PCIE_LANE_GBPS, measured_efficiency

DEVICES_FILE = "moesim/hardware/data/devices.yaml"
# A device opts in to the per-generation measured efficiency (moesim.hardware.pcie) with this
# value of pcie_efficiency; the older entries keep their flat 0.8 so their profiles stay identical.
MEASURED = "measured"


@dataclass(frozen=True)
class CpuSpec:
    key: str
    name: str
    memory_bandwidth_gbps: float
    fp32_peak_gflops: float
    memory_efficiency: float
    compute_efficiency: float
    call_overhead_us: float
    derivation: str = ""


@dataclass(frozen=True)
class DeviceSpec:
    key: str
    name: str
    memory_gb: float
    memory_bandwidth_gbps: float
    bf16_dense_tflops: float
    pcie_gen: int
    pcie_lanes: int
    pcie_efficiency: float  # achievable fraction of the link for large pinned copies
    nvme_gbps: float  # effective sequential read of the platform's NVMe drive
    launch_overhead_us: float  # per kernel
    copy_overhead_us: float  # per host<->device copy
    host_cpu: str
    sources: tuple[str, ...] = ()
    notes: str = ""

    @property
    def pcie_gbps(self) -> float:
        """Theoretical one-direction link bandwidth (GB/s)."""
        return PCIE_LANE_GBPS[self.pcie_gen] * self.pcie_lanes

    @property
    def pcie_effective_gbps(self) -> float:
        return self.pcie_gbps * self.pcie_efficiency


_FRACTIONS = {"pcie_efficiency", "memory_efficiency", "compute_efficiency"}


def _build(cls: type, key: str, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise MoesimInputError(f"{where}: {key} must be a mapping of fields")
    names = {f.name for f in fields(cls)} - {"key"}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise MoesimInputError(
            f"{where}: {key}: unknown field {unknown[0]!r}; allowed: {', '.join(sorted(names))}"
        )
    kw: dict[str, Any] = {"key": key}
    for f in fields(cls):
        if f.name == "key":
            continue
        if f.name not in raw:
            if f.default is MISSING and f.default_factory is MISSING:
                raise MoesimInputError(f"{where}: {key}: missing field {f.name!r}")
            continue
        v = raw[f.name]
        if f.type in ("float", "int"):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise MoesimInputError(f"{where}: {key}.{f.name} must be a positive number (got {v!r})")
            if f.name in _FRACTIONS and v > 1:
                raise MoesimInputError(f"{where}: {key}.{f.name} is a fraction in (0, 1] (got {v!r})")
            v = int(v) if f.type == "int" else float(v)
        elif f.name == "sources":
            v = tuple(str(s) for s in v)
        else:
            v = str(v)
        kw[f.name] = v
    return cls(**kw)


def _resolve_measured(key: str, raw: Any) -> Any:
    """Swap ``pcie_efficiency: measured`` for the generation's measured fraction, citing it."""
    if not isinstance(raw, dict) or raw.get("pcie_efficiency") != MEASURED:
        return raw
    gen = raw.get("pcie_gen")
    if gen not in MEASUREMENTS:
        raise MoesimInputError(
            f"{DEVICES_FILE}: {key}.pcie_efficiency: measured needs pcie_gen in "
            f"{sorted(MEASUREMENTS)} (got {gen!r}); give a fraction instead"
        )
    m = MEASUREMENTS[gen]
    cite = f"pcie_efficiency {m.efficiency:.4f} = measured {m.gbps:g} GB/s / Gen{gen} x16: {m.source}"
    return {**raw, "pcie_efficiency": measured_efficiency(gen), "sources": [*raw.get("sources", []), cite]}


@lru_cache(maxsize=1)
def _catalog() -> tuple[dict[str, DeviceSpec], dict[str, CpuSpec], dict[str, Any]]:
    text = resources.files("moesim.hardware").joinpath("data/devices.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    cpus = {k: _build(CpuSpec, k, v, DEVICES_FILE) for k, v in data["cpus"].items()}
    devices = {
        k: _build(DeviceSpec, k, _resolve_measured(k, v), DEVICES_FILE) for k, v in data["devices"].items()
    }
    for d in devices.values():
        if d.pcie_gen not in PCIE_LANE_GBPS:
            raise MoesimInputError(
                f"{DEVICES_FILE}: {d.key}.pcie_gen must be one of {sorted(PCIE_LANE_GBPS)}"
            )
        if d.host_cpu not in cpus:
            raise MoesimInputError(f"{DEVICES_FILE}: {d.key}.host_cpu {d.host_cpu!r} is not under cpus")
    return devices, cpus, dict(data.get("provenance") or {})


def list_devices() -> list[str]:
    return sorted(_catalog()[0])


def list_cpus() -> list[str]:
    return sorted(_catalog()[1])


def devices_provenance() -> dict[str, Any]:
    return dict(_catalog()[2])


def get_device(key: str) -> DeviceSpec:
    devices = _catalog()[0]
    spec = devices.get(str(key).lower())
    if spec is None:
        raise MoesimInputError(
            f"unknown device {key!r} (hardware device / estimated:<device>); known: {', '.join(sorted(devices))}"
        )
    return spec


def get_cpu(key: str) -> CpuSpec:
    cpus = _catalog()[1]
    spec = cpus.get(str(key).lower())
    if spec is None:
        raise MoesimInputError(f"unknown host CPU {key!r}; known: {', '.join(sorted(cpus))}")
    return spec


def render_devices_table() -> str:
    """The markdown devices table in docs/profiles.md (a test keeps the two in step)."""
    rows = [
        "| key | device | memory GB | mem GB/s | bf16 dense TFLOP/s | PCIe | effective H2D GB/s | NVMe GB/s | launch us | host CPU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in list_devices():
        d = get_device(key)
        rows.append(
            f"| {d.key} | {d.name} | {d.memory_gb:g} | {d.memory_bandwidth_gbps:g} | {d.bf16_dense_tflops:g} "
            f"| Gen{d.pcie_gen} x{d.pcie_lanes} | {d.pcie_effective_gbps:.1f} | {d.nvme_gbps:g} "
            f"| {d.launch_overhead_us:g} | {d.host_cpu} |"
        )
    return "\n".join(rows)
