"""The comparison table: a comparison's sweep table cut to the figures its report plots.

Lives in metrics (not experiments) so that reports read it without importing the experiment runner.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from moesim.metrics.table import PARAM_PREFIX

PRED, CACHE, CAP = "predictor.name", "cache.policy", "cache.capacity"
ROLE = "role"


# Columns of the comparison table: (name, sweep column, how to derive it)
def _col(df: pd.DataFrame, name: str) -> pd.Series:
    return (
        pd.to_numeric(df[name], errors="coerce")
        if name in df.columns
        else pd.Series([float("nan")] * len(df))
    )


def comparison_table(table: pd.DataFrame, roles: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per run with the figures the comparison plots use."""
    df = table.copy()
    if roles is not None:
        role = pd.Series(list(roles), dtype=object)
        df[ROLE] = role.iloc[df["point"].to_numpy()].to_numpy()
    elif ROLE not in df.columns:
        df[ROLE] = "policy"
    cap = (
        _col(df, PARAM_PREFIX + CAP)
        if PARAM_PREFIX + CAP in df.columns
        else _col(df, "provenance.scenario.cache.capacity")
    )
    pf_bytes = _col(df, "traffic.bytes_prefetch")
    wasted = _col(df, "traffic.bytes_prefetch_wasted")
    accesses = _col(df, "counts.accesses")
    out = pd.DataFrame(
        {
            "point": df["point"],
            "status": df["status"],
            "role": df[ROLE],
            "predictor": df[PARAM_PREFIX + PRED],
            "cache": df[PARAM_PREFIX + CACHE],
            "capacity": cap,
            "hit_rate": _col(df, "counts.hit_rate"),
            "late_hit_rate": _col(df, "counts.late_hits") / accesses,
            "miss_rate": _col(df, "counts.misses") / accesses,
            "tpot_ms_mean": _col(df, "latency.tpot_ms.mean"),
            "tpot_ms_p50": _col(df, "latency.tpot_ms.p50"),
            "tpot_ms_p99": _col(df, "latency.tpot_ms.p99"),
            "stall_ms_total": _col(df, "latency.stall_ms_total"),
            "bytes_h2d": _col(df, "traffic.bytes_h2d"),
            "bytes_on_demand_baseline": _col(df, "traffic.bytes_on_demand_baseline"),
            "ratio_bytes_vs_on_demand": _col(df, "traffic.ratio_bytes_vs_on_demand"),
            "bytes_prefetch": pf_bytes,
            "bytes_prefetch_wasted": wasted,
            "waste_fraction": (wasted / pf_bytes).where(pf_bytes > 0),
            "prefetch_issued": _col(df, "prefetch.issued"),
            "prefetch_useful": _col(df, "prefetch.useful"),
            "prefetch_late": _col(df, "prefetch.late"),
            "churn_per_token": _col(df, "cache.churn"),
            "refetches": _col(df, "cache.refetches"),
            "trace_sha256": df.get("provenance.trace_sha256"),
            "profile_sha256": df.get("provenance.profile_sha256"),
            "error": df["error"],
        }
    )
    return out


def check_identical_inputs(comp: pd.DataFrame) -> list[str]:
    """Which inputs differ across the runs (empty: every run replayed the same trace and profile)."""
    ok = comp[comp["status"] == "ok"]
    return [c for c in ("trace_sha256", "profile_sha256") if c in ok and ok[c].nunique(dropna=True) > 1]
