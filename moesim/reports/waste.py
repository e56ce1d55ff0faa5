"""The prefetch-waste report of one run directory (``moesim run --out DIR``).

Reads ``summary.json``, ``tokens.parquet``, ``layers.parquet`` and, when present,
``run_extras.parquet`` (lead time and slack of every useful prefetch); writes ``report.html`` (figures
embedded, PNG copies in ``figures/``) and the CSVs behind every figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moesim.errors import fail
from moesim.io import atomic_write_text
from moesim.metrics.readers import (
    RUN_TABLE_COLUMNS,
    check_run_summary,
    check_table_columns,
    read_json_object,
    read_result_table,
)
from moesim.reports.html import HtmlReport, pyplot

GIB = 2**30
MIB = 2**20


def _read_table(run_dir: Path, name: str) -> pd.DataFrame | None:
    for ext in ("parquet", "csv"):
        path = run_dir / f"{name}.{ext}"
        if path.is_file():
            table = read_result_table(path)
            check_table_columns(table, path, RUN_TABLE_COLUMNS[name])
            return table
    return None


def load_run(run_dir: Path) -> dict[str, Any]:
    spath = run_dir / "summary.json"
    if not spath.is_file():
        fail(f"{run_dir}: no summary.json; give a directory written by moesim run --out (or a sweep --out)")
    summary = read_json_object(spath, "run summary", "re-create the result")
    check_run_summary(summary, spath)
    tokens = _read_table(run_dir, "tokens")
    layers = _read_table(run_dir, "layers")
    if tokens is None or layers is None:
        fail(f"{run_dir}: tokens and layers tables (.parquet or .csv) are missing")
    extras = _read_table(run_dir, "run_extras")
    return {"summary": summary, "tokens": tokens, "layers": layers, "extras": extras}


def _expert_bytes(summary: dict[str, Any], layers: pd.DataFrame) -> int | None:
    """Bytes of one expert: from the catalog model, else demand bytes per demand copy."""
    try:
        from moesim.models import get_model

        return int(get_model(summary["provenance"]["model"]).expert_bytes)
    except Exception:  # noqa: BLE001 - a model from a config.json is not in the catalog
        miss = int(layers["misses"].sum())
        return int(layers["bytes_demand"].sum() // miss) if miss else None


def waste_summary(summary: dict[str, Any]) -> pd.DataFrame:
    c, lat, tr, pf, ca = (summary[k] for k in ("counts", "latency", "traffic", "prefetch", "cache"))
    pf_bytes = tr["bytes_prefetch"]
    wasted = tr["bytes_prefetch_wasted"]
    rows = [
        ("bytes_h2d", tr["bytes_h2d"], "bytes", "all host-to-GPU expert bytes copied"),
        (
            "bytes_demand",
            tr["bytes_demand"],
            "bytes",
            "copied because the router asked and the expert was missing",
        ),
        ("bytes_prefetch", pf_bytes, "bytes", "copied ahead of time on a prediction"),
        ("bytes_prefetch_useful", pf_bytes - wasted, "bytes", "prefetched and then demanded"),
        ("bytes_prefetch_wasted", wasted, "bytes", "prefetched, then evicted (or left at the end) unused"),
        ("waste_fraction", wasted / pf_bytes if pf_bytes else None, "ratio", "wasted / prefetched bytes"),
        (
            "bytes_on_demand_baseline",
            tr["bytes_on_demand_baseline"],
            "bytes",
            "same trace and cache, no prefetching",
        ),
        ("ratio_bytes_vs_on_demand", tr["ratio_bytes_vs_on_demand"], "ratio", "bytes_h2d / on-demand bytes"),
        ("prefetch_issued", pf["issued"], "count", "useful + wasted + cancelled"),
        ("prefetch_useful", pf["useful"], "count", "demanded before eviction (on time or late)"),
        ("prefetch_late", pf["late"], "count", "useful but still in flight when the gate needed it"),
        ("prefetch_wasted", pf["wasted"], "count", "copied and never used"),
        ("prefetch_cancelled", pf["cancelled"], "count", "evicted before the copy started (no bytes moved)"),
        ("lead_time_ms_mean", pf["lead_time_ms_mean"], "ms", "issue to demand, useful prefetches"),
        ("slack_ms_mean", pf["slack_ms_mean"], "ms", "arrival to demand (negative = late)"),
        ("hit_rate", c["hit_rate"], "ratio", "accesses resident and arrived at the gate"),
        ("late_hits", c["late_hits"], "count", "accesses whose copy was still in flight"),
        ("misses", c["misses"], "count", "accesses neither resident nor in flight"),
        ("evictions", ca["evictions"], "count", "experts evicted from the GPU cache"),
        ("churn", ca["churn"], "evictions/token", "evictions per decoded token"),
        ("refetches", ca["refetches"], "count", "experts loaded again soon after their eviction"),
        ("tpot_ms_mean", lat["tpot_ms"]["mean"], "ms", "time per output token"),
        ("tpot_ms_p50", lat["tpot_ms"]["p50"], "ms", ""),
        ("tpot_ms_p90", lat["tpot_ms"]["p90"], "ms", ""),
        ("tpot_ms_p99", lat["tpot_ms"]["p99"], "ms", ""),
        ("compute_only_tpot_ms", lat["compute_only_tpot_ms"], "ms", "TPOT with every wait removed"),
        ("stall_ms_total", lat["stall_ms_total"], "ms", "compute stream waiting for expert weights"),
    ]
    return pd.DataFrame(rows, columns=["metric", "value", "unit", "meaning"])


def per_layer(layers: pd.DataFrame) -> pd.DataFrame:
    df = layers.copy()
    df["bytes_prefetch_useful"] = df["bytes_prefetch"] - df["bytes_prefetch_wasted"]
    pf = df["bytes_prefetch"].astype(float)
    df["waste_fraction"] = (df["bytes_prefetch_wasted"] / pf).where(pf > 0)
    return df


def prefetch_timing(extras: pd.DataFrame | None) -> pd.DataFrame:
    """Quantiles of lead time, slack and issue-to-arrival time (ms) over useful prefetches."""
    qs = [0, 10, 50, 90, 99, 100]
    rows = []
    if extras is not None and len(extras):
        series = {
            "lead_ms": extras["lead_ms"],
            "slack_ms": extras["slack_ms"],
            "issue_to_arrival_ms": extras["lead_ms"] - extras["slack_ms"],
        }
        for name, s in series.items():
            v = s.dropna().to_numpy()
            if not len(v):
                continue
            pct = np.percentile(v, qs)
            rows.append(
                {"quantity": name, "count": len(v), "mean": float(v.mean())}
                | {f"p{q}": float(x) for q, x in zip(qs, pct)}
            )
        late = extras["slack_ms"].dropna()
        rows.append({"quantity": "late_fraction", "count": len(late), "mean": float((late < 0).mean())})
    return pd.DataFrame(rows)


def over_time(tokens: pd.DataFrame, expert_bytes: int | None, windows: int = 60) -> pd.DataFrame:
    """Decode steps grouped into about ``windows`` consecutive windows (run order)."""
    n = len(tokens)
    if n == 0:
        return pd.DataFrame()
    size = max(1, int(np.ceil(n / windows)))
    idx = np.arange(n) // size
    g = tokens.assign(_w=idx).groupby("_w", sort=True)
    first = np.arange(idx[-1] + 1) * size
    df = pd.DataFrame(
        {
            "step_first": first,
            "step_last": np.minimum(first + size, n) - 1,
            "tokens": g["batch"].sum().to_numpy(),
            "tpot_ms_mean": g["tpot_ms"].mean().to_numpy(),
            "stall_ms_per_step": g["stall_ms"].mean().to_numpy(),
            "misses_per_step": g["misses"].mean().to_numpy(),
            "late_hits_per_step": g["late_hits"].mean().to_numpy(),
            "bytes_h2d_per_step": g["bytes_h2d"].mean().to_numpy(),
        }
    )
    if expert_bytes:
        # Once the cache is full every copy evicts one expert, so copies per step tracks churn.
        df["copies_per_step"] = df["bytes_h2d_per_step"] / expert_bytes
    for col in ("evictions", "refetches"):
        if col in tokens.columns:
            df[f"{col}_per_step"] = g[col].mean().to_numpy()
    return df


# -- figures -----------------------------------------------------------------------------------------
def _fig_bytes(summary: dict[str, Any]):
    tr = summary["traffic"]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 2.6))
    useful = (tr["bytes_prefetch"] - tr["bytes_prefetch_wasted"]) / GIB
    parts = [
        ("demand", tr["bytes_demand"] / GIB, "#e4572e"),
        ("prefetch, used", useful, "#3f7fbf"),
        ("prefetch, wasted", tr["bytes_prefetch_wasted"] / GIB, "#f2a541"),
    ]
    left = 0.0
    for label, v, color in parts:
        ax.barh(1, v, left=left, color=color, label=f"{label}: {v:,.2f} GiB")
        left += v
    ax.barh(0, tr["bytes_on_demand_baseline"] / GIB, color="0.6", label="on-demand baseline")
    ax.set_yticks([0, 1])
    ax.set_yticklabels(["on-demand only\n(same cache)", "this run"])
    ax.set_xlabel("host-to-GPU bytes (GiB)")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    return fig


def _fig_outcomes(summary: dict[str, Any]):
    pf = summary["prefetch"]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3))
    labels = ["useful, on time", "useful, late", "wasted", "cancelled"]
    vals = [pf["useful"] - pf["late"], pf["late"], pf["wasted"], pf["cancelled"]]
    colors = ["#3f7fbf", "#8fb8de", "#f2a541", "0.7"]
    bars = ax.bar(labels, vals, color=colors)
    total = max(pf["issued"], 1)
    for b, v in zip(bars, vals):
        ax.annotate(
            f"{v:,}\n({v / total:.1%})",
            (b.get_x() + b.get_width() / 2, b.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_ylabel("prefetches (count)")
    ax.set_ylim(0, max(vals + [1]) * 1.25)
    ax.set_title(f"{pf['issued']:,} prefetches issued", fontsize=10)
    fig.tight_layout()
    return fig


def _fig_timing(extras: pd.DataFrame):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    lead = extras["lead_ms"].dropna().to_numpy()
    slack = extras["slack_ms"].dropna().to_numpy()
    xfer = (extras["lead_ms"] - extras["slack_ms"]).dropna().to_numpy()
    hi = float(np.percentile(np.concatenate([lead, xfer]), 99.5)) if len(lead) else 1.0
    bins = np.linspace(0, max(hi, 1e-6), 60)
    ax = axes[0]
    ax.hist(np.clip(lead, 0, hi), bins=bins, alpha=0.6, color="#3f7fbf", label="lead time (issue to demand)")
    ax.hist(
        np.clip(xfer, 0, hi), bins=bins, alpha=0.6, color="#e4572e", label="issue to arrival (queue + copy)"
    )
    ax.set_xlabel("ms")
    ax.set_ylabel("useful prefetches")
    ax.legend(fontsize=8)
    ax.set_title("lead time vs the time the copy needed", fontsize=10)
    ax = axes[1]
    lo, hi2 = np.percentile(slack, [0.5, 99.5]) if len(slack) else (0.0, 1.0)
    span = max(hi2 - lo, 1e-6)
    bins2 = np.linspace(lo - 0.02 * span, hi2 + 0.02 * span, 60)
    ax.hist(np.clip(slack, bins2[0], bins2[-1]), bins=bins2, color="#4caf50")
    ax.axvline(0, color="black", lw=1)
    late = float((slack < 0).mean()) if len(slack) else 0.0
    ax.set_title(f"slack (arrival to demand); {late:.1%} late (left of 0)", fontsize=10)
    ax.set_xlabel("ms (negative: the gate waited for the copy)")
    ax.set_ylabel("useful prefetches")
    fig.tight_layout()
    return fig


def _fig_over_time(ot: pd.DataFrame):
    plt = pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(11, 7.5), sharex=True)
    x = ot["step_first"]
    ax = axes[0]
    ax.plot(x, ot["bytes_h2d_per_step"] / MIB, color="#3f7fbf", label="H2D MiB per step")
    ax.set_ylabel("MiB per decode step")
    if "copies_per_step" in ot:
        ax2 = ax.twinx()
        col = "evictions_per_step" if "evictions_per_step" in ot else "copies_per_step"
        ax2.plot(x, ot[col], color="#f2a541", ls="--", label=col.replace("_", " "))
        ax2.set_ylabel(col.replace("_", " "))
        ax2.legend(fontsize=8, loc="upper right")
    ax.legend(fontsize=8, loc="upper left")
    ax = axes[1]
    ax.plot(x, ot["misses_per_step"], color="#e4572e", label="misses per step")
    ax.plot(x, ot["late_hits_per_step"], color="#8fb8de", label="late hits per step")
    if "refetches_per_step" in ot:
        ax.plot(x, ot["refetches_per_step"], color="0.4", label="re-fetches per step")
    ax.set_ylabel("accesses per step")
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.plot(x, ot["tpot_ms_mean"], color="black", label="TPOT mean")
    ax.plot(x, ot["stall_ms_per_step"], color="#e4572e", label="stall")
    ax.set_ylabel("ms per decode step")
    ax.set_xlabel("decode step (run order; each point averages one window)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _fig_layers(df: pd.DataFrame):
    plt = pyplot()
    fig, axes = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True)
    x = df["layer"].to_numpy()
    ax = axes[0]
    d = df["bytes_demand"] / GIB
    u = df["bytes_prefetch_useful"] / GIB
    w = df["bytes_prefetch_wasted"] / GIB
    ax.bar(x, d, color="#e4572e", label="demand")
    ax.bar(x, u, bottom=d, color="#3f7fbf", label="prefetch, used")
    ax.bar(x, w, bottom=d + u, color="#f2a541", label="prefetch, wasted")
    ax.set_ylabel("GiB")
    ax.legend(fontsize=8, ncol=3, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    ax = axes[1]
    acc = df["accesses"].replace(0, np.nan)
    ax.plot(x, df["hit_rate"], marker="o", color="#3f7fbf", label="hit rate")
    ax.plot(x, df["late_hits"] / acc, marker="s", color="#8fb8de", label="late-hit rate")
    ax.plot(x, df["misses"] / acc, marker="^", color="#e4572e", label="miss rate")
    ax.set_ylabel("fraction of accesses")
    ax.set_ylim(0, 1.02)
    ax2 = ax.twinx()
    ax2.bar(x, df["stall_ms"], color="0.5", alpha=0.25, label="stall ms")
    ax2.set_ylabel("stall (ms, total)")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_xlabel("MoE layer")
    fig.tight_layout()
    return fig


def _fig_tail(tokens: pd.DataFrame, summary: dict[str, Any]):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
    t = tokens["tpot_ms"].to_numpy()
    tp = summary["latency"]["tpot_ms"]
    axes[0].hist(t, bins=60, color="0.5")
    for name, color in (("p50", "#3f7fbf"), ("p90", "#f2a541"), ("p99", "#e4572e")):
        axes[0].axvline(tp[name], color=color, lw=1.2, label=f"{name} {tp[name]:.3f} ms")
    axes[0].axvline(
        summary["latency"]["compute_only_tpot_ms"], color="black", ls=":", label="compute only (mean)"
    )
    axes[0].set_xlabel("TPOT (ms)")
    axes[0].set_ylabel("decode steps")
    axes[0].legend(fontsize=8)
    s = np.sort(t)
    frac = 1.0 - np.arange(len(s)) / max(len(s), 1)
    axes[1].plot(s, frac, color="black")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("TPOT (ms)")
    axes[1].set_ylabel("fraction of steps slower than x")
    axes[1].grid(alpha=0.3)
    fig.tight_layout()
    return fig


def build_run_report(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write the prefetch-waste report of ``run_dir`` into ``out_dir`` (default ``run_dir/report``)."""
    run_dir = Path(run_dir)
    data = load_run(run_dir)
    summary, tokens, layers, extras = data["summary"], data["tokens"], data["layers"], data["extras"]
    out = Path(out_dir) if out_dir is not None else run_dir / "report"
    prov = summary.get("provenance", {})
    sc = prov.get("scenario", {})
    ws = waste_summary(summary)
    pl = per_layer(layers)
    pt = prefetch_timing(extras)
    ot = over_time(tokens, _expert_bytes(summary, layers))
    write_csv(out / "waste_summary.csv", ws)
    write_csv(out / "waste_per_layer.csv", pl)
    write_csv(out / "prefetch_timing.csv", pt)
    write_csv(out / "over_time.csv", ot)

    pred, cache = sc.get("predictor", {}), sc.get("cache", {})
    rep = HtmlReport(
        f"Prefetch-waste report: {sc.get('name', run_dir.name)}",
        f"{prov.get('model', '?')} on {prov.get('profile', '?')}; predictor {pred.get('name', '?')} "
        f"(horizon {pred.get('horizon', '?')}), cache {cache.get('policy', '?')} with {cache.get('capacity', '?')} "
        f"slots ({cache.get('scope', '?')}); {summary['counts']['tokens']:,} tokens; executor "
        f"{prov.get('executor', '?')}; run directory {run_dir}",
        figures_dir=out / "figures",
    )
    rep.text(
        "How to read this: experts live in host memory and are copied to a GPU cache of fixed size. A "
        "prefetch copies an expert before the router asks for it, on a prediction; it is useful if the "
        "expert is demanded before it is evicted (late if the copy was still running then), wasted if it "
        "was copied and then evicted unused, cancelled if it was evicted before its copy began. Bytes are "
        "compared against the same trace and cache with no prefetching (on-demand)."
    )
    rep.heading("Headline figures")
    rep.table(ws.assign(value=ws["value"].map(_tidy)), caption="from summary.json (also waste_summary.csv)")
    rep.heading("Where did the bytes go?")
    rep.figure(
        _fig_bytes(summary),
        "bytes",
        "Host-to-GPU bytes by purpose (GiB), against on-demand loading",
        "How many bytes did this run move compared with loading experts only on demand, and how much of "
        "the prefetch traffic was never used?",
    )
    rep.figure(
        _fig_outcomes(summary),
        "prefetch_outcomes",
        "What happened to each prefetch (count)",
        "Of the prefetches issued, how many arrived in time, arrived late, were copied for nothing, or were "
        "cancelled before their copy started?",
    )
    rep.heading("Did prefetches arrive in time?")
    if extras is not None and len(extras):
        rep.figure(
            _fig_timing(extras),
            "lead_slack",
            "Lead time and slack of useful prefetches (ms), against the time each copy took",
            "Is the prediction horizon long enough for the transfer volume? A prefetch is on time when its lead "
            "time exceeds its issue-to-arrival time (queueing behind other copies plus the copy itself), i.e. "
            "when its slack is positive.",
        )
        rep.table(pt.round(4), caption="quantiles over useful prefetches (prefetch_timing.csv)")
    else:
        rep.text(
            "No per-prefetch timing in this run directory (run_extras.parquet is written by moesim runs "
            "that had useful prefetches); only the means in the table above are available.",
            cls="note",
        )
    rep.heading("Churn, misses and stalls over time")
    if len(ot):
        churn_note = (
            "evictions per step"
            if "evictions_per_step" in ot
            else "copies per step (equal to evictions per step once the cache is full, less cancelled prefetches)"
        )
        rep.figure(
            _fig_over_time(ot),
            "over_time",
            "Traffic, churn, misses and stalls per decode step over the run",
            f"Is the waste steady or concentrated (cold start, request boundaries, domain shifts)? Top: H2D "
            f"MiB and {churn_note}; middle: misses and late hits; bottom: TPOT and stall. Re-fetches over "
            f"time are not recorded per step; the run total is {summary['cache']['refetches']:,}.",
        )
    rep.heading("Per-layer breakdown")
    rep.figure(
        _fig_layers(pl),
        "per_layer",
        "Bytes by purpose and hit / late / miss rates per MoE layer",
        "Which layers cause the waste and the stalls? Layers whose predictions are worse show more wasted "
        "bytes and more misses.",
    )
    cols = [
        "layer",
        "accesses",
        "hit_rate",
        "late_hits",
        "misses",
        "prefetch_issued",
        "prefetch_useful",
        "prefetch_wasted",
        "prefetch_cancelled",
        "bytes_prefetch_wasted",
        "waste_fraction",
        "stall_ms",
        "evictions",
    ]
    rep.table(pl[[c for c in cols if c in pl]].round(4), caption="per layer (waste_per_layer.csv)")
    rep.heading("Tail latency")
    rep.figure(
        _fig_tail(tokens, summary),
        "tail_latency",
        "Time per output token: distribution and tail (ms)",
        "How far is the tail (p99) from the median, and how much of TPOT is waiting for experts rather than "
        "compute?",
    )
    rep.text(
        f"Files: report.html, figures/*.png, waste_summary.csv, waste_per_layer.csv, prefetch_timing.csv, "
        f"over_time.csv in {out}. moesim {prov.get('moesim_version', '?')}; trace sha256 "
        f"{str(prov.get('trace_sha256', '?'))[:16]}...; profile {prov.get('profile', '?')}."
    )
    return rep.write(out / "report.html")


def _tidy(v: Any) -> Any:
    if isinstance(v, float) and v.is_integer() and abs(v) > 1000:
        return int(v)
    return v


def write_csv(path: Path, df: pd.DataFrame) -> None:
    atomic_write_text(path, df.to_csv(index=False, lineterminator="\n", float_format="%.6g"))
