"""The comparison report: one HTML page with the comparison table and its plots, plus the CSV."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from moesim.errors import fail
from moesim.experiments.compare import check_identical_inputs
from moesim.io import atomic_write_text
from moesim.metrics.readers import check_point_index, read_json_object, read_result_table
from moesim.reports.html import HtmlReport, pyplot

_BOUND_STYLE = {
    "bound:belady": {"color": "black", "ls": "--", "marker": "x"},
    "bound:oracle": {"color": "0.45", "ls": ":", "marker": "+"},
}


def _series(comp: pd.DataFrame):
    """(label, role, rows sorted by capacity) per (predictor, cache) run family."""
    ok = comp[comp["status"] == "ok"]
    out = []
    for (pred, cache), rows in ok.groupby(["predictor", "cache"], sort=True):
        role = rows["role"].iloc[0]
        label = f"{pred} + {cache}"
        if role.startswith("bound:"):
            label += f"  ({role.split(':')[1]} bound)"
        out.append((label, role, rows.sort_values("capacity")))
    # policies first, then bounds, so the legend reads in that order
    out.sort(key=lambda t: (t[1] != "policy", t[0]))
    return out


def _line_plot(comp: pd.DataFrame, ys: list[tuple[str, str]], ylabel: str, title: str, logx: bool = False):
    plt = pyplot()
    fig, axes = plt.subplots(1, len(ys), figsize=(6.2 * len(ys), 4.2), squeeze=False)
    caps = sorted(comp["capacity"].dropna().unique())
    for ax, (col, sub) in zip(axes[0], ys):
        for label, role, rows in _series(comp):
            style = _BOUND_STYLE.get(role, {"marker": "o"})
            ax.plot(rows["capacity"], rows[col], label=label, lw=1.4, ms=4, **style)
        ax.set_xlabel("GPU cache capacity (expert slots)")
        ax.set_ylabel(ylabel)
        ax.set_title(sub, fontsize=10)
        if len(caps) <= 12:
            ax.set_xticks(caps)
            ax.tick_params(axis="x", labelrotation=45 if len(caps) > 6 else 0)
        if logx:
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def build_compare_report(comp: pd.DataFrame, out_dir: Path, scenario_label: str = "") -> Path:
    """Write ``comparison.html`` (figures embedded, copies under ``figures/``) and ``comparison.csv``."""
    out_dir = Path(out_dir)
    atomic_write_text(
        out_dir / "comparison.csv", comp.to_csv(index=False, lineterminator="\n", float_format="%.6g")
    )
    rep = HtmlReport(
        "moesim policy comparison",
        f"{scenario_label}: {len(comp)} runs on identical inputs (same trace, model and hardware profile); "
        "the references are drawn dashed (Belady: the best demand-only cache) and dotted (oracle: perfect "
        "prediction with the same cache and horizon; not a strict bound when the link is saturated or the "
        "cache thrashes).",
        figures_dir=out_dir / "figures",
    )
    differ = check_identical_inputs(comp)
    if differ:
        rep.text(f"Warning: the runs do not share their inputs ({', '.join(differ)} differ).", cls="note")
    failed = comp[comp["status"] != "ok"]
    if len(failed):
        rep.text(
            f"{len(failed)} runs failed; they are listed at the end and missing from the plots.", cls="note"
        )
    ok = comp[comp["status"] == "ok"]
    if len(ok):
        rep.heading("Hit rate")
        rep.figure(
            _line_plot(ok, [("hit_rate", "hits / accesses")], "hit rate", "Hit rate vs GPU cache capacity"),
            "hit_rate",
            "Hit rate vs capacity (fraction of expert accesses already resident and arrived)",
            "How close does each predictor + cache come to the Belady bound (best demand-only cache) and to "
            "the oracle bound (perfect prediction) at each cache size?",
        )
        rep.heading("Latency")
        rep.figure(
            _line_plot(
                ok,
                [("tpot_ms_mean", "mean"), ("tpot_ms_p99", "p99")],
                "TPOT (ms per decode step)",
                "Time per output token vs capacity",
            ),
            "tpot",
            "TPOT mean and p99 (ms) vs capacity",
            "Which policy gives the lowest time per output token, on average and in the tail, and how much "
            "cache does it need to get there?",
        )
        rep.heading("Traffic and waste")
        rep.figure(
            _line_plot(
                ok,
                [("ratio_bytes_vs_on_demand", "bytes moved / on-demand bytes")],
                "ratio (1 = same as on-demand)",
                "Host-to-GPU bytes moved, relative to on-demand loading",
            ),
            "bytes_vs_on_demand",
            "Bytes moved vs on-demand (ratio)",
            "How much more (or less) PCIe traffic does prefetching cause than loading experts only when the "
            "router asks for them, with the same cache?",
        )
        rep.figure(
            _line_plot(
                ok,
                [("waste_fraction", "wasted prefetch bytes / prefetch bytes")],
                "waste fraction",
                "Prefetched bytes never used",
            ),
            "waste_fraction",
            "Waste fraction (wasted prefetch bytes / prefetched bytes) vs capacity",
            "What share of the prefetch traffic was evicted (or left at the end) before any use? Runs "
            "without prefetching have no point here.",
        )
    rep.heading("Table")
    cols = [
        "role",
        "predictor",
        "cache",
        "capacity",
        "hit_rate",
        "late_hit_rate",
        "tpot_ms_mean",
        "tpot_ms_p99",
        "ratio_bytes_vs_on_demand",
        "waste_fraction",
        "churn_per_token",
    ]
    rep.table(ok[cols].round(4), caption="one row per run (full columns in comparison.csv)")
    if len(failed):
        rep.heading("Failed runs")
        rep.table(failed[["point", "predictor", "cache", "capacity", "error"]])
    return rep.write(out_dir / "comparison.html")


def load_comparison(sweep_dir: Path) -> pd.DataFrame:
    from moesim.experiments.compare import comparison_table

    table = read_result_table(sweep_dir / "results.parquet")
    meta = sweep_dir / "compare.json"
    roles = (
        read_json_object(meta, "comparison manifest", "re-create the comparison").get("roles")
        if meta.is_file()
        else None
    )
    if roles is not None and (not isinstance(roles, list) or not all(isinstance(r, str) for r in roles)):
        fail(f"{meta}: field 'roles' must be a list of names; re-create the comparison")
    if roles is not None:
        check_point_index(table, sweep_dir / "results.parquet", len(roles))
    return comparison_table(table, roles)
