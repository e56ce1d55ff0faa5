"""``moesim report DIR [--out REPORT_DIR]``: the prefetch-waste report of a run or sweep directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from moesim.outputs import FORCE_HELP


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="prefetch-waste report (HTML + CSV) of a run or sweep directory",
        description="Write the prefetch-waste report of DIR: a run directory (moesim run --out) or a sweep / "
        "compare directory. Output: REPORT_DIR/report.html (self-contained, figures embedded; PNG copies in "
        "figures/) and the CSVs behind it.",
    )
    p.add_argument("dir", type=Path, help="run, sweep or compare output directory")
    p.add_argument("--out", type=Path, default=None, help="report directory (default: DIR/report)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.set_defaults(func=run)


def build_report(directory: Path, out: Path | None = None) -> Path:
    return report_builder(directory)(directory, out)


def report_builder(directory: Path):
    """The report writer for DIR's kind (a run, or a sweep/comparison); fails for anything else."""
    from moesim.errors import fail

    if not directory.is_dir():
        fail(f"{directory}: not a directory; give a run or sweep output directory")
    if (directory / "summary.json").is_file():
        from moesim.reports.waste import build_run_report

        return build_run_report
    if (directory / "results.parquet").is_file():
        from moesim.reports.sweep_report import build_sweep_report

        return build_sweep_report
    fail(f"{directory}: holds neither summary.json (a run) nor results.parquet (a sweep or comparison)")
    raise AssertionError  # unreachable


def run(args: argparse.Namespace) -> int:
    from moesim.outputs import claim_output

    # A report beside the results it reads (DIR/report) adds to DIR and changes none of its files.
    build = report_builder(args.dir)
    out = args.out if args.out is not None else args.dir / "report"
    claim = claim_output(out, "report", force=args.force, inputs=[args.dir], inside_inputs_ok=True)
    # built aside and swapped in whole: unreadable results leave no half-made report behind
    page = claim.path / claim.write_dir(lambda d: build(args.dir, d).relative_to(d))
    if not args.quiet:
        print(f"report: {page}")
    return 0
