"""``moesim harness SCENARIO --device D --out DIR [--layers N] [--set k=v ...]``: one live run."""

from __future__ import annotations

import argparse
from pathlib import Path

from moesim.outputs import FORCE_HELP


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "harness",
        help="run a scenario live (real kernels and copies) and write the same files as moesim run",
        description="Run a scenario with the LiveExecutor (PyTorch kernels at the model's shapes, real expert "
        "copies, routing forced from the trace) on this device, and write the same result files as moesim run.",
    )
    p.add_argument("scenario", help="scenario YAML")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument(
        "--out", type=Path, default=None, help="output directory (default: runs/<scenario name>-live)"
    )
    p.add_argument("--layers", type=int, default=None, help="replay only the first N MoE layers")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a scenario key, e.g. --set cache.capacity=128 (repeatable)",
    )
    p.add_argument("--threads", type=int, default=None, help="CPU compute threads (default: cores - 1)")
    p.add_argument("--ssd-dir", default=None, help="directory for the SSD tier's expert file")
    p.add_argument(
        "--no-keep-awake", action="store_true", help="let idle cores sleep (see docs/live-executor.md)"
    )
    p.add_argument(
        "--realtime",
        action="store_true",
        help="SCHED_FIFO for the run's threads, on a machine shared with other work (needs root)",
    )
    p.add_argument(
        "--decisions", action="store_true", help="also write the policy core's log (decisions.jsonl)"
    )
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from moesim.cli.progress import token_progress
    from moesim.cli.run_cmd import claim_run_outputs
    from moesim.cli.summary_table import print_summary
    from moesim.engine.live_executor import LiveOptions
    from moesim.experiments.live import run_live
    from moesim.experiments.pipeline import load
    from moesim.experiments.scenario import load_scenario

    scenario = load_scenario(args.scenario, args.overrides)
    claim = claim_run_outputs(args, scenario, "run", suffix="-live")["out"]
    prepared = load(scenario)
    out = claim.path
    opts = LiveOptions(
        device=args.device,
        threads=args.threads,
        ssd_dir=args.ssd_dir,
        keep_awake=not args.no_keep_awake,
        realtime=args.realtime,
    )
    with token_progress(
        prepared.trace.num_tokens, f"live {scenario.name}", enabled=None if not args.quiet else False
    ) as prog:
        live = run_live(prepared, opts, layers=args.layers, progress=prog, record=args.decisions)
    result = live.result
    claim.write_dir(result.write)
    if args.decisions and result.decisions is not None:
        import json

        from moesim.io import atomic_write_text

        atomic_write_text(
            out / "decisions.jsonl", "".join(json.dumps(list(r)) + "\n" for r in result.decisions)
        )
    if not args.quiet:
        print_summary(result.summary, out)
    return 0
