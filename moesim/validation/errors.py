"""The error arithmetic of a validation: signed error per case, |error| statistics, and the per-platform
overhead fit used for the calibrated column. Pure functions on plain numbers, so the math is tested
apart from any simulator."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


def err_pct(simulated: float, published: float) -> float:
    """Signed error of ``simulated`` against ``published`` in percent (positive: simulated slower)."""
    return 100.0 * (simulated - published) / published


def abs_stats(errors: Sequence[float]) -> dict[str, float | int | None]:
    """``n``, median, p90 (linear interpolation between order statistics) and max of |error| (%)."""
    a = np.abs(np.asarray([e for e in errors if e is not None], dtype=float))
    if a.size == 0:
        return {"n": 0, "median_abs_err_pct": None, "p90_abs_err_pct": None, "max_abs_err_pct": None}
    return {
        "n": int(a.size),
        "median_abs_err_pct": round(float(np.median(a)), 4),
        "p90_abs_err_pct": round(float(np.percentile(a, 90)), 4),
        "max_abs_err_pct": round(float(a.max()), 4),
    }


@dataclass(frozen=True)
class Row:
    """One case's inputs to the fit: which platform, the published and the simulated TPOT (ms)."""

    case_id: str
    platform: str
    published_ms: float
    simulated_ms: float


def platform_overheads(rows: Sequence[Row]) -> dict[str, dict[str, float | int]]:
    """Per platform: the per-token overhead (ms) that fits all its rows (the mean of published -
    simulated, the least-squares constant) and the number of rows it was fitted on."""
    out: dict[str, dict[str, float | int]] = {}
    for platform in sorted({r.platform for r in rows}):
        mine = [r for r in rows if r.platform == platform]
        out[platform] = {"token_overhead_ms": round(mean_gap(mine), 6), "rows": len(mine)}
    return out


def mean_gap(rows: Sequence[Row]) -> float:
    """The per-token overhead (ms) that, added to every simulated TPOT of ``rows``, makes their mean
    meet the mean published TPOT: the mean of (published - simulated), the least-squares constant."""
    return float(np.mean([r.published_ms - r.simulated_ms for r in rows]))


def secant_overhead(rows: Sequence[Row], simulate_at: Callable[[Row, float], float]) -> float:
    """The per-token overhead (ms) that makes the mean simulated TPOT of ``rows`` equal their mean
    published TPOT when the overhead is simulated (``simulate_at(row, ms)``), not just added: a
    simulated overhead can hide copies, so the response is not one for one. Start at the additive
    fit o0, simulate once there, and take one secant step through (0, mean simulated) and (o0, ...);
    exact when the response is linear."""
    pub = float(np.mean([r.published_ms for r in rows]))
    base = float(np.mean([r.simulated_ms for r in rows]))
    o0 = pub - base
    if o0 <= 0:
        return o0
    at = float(np.mean([simulate_at(r, o0) for r in rows]))
    slope = (at - base) / o0
    if slope <= 0:  # the overhead changed nothing: the additive fit is all there is
        return o0
    return o0 + (pub - at) / slope
