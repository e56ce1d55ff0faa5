"""The validation result directory: summary.json, cases.csv, report.html (+ figures/*.png)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from moesim.io import atomic_write_text, dumps_json
from moesim.reports.html import HtmlReport, pyplot

COLUMNS = ("out_of_the_box", "calibrated")
LABELS = {
    "out_of_the_box": "out-of-the-box (no fitting)",
    "calibrated": "calibrated (leave-one-out overhead per platform)",
}


def cases_table(summary: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for c in summary["cases"]:
        rows.append(
            {
                "id": c["id"],
                "platform": c["platform"],
                "row": c["row"],
                "expert_bits": c["expert_bits"],
                "published_tpot_ms": c["published"]["tpot_ms"],
                "sim_tpot_ms": c["out_of_the_box"]["tpot_ms"],
                "err_pct": c["out_of_the_box"]["err_pct"],
                "overhead_ms": c["calibrated"]["token_overhead_ms"],
                "calibrated_tpot_ms": c["calibrated"]["tpot_ms"],
                "calibrated_err_pct": c["calibrated"]["err_pct"],
                "preset": c["preset"] or "(none in schema)",
            }
        )
    return pd.DataFrame(rows)


def _scatter(df: pd.DataFrame):
    """Published vs simulated TPOT; colour = platform, marker = column."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (platform, d) in enumerate(df.groupby("platform", sort=True)):
        c = colours[i % len(colours)]
        ax.scatter(
            d["published_tpot_ms"], d["sim_tpot_ms"], marker="o", color=c, label=f"{platform}, out-of-the-box"
        )
        cal = d.dropna(subset=["calibrated_tpot_ms"])
        ax.scatter(
            cal["published_tpot_ms"],
            cal["calibrated_tpot_ms"],
            marker="x",
            color=c,
            label=f"{platform}, calibrated",
        )
    values = [df["published_tpot_ms"].max(), df["sim_tpot_ms"].max(), df["calibrated_tpot_ms"].max()]
    hi = float(max(v for v in values if v == v)) * 1.05
    ax.plot([0, hi], [0, hi], color="grey", lw=1, ls="--", label="simulated = published")
    ax.set_xlabel("published TPOT (ms per output token)")
    ax.set_ylabel("simulated TPOT (ms per output token)")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.legend(loc="upper left", fontsize=7, ncol=2)
    return fig


def _error_bars(df: pd.DataFrame):
    plt = pyplot()
    d = df.sort_values(["platform", "id"]).reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.38 * len(d) + 2), 4.6))
    x = range(len(d))
    ax.bar([i - 0.2 for i in x], d["err_pct"], width=0.4, label=LABELS["out_of_the_box"])
    ax.bar([i + 0.2 for i in x], d["calibrated_err_pct"].fillna(0.0), width=0.4, label=LABELS["calibrated"])
    ax.axhline(0, color="black", lw=0.8)
    for lim in (-10, 10):
        ax.axhline(lim, color="grey", lw=0.8, ls=":")
    ax.set_xticks(list(x))
    ax.set_xticklabels(
        [f"{p} | {i.split('/', 2)[-1]}" for p, i in zip(d["platform"], d["id"])],
        rotation=75,
        fontsize=7,
        ha="right",
    )
    ax.set_ylabel("signed TPOT error (%), simulated vs published")
    ax.legend(loc="lower left", fontsize=8)
    return fig


def build_report(summary: dict[str, Any], out: Path) -> Path:
    df = cases_table(summary)
    rep = HtmlReport(
        "moesim against published measurements",
        f"{summary['n_cases']['out_of_the_box']} mapped cases; subset {summary['subset']}; "
        f"command: {summary['provenance']['command']}; commit {summary['provenance']['commit']}",
        figures_dir=out / "figures",
    )
    rep.heading("Headline")
    head = pd.DataFrame(headline_rows(summary))
    rep.table(head)
    rep.text("Calibration: " + summary["calibration"]["method"] + ".")
    fits = pd.DataFrame(
        [{"platform": k, **v} for k, v in summary["calibration"]["fit_on_all_rows_per_platform"].items()]
    )
    rep.table(
        fits,
        caption="Per-token overhead fitted on all rows of each platform (for reference; the "
        "calibrated column uses the leave-one-out fits)",
    )
    rep.figure(
        _scatter(df),
        "published_vs_simulated",
        "Published vs simulated TPOT (ms per token)",
        "How close is each simulated case to its published measurement (the dashed line is exact)?",
    )
    rep.figure(
        _error_bars(df),
        "error_per_case",
        "Signed TPOT error per case, grouped by platform (%)",
        "Which cases and platforms does moesim get wrong, and by how much, before and after calibration?",
    )
    rep.heading("Cases")
    rep.table(df)
    if summary.get("copy_time_check"):
        rep.heading("Copy-time check (independent of the overhead fit)")
        rep.text(
            "For two cases of one platform and expert width without prefetch, the published TPOT gap "
            "over the gap in simulated misses per token is what one miss costs the real system; the "
            "same with the simulated TPOT is moesim's. A ratio near 1 means moesim's copy and cache "
            "model holds and the remaining error is time outside the copies."
        )
        rep.table(pd.DataFrame(summary["copy_time_check"]))
    _notes(rep, summary)
    return rep.write(out / "report.html")


