"""``moesim run [SCENARIO] [--set key=value ...] --out DIR``"""

from __future__ import annotations

import argparse
from pathlib import Path

from moesim.outputs import FORCE_HELP


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="simulate one scenario",
        description="Simulate one scenario (the built-in default when none is given) and write its results.",
    )
    p.add_argument("scenario", nargs="?", help="scenario YAML (default: scenarios/default.yaml)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a scenario key, e.g. --set cache.capacity=128 (repeatable)",
    )
    p.add_argument("--out", type=Path, default=None, help="output directory (default: runs/<scenario name>)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    from moesim.cli.sweep_cmd import add_executor

    add_executor(p)
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.add_argument(
        "--timeline",
        type=Path,
        default=None,
        metavar="FILE.json",
        help="write a Chrome/Perfetto trace-event timeline (open in ui.perfetto.dev or chrome://tracing)",
    )
    p.add_argument(
        "--gantt", type=Path, default=None, metavar="FILE.png", help="write a Gantt chart PNG of --tokens"
    )
    p.add_argument(
        "--tokens",
        default=None,
        metavar="A:B",
        help="decode steps A (inclusive) to B (exclusive), in run order, for --gantt (default 0:2) and "
        "--timeline (default: all)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from moesim.cli.progress import token_progress
    from moesim.cli.summary_table import print_summary
    from moesim.experiments.run import prepare, run_prepared
    from moesim.experiments.scenario import load_scenario

    scenario = load_scenario(args.scenario, args.overrides)
    tokens = None
    if args.tokens is not None:
        from moesim.reports.timeline import TokenRange

        tokens = TokenRange.parse(args.tokens)
    claims = claim_run_outputs(args, scenario, "run")
    prepared = prepare(scenario)
    out = claims["out"].path
    with token_progress(
        prepared.trace.num_tokens, f"simulating {scenario.name}", enabled=None if not args.quiet else False
    ) as prog:
        result = run_prepared(prepared, progress=prog, timeline=bool(args.timeline or args.gantt))
    claims["out"].write_dir(result.write)
    if args.timeline or args.gantt:
        from moesim.reports.timeline import select_tokens, write_chrome_trace, write_gantt

        if args.timeline:
            meta = {
                "scenario": scenario.name,
                "moesim_version": result.summary["provenance"]["moesim_version"],
            }
            events = select_tokens(result.timeline or [], tokens)
            claims["timeline"].write_file(lambda p: write_chrome_trace(p, events, meta))
        if args.gantt:
            claims["gantt"].write_file(lambda p: write_gantt(p, result.timeline or [], tokens))
    if not args.quiet:
        print_summary(result.summary, out)
    return 0


def claim_run_outputs(args: argparse.Namespace, scenario, kind: str, suffix: str = "") -> dict:
    """Check every output path of a run before any work: --out (default runs/<name><suffix>),
    --timeline and --gantt; none may be an input."""
    from moesim.outputs import claim_output, name_dir, scenario_inputs

    inputs = [args.scenario, *scenario_inputs(scenario)]
    force = getattr(args, "force", False)
    out = args.out or name_dir(scenario.name, "runs", suffix)
    claims = {"out": claim_output(out, kind, force=force, inputs=inputs)}
    for flag in ("timeline", "gantt"):
        path = getattr(args, flag, None)
        if path is not None:
            claims[flag] = claim_output(
                path, flag, force=force, inputs=inputs, directory=False, flag=f"--{flag}"
            )
    return claims
