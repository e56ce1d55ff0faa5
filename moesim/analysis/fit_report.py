"""How close a synthetic trace is to the real one it was fitted to (``moesim trace synth --like
TRACE --report DIR``): report.md, comparison.csv, hitrate.csv and figures, from the trace statistics
of ``moesim.analysis.stats`` on both traces.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from moesim.traces.fit import FittedParams
from moesim.traces.trace import Trace


def fit_report(
    real: Trace,
    synth: Trace,
    out: str | Path,
    *,
    capacities: Sequence[int] | None = None,
    params: FittedParams | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Compare real and synthetic traces: report.md, comparison.csv, hitrate.csv, PNGs."""
    import pandas as pd

    from moesim.analysis.stats import REUSE_BINS, compute_stats, curves_frame
    from moesim.io import atomic_write_json, atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if capacities is None:
        from moesim.analysis.hitrate import default_capacities

        capacities = default_capacities(real)
    rs = compute_stats(real, capacities=capacities, replay_progress=progress)
    ss = compute_stats(synth, capacities=capacities, replay_progress=progress)
    rsum, ssum = rs.summary(), ss.summary()
    rows = []
    for key, label in (
        ("entropy_bits", "routing entropy (bits, mean over layers)"),
        ("top10_share", "top-10 experts' share of a layer's load"),
        ("top20_share", "top-20 experts' share"),
        ("gini", "Gini of per-expert load"),
        ("consecutive_overlap", "consecutive-token top-k overlap (of k)"),
        ("adjacent_layer_mi_mm_bits", "adjacent-layer top-1 MI (bits, Miller-Madow)"),
        ("adjacent_layer_mi_normalized", "adjacent-layer MI / H(later layer)"),
    ):
        a, b = rsum["mean"][key], ssum["mean"][key]
        rows.append(
            {
                "metric": label,
                "real": a,
                "synthetic": b,
                "difference": b - a,
                "relative": (b - a) / a if a else float("nan"),
            }
        )
    for lag, a in rsum["overlap_by_lag"].items():
        b = ssum["overlap_by_lag"][lag]
        rows.append(
            {
                "metric": f"overlap at lag {lag}",
                "real": a,
                "synthetic": b,
                "difference": b - a,
                "relative": (b - a) / a if a else float("nan"),
            }
        )
    for key in ("share_distance_1", "share_within_8", "share_beyond_64"):
        a, b = rsum["reuse_distance"][key], ssum["reuse_distance"][key]
        rows.append(
            {
                "metric": f"reuse distance: {key}",
                "real": a,
                "synthetic": b,
                "difference": b - a,
                "relative": (b - a) / a if a else float("nan"),
            }
        )
    hit_rows = []
    for pol in rs.curves:
        for cap, a, b in zip(rs.curves[pol].capacities, rs.curves[pol].hit_rates, ss.curves[pol].hit_rates):
            hit_rows.append(
                {"policy": pol, "capacity": cap, "real": a, "synthetic": b, "difference_pp": 100 * (b - a)}
            )
            rows.append(
                {
                    "metric": f"{pol} hit rate @ {cap}",
                    "real": a,
                    "synthetic": b,
                    "difference": b - a,
                    "relative": (b - a) / a if a else float("nan"),
                }
            )
    comp = pd.DataFrame(rows)
    atomic_write_text(
        out / "comparison.csv", comp.to_csv(index=False, float_format="%.6g", lineterminator="\n")
    )
    hits = pd.DataFrame(hit_rows)
    atomic_write_text(out / "hitrate.csv", hits.to_csv(index=False, float_format="%.6g", lineterminator="\n"))
    both = pd.concat(
        [curves_frame(rs.curves).assign(trace="real"), curves_frame(ss.curves).assign(trace="synthetic")]
    )
    atomic_write_text(
        out / "hitrate_curves.csv", both.to_csv(index=False, float_format="%.6g", lineterminator="\n")
    )
    _report_plots(rs, ss, out, REUSE_BINS)
    worst = float(hits["difference_pp"].abs().max()) if len(hits) else 0.0
    ov_rel = (ssum["mean"]["consecutive_overlap"] - rsum["mean"]["consecutive_overlap"]) / rsum["mean"][
        "consecutive_overlap"
    ]
    verdict = {
        "max_abs_hit_rate_difference_pp": worst,
        "consecutive_overlap_relative_difference": ov_rel,
        "hit_rates_within_5pp": worst <= 5.0,
        "overlap_within_10pct": abs(ov_rel) <= 0.10,
    }
    atomic_write_json(out / "fit.json", {"verdict": verdict, "params_fit": params.fit if params else None})
    lines = [
        "# Synthetic vs real trace",
        "",
        f"- real: {rs.meta['path'] or rs.meta['model']} ({rs.meta['sequences']} sequences, {rs.meta['decode_tokens']} decode tokens, "
        f"L={rs.meta['num_layers']}, E={rs.meta['num_experts']}, k={rs.meta['top_k']})",
        f"- synthetic: {ss.meta['sequences']} sequences, {ss.meta['decode_tokens']} decode tokens",
        f"- largest hit-rate difference: {worst:.2f} percentage points (LRU and Belady, global capacity)",
        f"- consecutive-token overlap: real {rsum['mean']['consecutive_overlap']:.3f}, synthetic "
        f"{ssum['mean']['consecutive_overlap']:.3f} ({100 * ov_rel:+.1f}%)",
        "",
        "## Hit rate vs capacity",
        "",
        "| policy | capacity | real | synthetic | difference (pp) |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r.policy} | {r.capacity} | {r.real:.4f} | {r.synthetic:.4f} | {r.difference_pp:+.2f} |"
        for r in hits.itertuples()
    ]
    lines += ["", "## Statistics", "", "| metric | real | synthetic | difference |", "|---|---:|---:|---:|"]
    lines += [
        f"| {r.metric} | {r.real:.4f} | {r.synthetic:.4f} | {r.difference:+.4f} |" for r in comp.itertuples()
    ]
    lines += [
        "",
        "Plots: `popularity.png` (sorted per-layer load), `entropy.png`, `mutual_information.png` (adjacent layers), "
        "`reuse_distance.png`, `hitrate.png`. Definitions: docs/trace-format.md and moesim/analysis/stats.py.",
        "",
    ]
    atomic_write_text(out / "report.md", "\n".join(lines))
    return verdict