def _notes(rep: HtmlReport, summary: dict[str, Any]) -> None:
    rep.heading("What was simulated")
    prov = summary["provenance"]
    rep.text(
        "Fidelity keys this build's scenario schema knows: "
        + (", ".join(prov["fidelity_keys_in_schema"]) or "none")
        + "."
    )
    fb = sorted({f for c in summary["cases"] for f in c["fallbacks"]})
    dropped = sorted({k for c in summary["cases"] for k in c["dropped_keys"]})
    if fb:
        rep.text("Fallbacks used (docs/validation.md): " + "; ".join(fb) + ".", cls="note")
    if dropped:
        rep.text("Catalog keys this build cannot express (dropped): " + ", ".join(dropped) + ".", cls="note")
    for model, t in prov["traces"].items():
        rep.text(f"Trace for {model}: {', '.join(t['sources'])} (sha256 {t['sha256'][:16]}...).")
    if summary["unmapped"]:
        rep.heading("Catalog cases not simulated")
        rep.table(pd.DataFrame(summary["unmapped"]))
    rep.text(f"Machine: {prov['machine']}; moesim {prov['moesim_version']}; Python {prov['python']}.")


SPLIT_LABEL = "bit-width split (fit on the narrowest width of each platform, test on the others)"


def headline_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per column (and the bit-width split): cases, median / p90 / max |error| (%)."""
    rows = [
        {
            "column": LABELS[k],
            "cases": summary["n_cases"][k],
            "median_abs_err_pct": summary["median_abs_err_pct"][k],
            "p90_abs_err_pct": summary["p90_abs_err_pct"][k],
            "max_abs_err_pct": summary["max_abs_err_pct"][k],
        }
        for k in COLUMNS
    ]
    split = summary["calibration"].get("bitwidth_split") or {}
    if split.get("n"):
        rows.append(
            {
                "column": SPLIT_LABEL,
                "cases": split["n"],
                **{k: split[k] for k in ("median_abs_err_pct", "p90_abs_err_pct", "max_abs_err_pct")},
            }
        )
    return rows


def readme_text(summary: dict[str, Any]) -> str:
    """A short README of the result: how it was made and the headline, as measured."""
    prov = summary["provenance"]
    lines = [
        "# moesim against published measurements",
        "",
        "Generated by `moesim validate published` (docs/validation.md); regenerate with",
        "",
        f"    {prov['command']}",
        "",
        f"- commit: `{prov['commit']}`, moesim {prov['moesim_version']}, Python {prov['python']}",
        f"- machine: {prov['machine']} (simulated time only: the numbers do not depend on the machine)",
        "- traces: " + "; ".join(f"{k}: {', '.join(v['sources'])}" for k, v in prov["traces"].items()),
        f"- fidelity keys in this build's scenario schema: {', '.join(prov['fidelity_keys_in_schema']) or 'none'}",
        "",
        "| column | cases | median abs err % | p90 abs err % | max abs err % |",
        "|---|---|---|---|---|",
    ]
    for h in headline_rows(summary):
        lines.append(
            f"| {h['column']} | {h['cases']} | {h['median_abs_err_pct']} | "
            f"{h['p90_abs_err_pct']} | {h['max_abs_err_pct']} |"
        )
    lines += ["", "Calibration: " + summary["calibration"]["method"] + ".", ""]
    fb = sorted({f for c in summary["cases"] for f in c["fallbacks"]})
    dropped = sorted({k for c in summary["cases"] for k in c["dropped_keys"]})
    if fb:
        lines += ["Fallbacks for keys this build lacks: " + "; ".join(fb) + ".", ""]
    if dropped:
        lines += ["Catalog keys this build cannot express (not simulated): " + ", ".join(dropped) + ".", ""]
    lines += [
        "Files: `summary.json` (every number), `cases.csv`, `report.html` (figures in `figures/`).",
        "",
    ]
    return "\n".join(lines)


def write_result(summary: dict[str, Any], out: Path) -> Path:
    """Fill ``out`` (a fresh directory): summary.json, cases.csv, README.md, report.html + figures."""
    atomic_write_text(out / "summary.json", dumps_json(summary))
    atomic_write_text(out / "README.md", readme_text(summary))
    cases_table(summary).to_csv(out / "cases.csv", index=False, lineterminator="\n")
    return build_report(summary, out)
