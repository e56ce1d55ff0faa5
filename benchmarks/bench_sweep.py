"""Sweep throughput: 96 points (4 predictors x 8 capacities x 3 horizons) on the OLMoE general domain.

    python benchmarks/bench_sweep.py [--trace /tmp/olmoe.moetrace] [-j 2] [--backend local|ray] [--out DIR]

The trace is the shared OLMoE-1B-7B decode trace (100 general-domain sequences, 12,800 tokens x 16
layers); it is imported once into ``--trace`` if that does not exist yet (needs ../shared/external-traces).
Prints the wall time of the whole sweep (process start-up, every point, the table) and per point.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from moesim.experiments.sweep import SweepPlan, run_sweep, summary_line

ROOT = Path(__file__).resolve().parents[1]
CHUNKS = ROOT.parent / "shared" / "external-traces" / "helloimrizy-pages__opt" / "decode_traces" / "chunks"

GRID = {
    "predictor.name": ["none", "oracle", "popularity", "prev-token"],
    "cache.capacity": [64, 128, 192, 256, 384, 512, 640, 768],
    "predictor.horizon": [1, 2, 3],
}


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # workers, once the pool has shut down
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", type=Path, default=Path("/tmp/olmoe.moetrace"))
    ap.add_argument("-j", "--jobs", type=int, default=None)
    ap.add_argument("--backend", default="local", choices=("local", "ray"))
    ap.add_argument("--out", type=Path, default=None, help="keep the sweep here (default: a temp dir)")
    ap.add_argument("--executor", default="auto", choices=("auto", "sim", "fast"), help="default auto")
    args = ap.parse_args()
    if not args.trace.exists():
        if not CHUNKS.is_dir():
            print(f"needs {args.trace} or {CHUNKS}", file=sys.stderr)
            return 2
        from moesim.traces.importers import import_trace
        from moesim.traces.native import save_trace

        t = time.perf_counter()
        save_trace(import_trace("olmoe-npz", [CHUNKS]), args.trace)
        print(f"imported {args.trace} in {time.perf_counter() - t:.1f} s")
    base = [f"trace.path={args.trace.resolve()}", "trace.domain=general", f"executor={args.executor}"]
    plan = SweepPlan.from_grid(None, GRID, base)
    tmp = None
    out = args.out
    if out is None:
        tmp = tempfile.mkdtemp(prefix="bench-sweep-")
        out = Path(tmp) / "sweep"
    try:
        t = time.perf_counter()
        cpu0 = _cpu()
        outcome = run_sweep(plan, out, backend=args.backend, jobs=args.jobs, force=True)
        wall = time.perf_counter() - t
        cpu = _cpu() - cpu0
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    n = len(plan.points)
    print(summary_line(outcome))
    jobs = args.jobs or len(os.sched_getaffinity(0))
    print(f"sweep of {n} points ({args.backend}, jobs={jobs}): {wall:.1f} s wall, {wall / n:.2f} s/point")
    # Other processes on a shared machine stretch the wall time; CPU time does not depend on them.
    print(
        f"CPU time (this process + workers): {cpu:.1f} s = {cpu / n:.2f} s/point; "
        f"on {jobs} idle cores about {cpu / jobs:.1f} s; load average now {os.getloadavg()[0]:.1f}"
    )
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())
