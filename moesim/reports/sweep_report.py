"""The prefetch-waste report of a sweep (or comparison) directory: waste figures per point, plotted
against the swept keys. A comparison directory also gets its comparison page rebuilt."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from moesim.errors import fail
from moesim.metrics.table import PARAM_PREFIX
from moesim.readers import read_json_object, read_result_table, require_columns
from moesim.reports.html import HtmlReport, pyplot
from moesim.reports.style import Series, draw_grouped_bars, draw_lines, fraction_axis, has_data
from moesim.reports.waste import write_csv

METRICS = [
    (
        "waste_fraction",
        "wasted prefetch bytes / prefetched bytes",
        "What share of the prefetch traffic was never used?",
    ),
    (
        "ratio_bytes_vs_on_demand",
        "bytes moved / on-demand bytes",
        "How much more PCIe traffic than on-demand loading does each configuration cause?",
    ),
    ("hit_rate", "hits / accesses", "How often was the needed expert already there?"),
    (
        "late_fraction",
        "late prefetches / useful prefetches",
        "How often did a useful prefetch arrive too late?",
    ),
    ("churn", "evictions per token", "How hard is the cache churning?"),
    ("tpot_ms_p99", "TPOT p99 (ms)", "What does the waste cost in tail latency?"),
]


def waste_table(table: pd.DataFrame) -> pd.DataFrame:
    def col(name: str) -> pd.Series:
        if name in table.columns:
            return pd.to_numeric(table[name], errors="coerce")
        return pd.Series([float("nan")] * len(table), index=table.index)

    params = [c for c in table.columns if c.startswith(PARAM_PREFIX)]
    pf = col("traffic.bytes_prefetch")
    useful = col("prefetch.useful")
    out = table[["point", "status"] + params].copy()
    out.columns = ["point", "status"] + [c[len(PARAM_PREFIX) :] for c in params]
    out["waste_fraction"] = (col("traffic.bytes_prefetch_wasted") / pf).where(pf > 0)
    out["bytes_prefetch_wasted"] = col("traffic.bytes_prefetch_wasted")
    out["ratio_bytes_vs_on_demand"] = col("traffic.ratio_bytes_vs_on_demand")
    out["hit_rate"] = col("counts.hit_rate")
    out["prefetch_issued"] = col("prefetch.issued")
    out["prefetch_useful"] = useful
    out["prefetch_late"] = col("prefetch.late")
    out["prefetch_wasted"] = col("prefetch.wasted")
    out["prefetch_cancelled"] = col("prefetch.cancelled")
    out["late_fraction"] = (col("prefetch.late") / useful).where(useful > 0)
    out["lead_time_ms_mean"] = col("prefetch.lead_time_ms_mean")
    out["slack_ms_mean"] = col("prefetch.slack_ms_mean")
    out["churn"] = col("cache.churn")
    out["refetches"] = col("cache.refetches")
    out["tpot_ms_mean"] = col("latency.tpot_ms.mean")
    out["tpot_ms_p99"] = col("latency.tpot_ms.p99")
    out["error"] = table["error"]
    return out


def _numeric(s: pd.Series) -> bool:
    return pd.to_numeric(s, errors="coerce").notna().all()


_FRACTIONS = {"waste_fraction", "hit_rate", "late_fraction"}


def _x_key(wt: pd.DataFrame, keys: list[str]) -> tuple[str, list[str]]:
    """The swept key on the x axis (a numeric one when there is one) and the keys that make series."""
    varying = [k for k in keys if wt[k].nunique(dropna=False) > 1] or keys[:1]
    x = next((k for k in varying if _numeric(wt[k])), varying[0])
    return x, [k for k in varying if k != x]


def _metric_series(wt: pd.DataFrame, x: str, rest: list[str], metric: str) -> tuple[list[Series], list[str]]:
    """One series per combination of the other swept keys; the labels of those without any value."""
    groups = [((), wt)] if not rest else list(wt.groupby(rest, sort=True, dropna=False))
    numeric_x = _numeric(wt[x])
    series, empty = [], []
    for gkey, rows in groups:
        gkey = gkey if isinstance(gkey, tuple) else (gkey,)
        rows = rows.sort_values(x) if numeric_x else rows
        # one key: its value (the key is the legend's title); several: key=value pairs
        label = (
            str(gkey[0]) if len(rest) == 1 else ", ".join(f"{k}={v}" for k, v in zip(rest, gkey)) or metric
        )
        ys = pd.to_numeric(rows[metric], errors="coerce").tolist()
        if has_data(ys):
            series.append(Series(label, rows[x].tolist(), ys))
        else:
            empty.append(label)
    return series, empty


def _fig_metric(wt: pd.DataFrame, keys: list[str], metric: str, label: str, max_series: int = 12):
    """``metric`` against a swept key: lines over a numeric key, grouped bars over a categorical one;
    one series per combination of the other keys. Series without any value are left out (and named
    in the title); None when no series has a value."""
    x, rest = _x_key(wt, keys)
    series, empty = _metric_series(wt, x, rest, metric)
    if not series:
        return None
    shown = series[:max_series]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 4.2))
    if _numeric(wt[x]):
        draw_lines(ax, shown)
        xs = sorted(pd.to_numeric(wt[x]).unique())
        if len(xs) <= 12:
            ax.set_xticks(xs)
            ax.set_xticklabels([f"{v:g}" for v in xs], rotation=45 if len(xs) > 6 else 0)
    else:
        draw_grouped_bars(ax, list(dict.fromkeys(wt[x].tolist())), shown)
    if metric in _FRACTIONS:
        fraction_axis(ax, [y for s in shown for y in s.ys])
    ax.set_xlabel(x)
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    if rest:
        ax.legend(
            fontsize=8,
            title=rest[0] if len(rest) == 1 else None,
            title_fontsize=8,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.16),
            ncol=min(3, len(shown)),
            frameon=False,
        )
    notes = []
    if len(series) > max_series:
        notes.append(f"first {max_series} of {len(series)} series")
    if empty:
        notes.append(f"no value (no prefetches) for {'; '.join(empty)}")
    if notes:
        ax.set_title("\n".join(notes), fontsize=9)
    fig.tight_layout()
    return fig


def build_sweep_report(sweep_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    sweep_dir = Path(sweep_dir)
    if not (sweep_dir / "results.parquet").is_file():
        fail(f"{sweep_dir}: no results.parquet; give a directory written by moesim sweep or moesim compare")
    table = read_result_table(sweep_dir / "results.parquet")
    require_columns(table, sweep_dir / "results.parquet", ("point", "status", "error"))
    out = Path(out_dir) if out_dir is not None else sweep_dir / "report"
    manifest = {}
    if (sweep_dir / "sweep.json").is_file():
        manifest = read_json_object(sweep_dir / "sweep.json", "sweep manifest", "re-create the sweep")
    keys = [c[len(PARAM_PREFIX) :] for c in table.columns if c.startswith(PARAM_PREFIX)]
    wt = waste_table(table)
    write_csv(out / "waste_by_point.csv", wt)
    ok = wt[wt["status"] == "ok"]
    rep = HtmlReport(
        f"Prefetch-waste report: sweep {sweep_dir.name}",
        f"{len(table)} points over {', '.join(keys) or 'no keys'}; scenario "
        f"{manifest.get('scenario') or 'built-in default'}"
        + (f" with {' '.join(manifest['base_overrides'])}" if manifest.get("base_overrides") else ""),
        figures_dir=out / "figures",
    )
    rep.text(
        "Each point is one simulated run. A prefetch is wasted when its expert was copied to the GPU and "
        "evicted (or left at the end) before any use; the waste fraction is wasted / prefetched bytes, and "
        "bytes are compared with the same trace and cache replayed with no prefetching (on-demand)."
    )
    compare_page = None
    if (sweep_dir / "compare.json").is_file():
        from moesim.reports.compare_report import build_compare_report, load_comparison

        compare_page = build_compare_report(load_comparison(sweep_dir), out, f"comparison {sweep_dir.name}")
        rep.html(
            f"<p>Policy comparison with bounds: <a href='{compare_page.name}'>{compare_page.name}</a></p>"
        )
    if len(ok) and keys:
        for metric, label, question in METRICS:
            fig = _fig_metric(ok, keys, metric, label)
            if fig is None:
                rep.text(
                    f"{label}: no point has a value (no prefetches were issued), so no chart.", cls="note"
                )
                continue
            rep.figure(fig, f"sweep_{metric}", f"{label} across the sweep", question)
    failed = wt[wt["status"] != "ok"]
    if len(failed):
        rep.text(f"{len(failed)} points failed (listed at the end).", cls="note")
    rep.heading("Per point")
    show = [c for c in wt.columns if c not in ("error", "status")]
    rep.table(ok[show].round(4), caption="waste figures per point (waste_by_point.csv)")
    if len(failed):
        rep.heading("Failed points")
        rep.table(failed[["point"] + keys + ["error"]])
    if (sweep_dir / "runs").is_dir():
        rep.text(
            f"Full per-point run directories are in {sweep_dir / 'runs'}; moesim report on one of them gives "
            "its detailed waste report."
        )
    return rep.write(out / "report.html")