def _report_plots(rs: Any, ss: Any, out: Path, reuse_bins: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from moesim.analysis.stats import _save

    L, E = rs.counts.shape
    fig, ax = plt.subplots(figsize=(6, 4))
    for st, colour, label in ((rs, "tab:blue", "real"), (ss, "tab:orange", "synthetic")):
        shares = np.sort(st.counts, axis=1)[:, ::-1] / np.maximum(1, st.counts.sum(1, keepdims=True))
        ax.plot(np.arange(1, E + 1), shares.mean(0), color=colour, label=label)
        ax.fill_between(np.arange(1, E + 1), shares.min(0), shares.max(0), color=colour, alpha=0.15)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="expert rank",
        ylabel="share of layer's load",
        title="Popularity (band = layers)",
    )
    ax.legend()
    _save(fig, out / "popularity.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    x = np.arange(L)
    ax.plot(x, [r["entropy_bits"] for r in rs.layers], marker="o", label="real")
    ax.plot(x, [r["entropy_bits"] for r in ss.layers], marker="s", label="synthetic")
    ax.plot(x, [r["consecutive_overlap"] for r in rs.layers], marker="o", ls="--", label="real overlap")
    ax.plot(x, [r["consecutive_overlap"] for r in ss.layers], marker="s", ls="--", label="synthetic overlap")
    ax.set(xlabel="MoE layer", title="Entropy (bits) and consecutive overlap per layer")
    ax.legend(fontsize=8)
    _save(fig, out / "entropy.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x[:-1], [rs.mi_mm[i, i + 1] for i in range(L - 1)], marker="o", label="real")
    ax.plot(x[:-1], [ss.mi_mm[i, i + 1] for i in range(L - 1)], marker="s", label="synthetic")
    ax.set(xlabel="layer i (-> i+1)", ylabel="bits", title="Adjacent-layer top-1 MI (Miller-Madow)")
    ax.legend()
    _save(fig, out / "mutual_information.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for st, label in ((rs, "real"), (ss, "synthetic")):
        h = st.temporal.reuse_hist
        ax.plot(np.arange(1, reuse_bins + 1), h[:-1] / max(1, h.sum()), label=label)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="reuse distance (tokens)",
        ylabel="share of reuses",
        title="Reuse distance",
    )
    ax.legend()
    _save(fig, out / "reuse_distance.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for st, ls, label in ((rs, "-", "real"), (ss, "--", "synthetic")):
        for pol, c in st.curves.items():
            ax.plot(c.capacities, c.hit_rates, ls=ls, marker="o", label=f"{pol} {label}")
    ax.set(
        xscale="log",
        xlabel="capacity (expert slots, global)",
        ylabel="hit rate",
        ylim=(0, 1),
        title="Hit rate vs capacity",
    )
    ax.legend(fontsize=8)
    _save(fig, out / "hitrate.png")
