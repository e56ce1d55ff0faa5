"""The comparison report: one HTML page with the comparison table and its plots, plus the CSV."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from moesim.errors import fail
from moesim.io import atomic_write_text
from moesim.metrics.comparison import check_identical_inputs
from moesim.readers import check_point_index, read_json_object, read_result_table
from moesim.reports.html import HtmlReport, pyplot
from moesim.reports.style import Series, draw_lines, fraction_axis, has_data, legend_below, series_style

_BELADY_STYLE = {"color": "black", "ls": "--", "marker": "x", "ms": 8, "lw": 1.6}
# one oracle bound per cache: grey, dotted, a marker per cache
_ORACLE_STYLES = [
    {"color": g, "ls": ":", "marker": m, "ms": 8, "lw": 1.8, "mfc": "none"}
    for g, m in (("0.35", "P"), ("0.55", "*"), ("0.45", "h"), ("0.65", "d"))
]


def _bound_of(pred: str, cache: str, role: str) -> str | None:
    """Which bound a run family is: by its role, or (when the grid itself holds it, so no separate
    bound run was added) by what it is: none + belady, or the oracle predictor."""
    if role.startswith("bound:"):
        return role.split(":", 1)[1]
    if (pred, cache) == ("none", "belady"):
        return "belady"
    if pred == "oracle":
        return "oracle"
    return None


def _series(comp: pd.DataFrame, col: str) -> list[Series]:
    """One series per (predictor, cache) run family, policies first and the bounds last."""
    ok = comp[comp["status"] == "ok"]
    out = []
    for (pred, cache), rows in ok.groupby(["predictor", "cache"], sort=True):
        bound = _bound_of(pred, cache, rows["role"].iloc[0])
        label = f"{pred} + {cache}" + (f"  ({bound} bound)" if bound else "")
        rows = rows.sort_values("capacity")
        out.append((bound or "", Series(label, rows["capacity"].tolist(), rows[col].tolist())))
    out.sort(key=lambda t: (t[0] != "", t[0], t[1].label))
    policies = [s for b, s in out if not b]
    for i, s in enumerate(policies):
        s.style = series_style(i)
    oracles = [s for b, s in out if b == "oracle"]
    for i, s in enumerate(oracles):
        s.style = _ORACLE_STYLES[i % len(_ORACLE_STYLES)]
    for b, s in out:
        if b == "belady":
            s.style = _BELADY_STYLE
    return [s for _, s in out]


def _bars(ax, series: list[Series]) -> None:
    """A single capacity: one horizontal bar per run family (no line across categories)."""
    for i, s in enumerate(series):
        style = s.style or {}
        # bounds hatched, policies plain
        ax.barh(
            i, s.ys[0], color=style.get("color", "C0"), hatch="//" if s.label.endswith("bound)") else None
        )
        ax.annotate(f" {s.ys[0]:.4g}", (s.ys[0], i), va="center", fontsize=8)
    ax.set_yticks(range(len(series)))
    ax.set_yticklabels([s.label for s in series], fontsize=8)
    ax.invert_yaxis()


def _line_plot(comp: pd.DataFrame, ys: list[tuple[str, str]], ylabel: str, title: str, logx: bool = False):
    """One panel per column in ``ys``; families with no value in a panel (e.g. the waste of runs that
    never prefetch) are left out of it and named in its title. None when no panel has a value."""
    caps = sorted(comp["capacity"].dropna().unique())
    panels = [(col, sub, [s for s in _series(comp, col) if has_data(s.ys)]) for col, sub in ys]
    if not any(series for _, _, series in panels):
        return None
    plt = pyplot()
    single = len(caps) <= 1
    fig, axes = plt.subplots(1, len(ys), figsize=(6.2 * len(ys), 4.4), squeeze=False)
    for ax, (col, sub, series) in zip(axes[0], panels):
        missing = [s.label for s in _series(comp, col) if not has_data(s.ys)]
        if single:
            _bars(ax, series)
            ax.set_xlabel(ylabel)
        else:
            draw_lines(ax, series)
            ax.set_xlabel("GPU cache capacity (expert slots)")
            ax.set_ylabel(ylabel)
            if len(caps) <= 12:
                ax.set_xticks(caps)
                ax.set_xticklabels([f"{c:g}" for c in caps], rotation=45 if len(caps) > 6 else 0)
            if logx:
                ax.set_xscale("log")
        if col in ("hit_rate", "waste_fraction") and not single:
            fraction_axis(ax, [y for s in series for y in s.ys])
        ax.set_title(sub + (f"\nno value for: {', '.join(missing)}" if missing else ""), fontsize=9)
        ax.grid(alpha=0.3)
    if single and caps:  # one cache size: say which instead of "vs capacity"
        title = f"{title.split(' vs ')[0]}, {caps[0]:g} expert slots"
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    if not single:
        legend_below(fig, list(axes[0]), ncol=2 if len(ys) == 1 else 3)
    return fig


def _add_figure(rep: HtmlReport, fig, name: str, title: str, question: str) -> None:
    if fig is None:  # no empty charts
        rep.text(f"{title}: no run has a value (no prefetches were issued), so no chart.", cls="note")
    else:
        rep.figure(fig, name, title, question)


def build_compare_report(comp: pd.DataFrame, out_dir: Path, scenario_label: str = "") -> Path:
    """Write ``comparison.html`` (figures embedded, copies under ``figures/``) and ``comparison.csv``."""
    out_dir = Path(out_dir)
    atomic_write_text(
        out_dir / "comparison.csv", comp.to_csv(index=False, lineterminator="\n", float_format="%.6g")
    )
    rep = HtmlReport(
        "moesim policy comparison",
        f"{scenario_label}: {len(comp)} runs on identical inputs (same trace, model and hardware profile); "
        "the references are drawn in black and grey: dashed, Belady (none + belady: the best demand-only "
        "cache), and dotted, oracle (perfect prediction with the same cache and horizon; not a strict bound "
        "when the link is saturated or the cache thrashes), whether the comparison added them or its grid "
        "held them.",
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
        _add_figure(
            rep,
            _line_plot(ok, [("hit_rate", "hits / accesses")], "hit rate", "Hit rate vs GPU cache capacity"),
            "hit_rate",
            "Hit rate vs capacity (fraction of expert accesses already resident and arrived)",
            "How close does each predictor + cache come to the Belady bound (best demand-only cache) and to "
            "the oracle bound (perfect prediction) at each cache size?",
        )
        rep.heading("Latency")
        _add_figure(
            rep,
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
        _add_figure(
            rep,
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
        _add_figure(
            rep,
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
    from moesim.metrics.comparison import comparison_table

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
