"""Turn the core's decision counters and an executor's RunStats into docs/design.md's result schema.

The schema is typed here (``Summary`` and its sections, TypedDicts: ``summary.json`` is their JSON
form, so readers index them by the same keys and a type checker sees a misspelt one). The policy
core is read through ``CoreCounters``, the counters this module needs, so metrics imports no
policy or executor code.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import Any, Protocol, TypedDict

import numpy as np
import pandas as pd

from moesim.metrics.stats import RunStats


class CoreCounters(Protocol):
    """What a run's summary reads from the policy core (``moesim.policies.core.PolicyCore``),
    read-only."""

    @property
    def L(self) -> int: ...

    @property
    def accesses(self) -> int: ...

    @property
    def present(self) -> int: ...

    @property
    def misses(self) -> int: ...

    @property
    def misses_cpu(self) -> int: ...

    @property
    def misses_skipped(self) -> int: ...

    @property
    def misses_substituted(self) -> int: ...

    @property
    def bypassed(self) -> int: ...

    @property
    def prefetch_issued(self) -> int: ...

    @property
    def prefetch_useful(self) -> int: ...

    @property
    def prefetch_stale(self) -> int: ...

    @property
    def evictions(self) -> int: ...

    @property
    def refetches(self) -> int: ...

    @property
    def dram_hits(self) -> int: ...

    @property
    def dram_misses(self) -> int: ...

    @property
    def dram_evictions(self) -> int: ...

    @property
    def layer_accesses(self) -> Sequence[int]: ...

    @property
    def layer_present(self) -> Sequence[int]: ...

    @property
    def layer_prefetch_issued(self) -> Sequence[int]: ...

    @property
    def layer_prefetch_useful(self) -> Sequence[int]: ...

    @property
    def layer_evictions(self) -> Sequence[int]: ...


class Percentiles(TypedDict):
    mean: float
    p50: float
    p90: float
    p99: float


class Counts(TypedDict):
    tokens: int
    decode_steps: int
    layer_steps: int
    accesses: int
    hits: int
    late_hits: int
    misses: int
    hit_rate: float
    misses_fetched: int
    misses_cpu: int
    misses_skipped: int
    misses_substituted: int
    misses_streamed: int


class Quality(TypedDict):
    lossy_accesses: int
    lossy_fraction: float


class Latency(TypedDict):
    tpot_ms: Percentiles
    compute_only_tpot_ms: float
    ttft_ms: Percentiles | None
    stall_ms_total: float
    stall_ms_per_layer: list[float]
    makespan_ms: float


class Traffic(TypedDict):
    bytes_h2d: int
    bytes_demand: int
    bytes_prefetch: int
    bytes_prefetch_wasted: int
    bytes_ssd_read: int
    bytes_on_demand_baseline: int
    ratio_bytes_vs_on_demand: float | None


class Prefetch(TypedDict):
    issued: int
    useful: int
    late: int
    wasted: int
    cancelled: int
    stale: int
    lead_time_ms_mean: float | None
    slack_ms_mean: float | None


class TierHitRate(TypedDict):
    gpu: float
    dram: float


class CacheSummary(TypedDict):
    evictions: int
    churn: float
    refetches: int
    tier_hit_rate: TierHitRate
    dram_evictions: int


class RequestPercentiles(TypedDict):
    p50: float
    p90: float
    p99: float


class Requests(TypedDict):
    """Per-request latencies under continuous batching (ms from arrival)."""

    requests: int
    finished: int
    queueing_ms: RequestPercentiles | None
    ttft_ms: RequestPercentiles | None
    e2e_ms: RequestPercentiles | None


class _SummaryBase(TypedDict):
    counts: Counts
    quality: Quality
    latency: Latency
    traffic: Traffic
    prefetch: Prefetch
    cache: CacheSummary
    provenance: dict[str, Any]  # inputs and their hashes: as open-ended as the scenario


class Summary(_SummaryBase, total=False):
    """``summary.json``: every section always, ``requests`` only under continuous batching."""

    requests: Requests


def _r(x: float) -> float:
    # Rounded so that summary.json reads well; inputs are deterministic, so this is byte-stable.
    return float(round(float(x), 6))


def _pct(values: np.ndarray) -> Percentiles:
    if len(values) == 0:
        return {"mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"mean": _r(values.mean()), "p50": _r(p50), "p90": _r(p90), "p99": _r(p99)}


_ARRAY_DTYPES = {"q": np.dtype(np.int64), "d": np.dtype(np.float64)}


def _column(values: Sequence[float] | array) -> Any:
    """A tokens-table column from a ``RunStats`` series: a non-empty int64/float64 array as a view
    (the DataFrame copies it once into its block), anything else as a list, which pandas types
    from its values as it did when the series were lists (an empty column stays ``object``)."""
    if isinstance(values, array) and len(values) and values.typecode in _ARRAY_DTYPES:
        return np.frombuffer(values, dtype=_ARRAY_DTYPES[values.typecode])
    return list(values)


def build_tables(
    core: CoreCounters, stats: RunStats, layer_indices: tuple[int, ...]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    tokens = pd.DataFrame(
        {
            "group": _column(stats.tok_group),
            "step": _column(stats.tok_step),
            "batch": _column(stats.tok_batch),
            "tpot_ms": _column(stats.tok_latency_ms),
            "compute_ms": _column(stats.tok_compute_ms),
            "stall_ms": _column(stats.tok_stall_ms),
            "hits": _column(stats.tok_hits),
            "late_hits": _column(stats.tok_late),
            "misses": _column(stats.tok_misses),
            "bytes_h2d": _column(stats.tok_bytes_h2d),
            "evictions": _column(stats.tok_evictions),
            "refetches": _column(stats.tok_refetches),
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


def _samples(values: array) -> np.ndarray:
    """A read-only float64 view of a ``RunStats`` sample array (no copy: at a million tokens under
    ARC each array holds tens of millions of samples, hundreds of MB)."""
    if not len(values):
        return np.zeros(0)
    view = np.frombuffer(values, dtype=np.float64)
    view.flags.writeable = False
    return view


def _nan_padded(values: np.ndarray, n: int) -> np.ndarray:
    if len(values) == n:
        return values
    out = np.full(n, np.nan)
    out[: len(values)] = values
    return out


def build_extras(stats: RunStats) -> pd.DataFrame:
    """Per useful prefetch: lead time (issue to demand) and slack (arrival to demand), in ms.

    The summary keeps only their means; the prefetch-waste report plots the distributions, and
    ``lead_ms - slack_ms`` is each prefetch's issue-to-arrival time (queueing + copy). A column
    shorter than the other is padded with NaN at its end.

    The columns are read-only views of ``stats``' sample arrays, not copies (only a shorter column
    is copied, to pad it): while the table lives those arrays keep their memory and cannot grow
    (appending raises BufferError), so build it once the run is over."""
    lead, slack = _samples(stats.lead_samples), _samples(stats.slack_samples)
    n = max(len(lead), len(slack))
    return pd.DataFrame({"lead_ms": _nan_padded(lead, n), "slack_ms": _nan_padded(slack, n)}, copy=False)


def build_summary(
    core: CoreCounters,
    stats: RunStats,
    tokens: pd.DataFrame,
    on_demand_bytes: int,
    provenance: dict[str, Any],
) -> Summary:
    late = int(sum(stats.layer_late))
    hits = core.present - late
    n_tokens = int(tokens["batch"].sum())
    bytes_demand = int(sum(stats.layer_bytes_demand))
    bytes_prefetch = int(sum(stats.layer_bytes_prefetch))
    bytes_h2d = bytes_demand + bytes_prefetch
    wasted = int(sum(stats.layer_prefetch_wasted))
    cancelled = int(sum(stats.layer_prefetch_cancelled))
    lead, slack = _samples(stats.lead_samples), _samples(stats.slack_samples)
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


def _request_percentiles(xs: list[float]) -> RequestPercentiles | None:
    if not xs:
        return None
    p50, p90, p99 = (round(float(v), 6) for v in np.percentile(xs, [50, 90, 99]))
    return {"p50": p50, "p90": p90, "p99": p99}


def request_summary(requests: Sequence[Any]) -> Requests:
    """Per-request latencies under continuous batching (ms from arrival); ``requests`` are the
    batcher's records (``arrival``, ``admitted``, ``first_token``, ``finish``; -1 while unset)."""
    done = [r for r in requests if r.finish >= 0]
    return {
        "requests": len(requests),
        "finished": len(done),
        "queueing_ms": _request_percentiles([r.admitted - r.arrival for r in done]),
        "ttft_ms": _request_percentiles([r.first_token - r.arrival for r in done]),
        "e2e_ms": _request_percentiles([r.finish - r.arrival for r in done]),
    }
