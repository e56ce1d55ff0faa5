"""Scenario link overrides: swap a profile's transfer tables for ``overhead + bytes / bandwidth``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, cast

from moesim.errors import MoesimInputError
from moesim.hardware.table import Table

if TYPE_CHECKING:
    from moesim.hardware.profile import LatencyProfile

# A two-point grid from 0 bytes to 1 TiB: the formula is linear, so interpolation is exact and
# no realistic copy falls outside it (and so none is flagged as extrapolated).
LINK_GRID_MAX_BYTES = float(2**40)
FORMULA = "overhead_us / 1e3 + bytes / (gbps * 1e6)  [ms; GB/s = 1e9 bytes/s]"


def _bandwidth(value: float, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value <= 0:
        raise MoesimInputError(
            f"{key} must be a positive number of GB/s (got {value!r}); use .inf (float('inf')) for an "
            "ideal link with zero transfer time"
        )
    return float(value)


def _overhead(value: float, key: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise MoesimInputError(f"{key} must be a finite number of microseconds >= 0 (got {value!r})")
    return float(value)


def _intercept_ms(profile: LatencyProfile, op: str) -> float:
    """The replaced table's fixed cost: its first segment extrapolated to 0 bytes, floored at 0."""
    t = profile.tables.get(op)
    if t is None or "bytes" not in t.axes:
        return 0.0
    # Ops over bytes have no other axis (OP_AXES), so the table is 1-D: ``ms`` is a tuple of floats.
    g, v = t.grid[0], cast("tuple[float, ...]", t.ms)
    if len(g) == 1:
        return 0.0
    slope = (v[1] - v[0]) / (g[1] - g[0])
    return max(0.0, min(v[0], v[0] - slope * g[0]))


def fixed_cost_ms(profile: LatencyProfile, op: str) -> float:
    """A copy table's fixed cost: its value extrapolated to 0 bytes, floored at 0 (0 if none)."""
    return _intercept_ms(profile, op)


def _table(
    profile: LatencyProfile, op: str, gbps: float, overhead_us: float | None, bw_key: str, oh_key: str
) -> Table:
    gbps = _bandwidth(gbps, bw_key)
    if overhead_us is None:
        overhead_ms = _intercept_ms(profile, op)
        overhead_from = f"kept from the replaced {op} table (its value at 0 bytes)"
    else:
        overhead_ms = _overhead(overhead_us, oh_key) / 1e3
        overhead_from = oh_key
    per_byte = 0.0 if math.isinf(gbps) else 1.0 / (gbps * 1e6)
    replaced = profile.tables.get(op)
    prov = {
        "kind": "estimated",
        "formula": FORMULA,
        "inputs": {
            "gbps": "inf" if math.isinf(gbps) else gbps,
            "overhead_us": overhead_ms * 1e3,
            "overhead_from": overhead_from,
        },
        "note": f"scenario link override ({bw_key})",
        "replaces": None if replaced is None else replaced.provenance,
    }
    return Table(
        op=op,
        axes=("bytes",),
        grid=((0.0, LINK_GRID_MAX_BYTES),),
        ms=(overhead_ms, overhead_ms + per_byte * LINK_GRID_MAX_BYTES),
        provenance=prov,
    )


def _shifted(profile: LatencyProfile, op: str, overhead_us: float, bw_key: str, oh_key: str) -> Table:
    """Keep the table's bandwidth curve, replace its fixed cost: ``old - intercept + overhead``."""
    new_ms = _overhead(overhead_us, oh_key) / 1e3
    old = profile.tables.get(op)
    if old is None or old.axes != ("bytes",):
        raise MoesimInputError(
            f"{oh_key} is set without {bw_key} and profile {profile.name} has no {op} table over bytes "
            f"to keep the bandwidth from; set {bw_key} too"
        )
    shift = new_ms - _intercept_ms(profile, op)
    return Table(
        op=op,
        axes=old.axes,
        grid=old.grid,
        ms=tuple(max(0.0, v + shift) for v in cast("tuple[float, ...]", old.ms)),  # 1-D: axes checked
        provenance={
            "kind": "estimated",
            "formula": "replaced table - its fixed cost (value at 0 bytes) + overhead_us / 1e3  [ms]",
            "inputs": {"overhead_us": new_ms * 1e3, "removed_fixed_ms": new_ms - shift},
            "note": f"scenario link override ({oh_key}), bandwidth kept from the replaced table",
            "replaces": old.provenance,
        },
    )


def link_tables(
    profile: LatencyProfile,
    h2d_gbps: float | None,
    overhead_us: float | None,
    ssd_gbps: float | None,
    ssd_overhead_us: float | None,
) -> list[Table]:
    out = []
    for op, gbps, oh, bw_key, oh_key in (
        ("h2d_pinned", h2d_gbps, overhead_us, "hardware.h2d_gbps", "hardware.h2d_overhead_us"),
        ("ssd_read", ssd_gbps, ssd_overhead_us, "hardware.ssd_gbps", "hardware.ssd_overhead_us"),
    ):
        if gbps is not None:
            out.append(_table(profile, op, gbps, oh, bw_key, oh_key))
        elif oh is not None:
            out.append(_shifted(profile, op, oh, bw_key, oh_key))
    return out


def pcie_table(profile: LatencyProfile, gbps: float, overhead_us: float | None, what: str) -> Table:
    """``h2d_pinned`` as ``overhead + bytes / gbps`` for a link given by the PCIe keys (``what``
    names them in the provenance); overhead None keeps the replaced table's fixed cost."""
    return _table(profile, "h2d_pinned", gbps, overhead_us, what, "hardware.h2d_overhead_us")


def pageable_table(profile: LatencyProfile, factor: float) -> Table:
    """``h2d_pinned`` stretched for pageable host memory: the fixed cost kept, the per-byte part
    divided by ``factor`` (pageable copies go through the driver's staging buffer)."""
    old = profile.tables.get("h2d_pinned")
    if old is None or old.axes != ("bytes",):
        raise MoesimInputError(
            f"hardware.host_memory: pageable needs an h2d_pinned table over bytes in profile "
            f"{profile.name}; set hardware.h2d_gbps to the pageable bandwidth instead"
        )
    fixed = _intercept_ms(profile, "h2d_pinned")
    ms = cast("tuple[float, ...]", old.ms)
    return Table(
        op="h2d_pinned",
        axes=old.axes,
        grid=old.grid,
        ms=tuple(fixed + max(0.0, v - fixed) / factor for v in ms),
        provenance={
            "kind": "estimated",
            "formula": "fixed + (pinned - fixed) / pageable_factor  [ms]",
            "inputs": {"pageable_factor": factor, "fixed_ms": fixed},
            "note": "scenario hardware.host_memory: pageable (pinned rate x pageable_factor, an assumption)",
            "replaces": old.provenance,
        },
    )
