"""``moesim sweep [SCENARIO] --grid KEY=V1,V2,... [--grid ...] --out DIR [--backend local|ray] [-j N] [--resume]``"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from moesim.cli.progress import point_progress


class ExecutorOverride(argparse.Action):
    """``--executor X``: the scenario key ``executor=X``, as if given with ``--set`` (whatever the order)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        namespace.overrides = [*(getattr(namespace, "overrides", None) or []), f"executor={values}"]
        setattr(namespace, self.dest, values)


def add_executor(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--executor",
        choices=("auto", "sim", "fast"),
        action=ExecutorOverride,
        default=None,
        help="simulation executor: auto (default: the compiled fast one wherever it covers the scenario, "
        "else sim), sim or fast (an error if it does not cover the scenario); same as --set executor=...",
    )


def add_common(p: argparse.ArgumentParser) -> None:
    """Arguments shared by sweep and compare."""
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a scenario key for every point, e.g. --set trace.domain=general (repeatable)",
    )
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument(
        "--backend", choices=("local", "ray"), default="local", help="where points run (default local)"
    )
    p.add_argument(
        "--ray-address",
        default=None,
        help="Ray cluster to join (e.g. ray://host:10001 or auto); default: start a local one",
    )
    p.add_argument("-j", "--jobs", type=int, default=None, help="parallel workers (default: one per CPU)")
    p.add_argument("--resume", action="store_true", help="skip points already finished in --out")
    p.add_argument("--force", action="store_true", help="discard a previous sweep in --out and start over")
    p.add_argument(
        "--keep-runs",
        action="store_true",
        help="also write each point's full run directory under DIR/runs/ (for moesim report)",
    )
    p.add_argument("--quiet", action="store_true", help="print nothing but errors and the final summary")
    add_executor(p)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a scenario over a grid of keys",
        description="Run one scenario at every combination of the --grid values, in parallel, into one "
        "results table (DIR/results.parquet and .csv). A failing point is recorded with its error; the "
        "command exits 1 at the end if any point failed.",
    )
    p.add_argument("scenario", nargs="?", help="scenario YAML (default: the built-in default)")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        required=True,
        metavar="KEY=V1,V2,...",
        help="a swept key and its values (repeatable; any --set key, e.g. --grid cache.capacity=128,256); "
        "values with commas: KEY=[v1, v2]",
    )
    add_common(p)
    p.add_argument(
        "--heatmap",
        action="append",
        default=[],
        metavar="METRIC",
        help="write DIR/heatmap_<metric>.png over two swept keys (repeatable; e.g. counts.hit_rate, tpot_ms.p99)",
    )
    p.add_argument(
        "--heatmap-axes",
        default=None,
        metavar="X,Y",
        help="the two swept keys of the heatmaps (default: the first two --grid keys)",
    )
    p.set_defaults(func=run)


def execute(plan, args: argparse.Namespace, label: str, kind: str = "sweep"):
    """Run ``plan`` with a progress bar; returns the SweepOutcome."""
    from moesim.experiments.sweep import run_sweep

    total = len(plan.points)
    with point_progress(total, label, enabled=False if args.quiet else None) as prog:
        return run_sweep(
            plan,
            args.out,
            backend=args.backend,
            jobs=args.jobs,
            resume=args.resume,
            force=args.force,
            keep_runs=args.keep_runs,
            ray_address=args.ray_address,
            progress=prog,
            kind=kind,
        )


def report_outcome(outcome, quiet: bool) -> int:
    from moesim.experiments.sweep import summary_line

    print(f"moesim sweep: {summary_line(outcome)}")
    for point, error in outcome.failed[:10]:
        print(f"  point {point} failed: {error}", file=sys.stderr)
    if len(outcome.failed) > 10:
        print(f"  ... and {len(outcome.failed) - 10} more (see the error column)", file=sys.stderr)
    if not quiet:
        from moesim.cli.summary_table import print_table_notes

        print_table_notes(outcome.table)
        print(f"table: {outcome.out / 'results.parquet'} and {outcome.out / 'results.csv'}")
    return 1 if outcome.failed else 0


def run(args: argparse.Namespace) -> int:
    from moesim.errors import fail
    from moesim.experiments.sweep import SweepPlan, parse_grid

    grid = parse_grid(args.grid)
    axes = None
    if args.heatmap:
        if args.heatmap_axes:
            axes = [a.strip() for a in args.heatmap_axes.split(",")]
            if len(axes) != 2 or any(a not in grid for a in axes):
                fail(f"--heatmap-axes {args.heatmap_axes!r}: give two swept keys X,Y from: {', '.join(grid)}")
        elif len(grid) >= 2:
            axes = list(grid)[:2]
        else:
            fail("--heatmap needs two swept keys (give a second --grid)")
    plan = SweepPlan.from_grid(args.scenario, grid, args.overrides)
    outcome = execute(plan, args, f"sweep {len(plan.points)} points")
    if axes is not None and len(outcome.table) > len(outcome.failed):
        from moesim.reports.heatmap import write_heatmaps

        for path in write_heatmaps(outcome.table, axes[0], axes[1], args.heatmap, args.out):
            if not args.quiet:
                print(f"heatmap: {path}")
    return report_outcome(outcome, args.quiet)
