"""Turn the core's decision counters and an executor's RunStats into docs/design.md's result schema."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from moesim.metrics.stats import RunStats
from moesim.policies.core import PolicyCore


def _r(x: float) -> float:
    # Rounded so that summary.json reads well; inputs are deterministic, so this is byte-stable.
    return float(round(float(x), 6))


def _pct(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {"mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"mean": _r(values.mean()), "p50": _r(p50), "p90": _r(p90), "p99": _r(p99)}


def build_tables(
    core: PolicyCore, stats: RunStats, layer_indices: tuple[int, ...]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    tokens = pd.DataFrame(
        {
            "group": stats.tok_group,
            "step": stats.tok_step,
            "batch": stats.tok_batch,
            "tpot_ms": stats.tok_latency_ms,
            "compute_ms": stats.tok_compute_ms,
            "stall_ms": stats.tok_stall_ms,
            "hits": stats.tok_hits,
            "late_hits": stats.tok_late,
            "misses": stats.tok_misses,
            "bytes_h2d": stats.tok_bytes_h2d,
            "evictions": stats.tok_evictions,
            "refetches": stats.tok_refetches,
        }
    )
    acc = np.asarray(core.layer_accesses)
    late = np.asarray(stats.layer_late)
    hits = np.asarray(core.layer_present) - late
    layers = pd.DataFrame(
        {
            "layer": np.arange(core.L),
            "model_layer": list(layer_indices) if layer_indices else np.arange(core.L),
            "accesses": acc,
            "hits": hits,
            "late_hits": late,
            "misses": acc - np.asarray(core.layer_present),
            "hit_rate": np.divide(hits, acc, out=np.zeros(core.L), where=acc > 0),
            "stall_ms": stats.layer_stall_ms,
            "prefetch_issued": core.layer_prefetch_issued,
            "prefetch_useful": core.layer_prefetch_useful,
            "prefetch_wasted": stats.layer_prefetch_wasted,
            "prefetch_cancelled": stats.layer_prefetch_cancelled,
            "bytes_demand": stats.layer_bytes_demand,
            "bytes_prefetch": stats.layer_bytes_prefetch,
            "bytes_prefetch_wasted": stats.layer_bytes_wasted,
            "evictions": core.layer_evictions,
        }
    )
    return tokens, layers


def build_extras(stats: RunStats) -> pd.DataFrame:
    """Per useful prefetch: lead time (issue to demand) and slack (arrival to demand), in ms.

    The summary keeps only their means; the prefetch-waste report plots the distributions, and
    ``lead_ms - slack_ms`` is each prefetch's issue-to-arrival time (queueing + copy)."""
    lead = np.frombuffer(stats.lead_samples, dtype=np.float64) if len(stats.lead_samples) else np.zeros(0)
    slack = np.frombuffer(stats.slack_samples, dtype=np.float64) if len(stats.slack_samples) else np.zeros(0)
    n = max(len(lead), len(slack))
    pad = lambda a: np.concatenate([a, np.full(n - len(a), np.nan)]) if len(a) < n else a.copy()  # noqa: E731
    return pd.DataFrame({"lead_ms": pad(lead), "slack_ms": pad(slack)})


def build_summary(
    core: PolicyCore,
    stats: RunStats,
    tokens: pd.DataFrame,
    on_demand_bytes: int,
    provenance: dict[str, Any],
) -> dict[str, Any]:
    late = int(sum(stats.layer_late))
    hits = core.present - late
    n_tokens = int(tokens["batch"].sum())
    bytes_demand = int(sum(stats.layer_bytes_demand))
    bytes_prefetch = int(sum(stats.layer_bytes_prefetch))
    bytes_h2d = bytes_demand + bytes_prefetch
    wasted = int(sum(stats.layer_prefetch_wasted))
    cancelled = int(sum(stats.layer_prefetch_cancelled))
    lead = np.frombuffer(stats.lead_samples, dtype=np.float64) if len(stats.lead_samples) else np.zeros(0)
    slack = np.frombuffer(stats.slack_samples, dtype=np.float64) if len(stats.slack_samples) else np.zeros(0)
    tpot = tokens["tpot_ms"].to_numpy()
    hit_rate = hits / core.accesses if core.accesses else 0.0
    dram_lookups = core.dram_hits + core.dram_misses
    dram_rate = core.dram_hits / dram_lookups if dram_lookups else 1.0  # no host tier: all in DRAM
    return {
        "counts": {
            "tokens": n_tokens,
            "decode_steps": len(tokens),
            "layer_steps": len(tokens) * core.L,
            "accesses": core.accesses,
            "hits": hits,
            "late_hits": late,
            "misses": core.misses,
            "hit_rate": _r(hit_rate),
            "misses_fetched": core.misses - core.misses_cpu - core.misses_skipped - core.misses_substituted,
            "misses_cpu": core.misses_cpu,
            "misses_skipped": core.misses_skipped,
            "misses_substituted": core.misses_substituted,
            "misses_streamed": core.bypassed,
        },
        "quality": {
            # skipped or substituted experts change the model's output: a quality risk, not a speed-up
            "lossy_accesses": core.misses_skipped + core.misses_substituted,
            "lossy_fraction": _r((core.misses_skipped + core.misses_substituted) / core.accesses)
            if core.accesses
            else 0.0,
        },
        "latency": {
            "tpot_ms": _pct(tpot),
            "compute_only_tpot_ms": _r(tokens["compute_ms"].mean()) if len(tokens) else 0.0,
            "ttft_ms": _pct(np.asarray(stats.ttft_ms)) if stats.ttft_ms else None,
            "stall_ms_total": _r(sum(stats.layer_stall_ms)),
            "stall_ms_per_layer": [_r(x) for x in stats.layer_stall_ms],
            "makespan_ms": _r(stats.makespan_ms),
        },
        "traffic": {
            "bytes_h2d": bytes_h2d,
            "bytes_demand": bytes_demand,
            "bytes_prefetch": bytes_prefetch,
            "bytes_prefetch_wasted": int(sum(stats.layer_bytes_wasted)),
            "bytes_ssd_read": stats.bytes_ssd_read,
            "bytes_on_demand_baseline": on_demand_bytes,
            "ratio_bytes_vs_on_demand": _r(bytes_h2d / on_demand_bytes) if on_demand_bytes else None,
        },
        "prefetch": {
            "issued": core.prefetch_issued,
            "useful": core.prefetch_useful,
            "late": stats.prefetch_late,
            "wasted": wasted,
            "cancelled": cancelled,
            "stale": core.prefetch_stale,
            "lead_time_ms_mean": _r(lead.mean()) if len(lead) else None,
            "slack_ms_mean": _r(slack.mean()) if len(slack) else None,
        },
        "cache": {
            "evictions": core.evictions,
            "churn": _r(core.evictions / n_tokens) if n_tokens else 0.0,
            "refetches": core.refetches,
            "tier_hit_rate": {"gpu": _r(hit_rate), "dram": _r(dram_rate)},
            "dram_evictions": core.dram_evictions,
        },
        "provenance": provenance,
    }
