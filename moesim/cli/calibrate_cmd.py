"""``moesim calibrate SCENARIO... --device D --out DIR [--profile P] [--grid key=v1,v2 ...]``"""

from __future__ import annotations

import argparse
from pathlib import Path

from moesim.outputs import FORCE_HELP


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="compare simulated and live runs on this device (validation report)",
        description="Profile this device (or take --profile), simulate each configuration with that profile, "
        "run it live, and write a validation report: signed TPOT errors at mean/p50/p90/p99, stall time, "
        "bytes moved, and whether the decision sequences are identical (Markdown + PNG + CSV).",
    )
    p.add_argument("scenarios", nargs="+", help="scenario YAML files (one model)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--out", type=Path, required=True, help="report directory (replaced whole)")
    p.add_argument("--profile", default=None, help="a measured profile YAML to use instead of profiling now")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a scenario key and its values; several --grid make a cartesian product",
    )
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--layers", type=int, default=None, help="replay only the first N MoE layers (both executors)"
    )
    p.add_argument(
        "--repeats", type=int, default=3, help="live runs per configuration; the median is compared"
    )
    p.add_argument("--profile-repeats", type=int, default=None, help="timed calls per profile point")
    p.add_argument("--threads", type=int, default=None, help="CPU compute threads (default: cores - 1)")
    p.add_argument(
        "--realtime",
        action="store_true",
        help="SCHED_FIFO for the profiling and live threads, on a machine shared with other work (needs root)",
    )
    p.add_argument(
        "--max-noise",
        type=float,
        default=None,
        metavar="PCT",
        help="refuse the result (exit 2, nothing written) when a configuration's live repeats differ by more "
        "than PCT%% of their median TPOT (needs --repeats >= 2)",
    )
    p.add_argument("--keep-runs", action="store_true", help="also write every sim / live run under runs/")
    p.add_argument(
        "--findings",
        type=Path,
        default=None,
        help="a Markdown file appended to the report (e.g. an investigation of the errors)",
    )
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import shlex
    import sys

    from moesim.errors import fail
    from moesim.experiments.calibrate import CalibrateOptions, calibrate

    claim = _claim_out(args)
    findings: list[str] = []
    if args.findings is not None:
        try:
            findings = args.findings.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            fail(f"--findings {args.findings}: cannot read ({exc.strerror})")
    argv = sys.argv[1:] if sys.argv and sys.argv[0].endswith("moesim") else ["calibrate", *args.scenarios]
    opts = CalibrateOptions(
        device=args.device,
        profile=args.profile,
        grid=args.grid,
        sets=args.overrides,
        layers=args.layers,
        repeats=args.repeats,
        threads=args.threads,
        profile_repeats=args.profile_repeats,
        keep_runs=args.keep_runs,
        realtime=args.realtime,
        max_noise=args.max_noise,
        findings=findings,
        command="moesim " + " ".join(shlex.quote(a) for a in argv),
    )

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr)

    res = calibrate(args.scenarios, args.out, opts, log=log)
    claim.mark()
    if not args.quiet:
        h = res["headline"]
        line = f"median |TPOT error| (mean): sim {h['sim_median_abs_err_mean_pct']:.1f}%"
        if "simloop_median_abs_err_mean_pct" in h:
            line += f", sim+loop {h['simloop_median_abs_err_mean_pct']:.1f}%"
        line += f"; decisions identical: {'yes' if h['decisions_identical'] else 'NO'}"
        line += f"; noise: {h['noise_verdict']} ({h['noisy_configs']} of {h['configs']} configurations)"
        print(line)
        print(f"report: {Path(args.out) / 'report.md'}")
    return 0


def _claim_out(args: argparse.Namespace):
    import contextlib

    from moesim.errors import MoesimInputError
    from moesim.experiments.scenario import load_scenario
    from moesim.outputs import claim_output, scenario_inputs

    inputs = [*args.scenarios, args.profile, args.findings]
    for path in args.scenarios:
        with contextlib.suppress(MoesimInputError):  # calibrate reports it in its own words
            inputs.extend(scenario_inputs(load_scenario(path, args.overrides)))
    return claim_output(args.out, "calibration", force=args.force, inputs=inputs)
