"""``moesim compare [SCENARIO] --predictors a,b --caches x,y [--capacities ...] --out DIR``"""

from __future__ import annotations

import argparse

from moesim.cli.sweep_cmd import add_common


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="compare predictors and caches on identical inputs",
        description="Run every predictor x cache (x capacity) on the same scenario, with the Belady "
        "(best demand-only cache) and oracle (perfect prediction) bounds, into one table "
        "(DIR/comparison.csv, DIR/results.parquet) and a report with plots (DIR/comparison.html).",
    )
    p.add_argument("scenario", nargs="?", help="scenario YAML (default: the built-in default)")
    p.add_argument("--predictors", required=True, help="comma list, e.g. none,popularity,prev-token")
    p.add_argument("--caches", required=True, help="comma list, e.g. lru,lfu")
    p.add_argument(
        "--capacities",
        default=None,
        help="comma list of GPU cache sizes in expert slots (default: the scenario's cache.capacity)",
    )
    p.add_argument("--no-bounds", action="store_true", help="skip the Belady and oracle bound runs")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from moesim.cli.sweep_cmd import execute, report_outcome
    from moesim.errors import fail
    from moesim.experiments.compare import CompareSpec, write_meta
    from moesim.experiments.sweep import SweepPlan
    from moesim.metrics.comparison import comparison_table
    from moesim.reports.compare_report import build_compare_report

    caps = None
    if args.capacities:
        try:
            caps = [int(c) for c in _names(args.capacities)]
        except ValueError:
            fail(f"--capacities {args.capacities!r}: expected integers, e.g. 64,128,256")
    spec = CompareSpec(_names(args.predictors), _names(args.caches), caps, bounds=not args.no_bounds)
    points, roles = spec.points()
    keys = ["predictor.name", "cache.policy"] + (["cache.capacity"] if caps else [])
    plan = SweepPlan.from_points(args.scenario, points, keys, args.overrides)
    outcome = execute(plan, args, f"compare {len(points)} runs", kind="compare")
    write_meta(args.out, spec, roles)
    comp = comparison_table(outcome.table, roles)
    label = f"scenario {args.scenario or 'default'}" + (
        f" with {' '.join(args.overrides)}" if args.overrides else ""
    )
    page = build_compare_report(comp, args.out, label)
    if not args.quiet:
        _print_table(comp)
        print(f"report: {page}")
    return report_outcome(outcome, args.quiet)


def _print_table(comp) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="moesim compare", title_justify="left")
    for c in (
        "role",
        "predictor",
        "cache",
        "capacity",
        "hit rate",
        "TPOT mean ms",
        "TPOT p99 ms",
        "bytes/on-demand",
        "waste",
    ):
        t.add_column(c)
    for r in comp.itertuples(index=False):
        if r.status != "ok":
            t.add_row(
                r.role, str(r.predictor), str(r.cache), _f(r.capacity, 0), "[red]failed", "", "", "", ""
            )
            continue
        t.add_row(
            r.role,
            str(r.predictor),
            str(r.cache),
            _f(r.capacity, 0),
            _f(r.hit_rate, 4),
            _f(r.tpot_ms_mean, 3),
            _f(r.tpot_ms_p99, 3),
            _f(r.ratio_bytes_vs_on_demand, 3),
            _f(r.waste_fraction, 3),
        )
    Console().print(t)


def _f(v, digits: int) -> str:
    if v is None or v != v:
        return "-"
    return f"{v:.{digits}f}"
