"""Sweep throughput: 96 points (4 predictors x 8 capacities x 3 horizons) on the OLMoE general domain.

    python benchmarks/bench_sweep.py [--trace /tmp/olmoe.moetrace] [-j 2] [--backend local|ray] [--out DIR]
                                     [--executor auto|sim|fast] [--check | --reference DIR]

The trace is the shared OLMoE-1B-7B decode trace (100 general-domain sequences, 12,800 tokens x 16
layers); it is imported once into ``--trace`` if that does not exist yet (needs ../shared/external-traces).
Prints the wall time of the whole sweep (process start-up, every point, the table) and per point, and
its throughput: points/s, layer-steps/s (summed over the points) and CPU seconds.

``--executor`` sets the scenario key ``executor`` for every point (default: the scenario's, auto).
``--check`` runs the sweep a second time with ``--executor sim`` and compares the two results
tables byte for byte (results.csv and results.parquet): OK or DIFFERS, with the columns that differ.
``--reference DIR`` compares with the table of a sweep kept earlier (``--executor sim --out DIR``)
instead of running it again.
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

from moesim.experiments.sweep import SweepOutcome, SweepPlan, run_sweep, summary_line

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


TABLES = ("results.csv", "results.parquet")
EXECUTOR_COLUMN = "provenance.executor"


def _import(trace: Path) -> bool:
    if trace.exists():
        return True
    if not CHUNKS.is_dir():
        print(f"needs {trace} or {CHUNKS}", file=sys.stderr)
        return False
    from moesim.traces.importers import import_trace
    from moesim.traces.native import save_trace

    t = time.perf_counter()
    save_trace(import_trace("olmoe-npz", [CHUNKS]), trace)
    print(f"imported {trace} in {time.perf_counter() - t:.1f} s")
    return True


def _sweep(args: argparse.Namespace, executor: str | None, out: Path) -> tuple[SweepOutcome, float, float]:
    """One run of the 96-point sweep into ``out``: (outcome, wall s, CPU s of this process + workers)."""
    base = [f"trace.path={args.trace.resolve()}", "trace.domain=general"]
    if executor is not None:
        base.append(f"executor={executor}")
    plan = SweepPlan.from_grid(None, GRID, base)
    t = time.perf_counter()
    cpu0 = _cpu()
    outcome = run_sweep(plan, out, backend=args.backend, jobs=args.jobs, force=True)
    return outcome, time.perf_counter() - t, _cpu() - cpu0


def _report(label: str, outcome: SweepOutcome, wall: float, cpu: float, args: argparse.Namespace) -> None:
    n = len(outcome.table)
    print(f"[{label}] {summary_line(outcome)}")
    ran = _executors(outcome.table)
    jobs = args.jobs or len(os.sched_getaffinity(0))
    col = "counts.layer_steps"
    steps = int(outcome.table[col].fillna(0).sum()) if col in outcome.table else 0
    print(
        f"[{label}] sweep of {n} points ({args.backend}, jobs={jobs}, executor ran: {ran}): {wall:.1f} s wall, "
        f"{wall / n:.2f} s/point, {n / wall:.2f} points/s, {steps / wall:,.0f} layer-steps/s ({steps:,} in all)"
    )
    # Other processes on a shared machine stretch the wall time; CPU time does not depend on them.
    print(
        f"[{label}] CPU time (this process + workers): {cpu:.1f} s = {cpu / n:.2f} s/point, "
        f"{n / cpu:.2f} points per CPU-s, {steps / cpu:,.0f} layer-steps per CPU-s; "
        f"on {jobs} idle cores about {cpu / jobs:.1f} s; load average now {os.getloadavg()[0]:.1f}"
    )


def _executors(table) -> str:
    """Which executors the points ran on (provenance.executor), with counts."""
    if EXECUTOR_COLUMN not in table:
        return "not recorded"
    counts = table[EXECUTOR_COLUMN].fillna("none").value_counts()
    return ", ".join(f"{name} x{int(c)}" for name, c in sorted(counts.items()))


def compare_tables(mine: Path, ref: Path) -> tuple[bool, list[str]]:
    """(equal, verdict lines): the results tables' bytes, and, when only the column naming the
    executor that ran differs (the summary records it, the table flattens the summary), the bytes
    of both tables rewritten without that column."""
    import pandas as pd

    from moesim.metrics.table import write_table

    same = [f for f in TABLES if (mine / f).read_bytes() == (ref / f).read_bytes()]
    if len(same) == len(TABLES):
        return True, [f"table bytes: OK ({', '.join(TABLES)} identical)"]
    a, b = pd.read_parquet(mine / TABLES[1]), pd.read_parquet(ref / TABLES[1])
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return False, [f"table bytes: DIFFERS (columns or rows differ: {a.shape} vs {b.shape})"]
    cols = [c for c in a.columns if not a[c].equals(b[c])]
    lines = [
        f"table bytes: DIFFERS ({', '.join(f for f in TABLES if f not in same)}; columns: {', '.join(cols)})"
    ]
    if cols != [EXECUTOR_COLUMN]:
        return False, lines
    with tempfile.TemporaryDirectory(prefix="bench-tables-") as tmp:
        x, y = Path(tmp) / "a", Path(tmp) / "b"
        x.mkdir(), y.mkdir()
        write_table(x, a.drop(columns=[EXECUTOR_COLUMN]))
        write_table(y, b.drop(columns=[EXECUTOR_COLUMN]))
        equal = all((x / f).read_bytes() == (y / f).read_bytes() for f in TABLES)
    lines.append(f"table bytes without {EXECUTOR_COLUMN}: {'OK' if equal else 'DIFFERS'}")
    return equal, lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", type=Path, default=Path("/tmp/olmoe.moetrace"))
    ap.add_argument("-j", "--jobs", type=int, default=None)
    ap.add_argument("--backend", default="local", choices=("local", "ray"))
    ap.add_argument("--out", type=Path, default=None, help="keep the sweep here (default: a temp dir)")
    ap.add_argument(
        "--executor",
        default=None,
        choices=("auto", "sim", "fast"),
        help="executor of every point (default: auto)",
    )
    check = ap.add_mutually_exclusive_group()
    check.add_argument(
        "--check", action="store_true", help="also run with --executor sim; compare the tables"
    )
    check.add_argument("--reference", type=Path, default=None, help="compare with this sweep's table")
    args = ap.parse_args()
    if not _import(args.trace):
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    out = args.out or tmp / "sweep"
    try:
        outcome, wall, cpu = _sweep(args, args.executor, out)
        _report(args.executor or "default", outcome, wall, cpu, args)
        ok = outcome.ok
        ref = args.reference
        if args.check:
            ref = tmp / "sim"
            sim, wall_s, cpu_s = _sweep(args, "sim", ref)
            _report("sim", sim, wall_s, cpu_s, args)
            print(f"speed-up over sim: {wall_s / wall:.1f}x wall, {cpu_s / cpu:.1f}x CPU")
            ok = ok and sim.ok
        if ref is not None:
            equal, lines = compare_tables(out, ref)
            print("\n".join(lines))
            ok = ok and equal
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
