"""``moesim profile --device cpu|cuda --model M --out PROFILE.yaml``: measure this device's latency tables."""

from __future__ import annotations

import argparse
from pathlib import Path

from moesim.outputs import FORCE_HELP


def _ints(text: str) -> tuple[int, ...]:
    from moesim.errors import fail

    try:
        vals = tuple(int(float(v)) for v in text.split(",") if v.strip())
    except ValueError:
        fail(f"expected comma-separated integers, got {text!r}")
    return vals


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="measure a latency profile on this device (live executor kernels)",
        description="Measure every latency table of a model on this device with the live executor's own "
        "kernels and copy engine (medians with p10/p90 spreads), into a profile YAML that scenarios can name "
        "in hardware.profile.",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument(
        "--model", required=True, help="catalog model (see docs/models.md), or the name for --model-config"
    )
    p.add_argument(
        "--model-config", type=Path, default=None, help="a Hugging Face config.json for the model's shape"
    )
    p.add_argument("--out", type=Path, required=True, help="profile YAML to write")
    p.add_argument("--batches", default=None, help="attention batch grid, e.g. 1,2,4")
    p.add_argument("--contexts", default=None, help="attention context grid, e.g. 128,512,2048")
    p.add_argument("--tokens", default=None, help="token grid of norm / gate / expert FFNs, e.g. 1,2,4,8")
    p.add_argument(
        "--sizes", default=None, help="copy sizes in bytes (default: 256 KiB .. 16 MiB and one expert)"
    )
    p.add_argument("--repeats", type=int, default=None, help="timed calls per point (default 30)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 5)")
    p.add_argument("--ops", default=None, help="measure only these ops (comma-separated)")
    p.add_argument("--threads", type=int, default=None, help="CPU compute threads (default: cores - 1)")
    p.add_argument("--ssd-dir", default=None, help="directory for the ssd_read file (default: the temp dir)")
    p.add_argument(
        "--no-keep-awake", action="store_true", help="let idle cores sleep (see docs/live-executor.md)"
    )
    p.add_argument(
        "--realtime",
        action="store_true",
        help="SCHED_FIFO for the measuring threads, on a machine shared with other work (needs root)",
    )
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.set_defaults(func=run)


def _model(args):
    from moesim.models import get_model, model_from_hf_config

    if args.model_config is not None:
        return model_from_hf_config(args.model_config, name=args.model)
    return get_model(args.model)


def run(args: argparse.Namespace) -> int:
    import sys

    from moesim.outputs import claim_output
    from moesim.profiling.profiler import Profiler, ProfileSettings

    claim = claim_output(args.out, "profile", force=args.force, inputs=[args.model_config], directory=False)
    model = _model(args)
    s = ProfileSettings()
    if args.batches:
        s.batches = _ints(args.batches)
    if args.contexts:
        s.contexts = _ints(args.contexts)
    if args.tokens:
        s.tokens = _ints(args.tokens)
    if args.sizes:
        s.sizes = _ints(args.sizes)
    if args.repeats is not None:
        s.repeats = args.repeats
    if args.warmup is not None:
        s.warmup = args.warmup
    if args.ops:
        s.ops = tuple(o.strip() for o in args.ops.split(",") if o.strip())
    s.threads = args.threads
    s.ssd_dir = args.ssd_dir
    s.keep_awake = not args.no_keep_awake
    s.realtime = args.realtime

    def log(msg: str) -> None:
        if not args.quiet:
            print(f"  {msg}", file=sys.stderr)

    prof = Profiler(model, args.device, s, log=log)
    profile = prof.run()
    claim.write_file(profile.save)
    if not args.quiet:
        print(
            f"wrote {args.out}: {len(profile.tables)} tables measured on {profile.device} in {prof.seconds:.1f} s"
        )
    return 0
