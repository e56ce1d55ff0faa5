"""The readable summary printed after a run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from moesim.metrics.summary import Summary


def _mib(n: int) -> str:
    return f"{n / 2**30:,.2f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"


def print_summary(summary: Summary, out: Path | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    c, lat, tr, pf, ca = (
        summary["counts"],
        summary["latency"],
        summary["traffic"],
        summary["prefetch"],
        summary["cache"],
    )
    prov = summary["provenance"]
    sc = prov["scenario"]
    t = Table(title=f"moesim: {sc['name']}", show_header=False, title_justify="left")
    t.add_column("metric", style="bold")
    t.add_column("value")
    t.add_row("model / profile", f"{prov['model']} on {prov['profile']}")
    t.add_row(
        "policy",
        f"predictor {sc['predictor']['name']} (h={sc['predictor']['horizon']}), cache {sc['cache']['policy']} "
        f"{sc['cache']['capacity']} slots {sc['cache']['scope']}, batch {sc['batch']}",
    )
    t.add_row("tokens / layer-steps", f"{c['tokens']:,} / {c['layer_steps']:,}")
    t.add_row(
        "hit rate",
        f"{c['hit_rate']:.4f}  (hits {c['hits']:,}, late {c['late_hits']:,}, misses {c['misses']:,})",
    )
    tp = lat["tpot_ms"]
    t.add_row(
        "TPOT ms", f"mean {tp['mean']:.3f}  p50 {tp['p50']:.3f}  p90 {tp['p90']:.3f}  p99 {tp['p99']:.3f}"
    )
    t.add_row("compute-only TPOT ms", f"{lat['compute_only_tpot_ms']:.3f}")
    tt = lat.get("ttft_ms")
    if tt:
        t.add_row("TTFT ms", f"mean {tt['mean']:.3f}  p50 {tt['p50']:.3f}  p99 {tt['p99']:.3f}")
    handled = {k: c.get(f"misses_{k}", 0) for k in ("cpu", "skipped", "substituted", "streamed")}
    if any(handled.values()):
        t.add_row("misses handled", ", ".join(f"{k} {v:,}" for k, v in handled.items() if v))
    t.add_row("stall ms total", f"{lat['stall_ms_total']:.3f}")
    ratio = tr["ratio_bytes_vs_on_demand"]
    t.add_row(
        "H2D traffic",
        f"{_mib(tr['bytes_h2d'])} (demand {_mib(tr['bytes_demand'])}, prefetch {_mib(tr['bytes_prefetch'])}, "
        f"wasted {_mib(tr['bytes_prefetch_wasted'])}); x{f'{ratio:.3f}' if ratio is not None else '-'} vs on-demand",
    )
    t.add_row(
        "prefetches",
        f"issued {pf['issued']:,}, useful {pf['useful']:,}, late {pf['late']:,}, wasted {pf['wasted']:,}, "
        f"cancelled {pf['cancelled']:,}",
    )
    t.add_row(
        "cache",
        f"evictions {ca['evictions']:,}, churn {ca['churn']:.3f}/token, re-fetches {ca['refetches']:,}",
    )
    tiers = ca.get("tier_hit_rate", {})
    if tr.get("bytes_ssd_read") or tiers.get("dram", 1.0) < 1.0:
        t.add_row(
            "tiers",
            f"GPU hit rate {tiers.get('gpu', 0):.4f}, host DRAM hit rate {tiers.get('dram', 1):.4f}, "
            f"SSD reads {_mib(tr['bytes_ssd_read'])}",
        )
    q = summary.get("quality", {})
    if q.get("lossy_accesses"):
        t.add_row(
            "[red]quality risk",
            f"{q['lossy_accesses']:,} experts skipped or substituted ({q['lossy_fraction']:.2%})",
        )
    if prov.get("profile_extrapolations"):
        t.add_row("[yellow]extrapolated", "; ".join(prov["profile_extrapolations"]))
    # Optimistic settings and what the run found about its own plan (experiments/holdout.py): kept in
    # summary.json too, but a reader of the console must not need to open it to learn them.
    for note in prov.get("notes", []):
        t.add_row("[yellow]note", note)
    if out is not None:
        t.add_row("results", str(out))
    Console().print(t)


def print_table_notes(table, limit: int = 10) -> None:
    """The distinct run notes of a sweep's or comparison's points, each with the points it concerns
    (the ``provenance.notes`` column holds each point's notes as a JSON list)."""
    import json

    if "provenance.notes" not in getattr(table, "columns", ()):
        return
    points: dict[str, list[int]] = {}
    for point, cell in zip(table["point"], table["provenance.notes"]):
        if isinstance(cell, str) and cell:
            for note in json.loads(cell):
                points.setdefault(note, []).append(int(point))
    for note, pts in list(points.items())[:limit]:
        where = ", ".join(map(str, pts[:8])) + (f" and {len(pts) - 8} more" if len(pts) > 8 else "")
        print(f"note (point{'s' if len(pts) > 1 else ''} {where}): {note}")
    if len(points) > limit:
        print(f"... and {len(points) - limit} more notes (column provenance.notes)")
