"""``moesim validate published --out DIR``: simulate the published-measurement catalog and compare.

(Not to be confused with ``moesim.experiments.validate``, the scenario schema checks.)"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from moesim.outputs import FORCE_HELP

KIND = "validation"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate",
        help="validate moesim against published measurements (moesim validate published)",
        description="Compare moesim with published, measured decode latencies (docs/validation.md).",
    )
    inner = p.add_subparsers(dest="what", metavar="WHAT", parser_class=type(p))
    q = inner.add_parser(
        "published",
        help="simulate every mapped catalog case; DIR/summary.json and DIR/report.html",
        description="Simulate each mapped case of the published-measurement catalog "
        "(moesim/validation/published/*.yaml) on the real routing trace of its model and write "
        "DIR/summary.json (published vs simulated TPOT, signed error, out-of-the-box and calibrated "
        "columns, median/p90/max |error|), DIR/cases.csv and DIR/report.html with its figures.",
    )
    q.add_argument("--out", type=Path, required=True, help="output directory")
    q.add_argument(
        "--subset", choices=("all", "ci"), default="all", help="all mapped cases, or the fast CI subset"
    )
    q.add_argument("--cases", default="", help="comma-separated case ids (exactly these; overrides --subset)")
    q.add_argument(
        "--shared",
        type=Path,
        default=None,
        help="the shared folder holding external-traces/ (default: ../shared)",
    )
    q.add_argument(
        "--trace", type=Path, default=None, help="a .moetrace to replay instead of the shared trace"
    )
    q.add_argument("--max-sequences", type=int, default=None, help="replay only the first N trace sequences")
    q.add_argument("--quiet", action="store_true", help="print nothing but errors")
    q.add_argument("--force", action="store_true", help=FORCE_HELP)
    q.set_defaults(func=run)
    p.set_defaults(func=lambda args: _no_what(p))


def _no_what(p: argparse.ArgumentParser) -> int:
    from moesim.errors import fail

    fail("moesim validate: say what to validate against: moesim validate published --out DIR")
    return 2


def _progress(quiet: bool):
    def show(i: int, n: int, what: str) -> None:
        if not quiet:
            print(f"validate: [{i}/{n}] {what}", file=sys.stderr, flush=True)

    return show


def _command(args: argparse.Namespace) -> str:
    """The command as it would be typed (for the provenance)."""
    words = ["moesim", "validate", "published", "--out", str(args.out)]
    if args.subset != "all":
        words += ["--subset", args.subset]
    for flag, value in (("--cases", args.cases), ("--shared", args.shared), ("--trace", args.trace)):
        if value:
            words += [flag, str(value)]
    if args.max_sequences is not None:
        words += ["--max-sequences", str(args.max_sequences)]
    return shlex.join(words)


def run(args: argparse.Namespace) -> int:
    from moesim.errors import fail
    from moesim.outputs import claim_output
    from moesim.validation.report import write_result
    from moesim.validation.run import Options, default_shared, validate_published

    if args.max_sequences is not None and args.max_sequences < 1:
        fail(f"--max-sequences {args.max_sequences}: give a positive number of sequences")
    inputs = [args.trace, args.shared or default_shared()]
    claim = claim_output(args.out, KIND, force=args.force, inputs=inputs)
    opts = Options(
        subset=args.subset,
        case_ids=[c.strip() for c in args.cases.split(",") if c.strip()],
        shared=args.shared,
        trace=args.trace,
        max_sequences=args.max_sequences,
        command=_command(args),
    )
    summary = validate_published(opts, progress=_progress(args.quiet))
    claim.write_dir(lambda d: write_result(summary, d))
    if not args.quiet:
        m = summary["median_abs_err_pct"]
        print(
            f"validate: {summary['n_cases']['out_of_the_box']} cases; median |error| out-of-the-box "
            f"{m['out_of_the_box']}%, calibrated {m['calibrated']}%; {claim.path / 'summary.json'}"
        )
    return 0
