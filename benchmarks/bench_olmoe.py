"""Simulator throughput on the full shared OLMoE trace (400 sequences, 51,112 tokens, 16 layers, k=8).

    python benchmarks/bench_olmoe.py [--policy lru] [--predictor popularity] [--capacity 256] [--repeat 3]
                                     [--executor auto|sim|fast] [--check] [--whole-run]

Prints layer-steps per second (wall and CPU) of the executor: the fast one (compiled prediction,
decision and timing passes) or the simulation one (the policy core and SimPy timing model); ``auto``
takes fast when it covers the settings, else sim. Trace import and the on-demand baseline replay are
timed separately. Needs ../shared/external-traces.

``--check`` also runs the scenario through the run pipeline with ``executor: sim`` and with
``executor: fast`` and compares them as the differential tests do (summary.json bytes but for the
executor field, the tokens, layers and extras tables exactly): OK or DIFFERS.
``--whole-run`` times a complete ``moesim run`` of the scenario (a new process: start-up, import of
moesim, trace load, kernels from numba's cache, run, baseline, files), wall and CPU seconds; the
trace is imported once into ``--trace``.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from moesim.engine.decisions import run_decisions
from moesim.engine.sim_executor import SimExecutor
from moesim.experiments.run import Prepared, build_core
from moesim.experiments.scenario import (
    CacheConfig,
    HardwareConfig,
    MissConfig,
    PredictorConfig,
    Scenario,
    TiersConfig,
)
from moesim.hardware import load_profile
from moesim.hardware.costs import CostModel
from moesim.models import get_model
from moesim.traces.importers import import_trace

ROOT = Path(__file__).resolve().parents[1]
CHUNKS = ROOT.parent / "shared" / "external-traces" / "helloimrizy-pages__opt" / "decode_traces" / "chunks"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="lru")
    ap.add_argument("--predictor", default="popularity")
    ap.add_argument("--capacity", type=int, default=256)
    ap.add_argument("--scope", default="global")
    ap.add_argument("--horizon", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--domain", default=None, help="replay one domain only")
    ap.add_argument("--dram-gb", type=float, default=None, help="host tier size (turns the SSD tier on)")
    ap.add_argument("--miss", default="fetch", help="miss handler")
    ap.add_argument("--copy-engines", type=int, default=1)
    ap.add_argument(
        "--executor", default="fast", choices=("auto", "sim", "fast"), help="executor to time (default fast)"
    )
    ap.add_argument("--check", action="store_true", help="compare sim and fast runs through the pipeline")
    ap.add_argument("--whole-run", action="store_true", help="time a complete `moesim run` process")
    ap.add_argument("--trace", type=Path, default=Path("/tmp/olmoe.moetrace"), help="for --whole-run")
    args = ap.parse_args()
    if not CHUNKS.is_dir():
        print(f"needs {CHUNKS}", file=sys.stderr)
        return 2
    t = time.perf_counter()
    trace = import_trace("olmoe-npz", [CHUNKS])
    if args.domain:
        trace = trace.select_domain(args.domain)
    print(
        f"import: {time.perf_counter() - t:.2f} s ({trace.num_sequences} sequences, {trace.num_tokens} tokens)"
    )
    model = get_model("olmoe-1b-7b")
    sc = Scenario(
        name="bench",
        predictor=PredictorConfig(name=args.predictor, horizon=args.horizon),
        cache=CacheConfig(policy=args.policy, capacity=args.capacity, scope=args.scope),
        tiers=TiersConfig(dram_gb=args.dram_gb),
        miss=MissConfig(policy=args.miss),
        hardware=HardwareConfig(copy_engines=args.copy_engines),
    )
    profile = load_profile("estimated:h100-pcie", model)
    k = model.top_k
    p = Prepared(sc, model, trace, CHUNKS, profile, 512, k, k)
    steps = trace.num_tokens * model.num_moe_layers
    best = 0.0
    if args.executor != "sim":
        from moesim.engine.fast.eligibility import core_gap
        from moesim.engine.fast.executor import FastExecutor
        from moesim.engine.fast.jit import warm_kernels

        gap = core_gap(build_core(p))
        if gap and args.executor == "fast":
            print(f"the fast executor does not cover {gap}; use --executor sim", file=sys.stderr)
            return 2
        if gap:
            print(f"auto: the fast executor does not cover {gap}; timing sim")
        args.executor = "sim" if gap else "fast"
    if args.executor == "fast":
        warm_kernels()
    # sim: the groups built once, as a run's cache keeps them; fast: its steps come from the trace
    groups = list(p.groups()) if args.executor == "sim" else []
    for i in range(args.repeat):
        core = build_core(p)
        costs = CostModel(profile, model, args.copy_engines)
        t = time.perf_counter()
        c0 = time.process_time()
        if args.executor == "fast":
            # a fresh plan key per repeat: the prediction pass is timed too, never reused
            fast = FastExecutor(costs, 512, trace=trace)
            stats = fast.run(core, groups)
            core = fast.counters  # type: ignore[assignment]
        else:
            stats = SimExecutor(costs, 512).run(core, groups)
        dt = time.perf_counter() - t
        cpu = time.process_time() - c0
        rate = steps / dt
        best = max(best, rate)
        print(f"run {i + 1} ({args.executor}): CPU {cpu:.2f} s = {steps / cpu:,.0f} layer-steps per CPU-s")
        print(
            f"run {i + 1}: {dt:.2f} s  {rate:,.0f} layer-steps/s  "
            f"(hit rate {(core.present - sum(stats.layer_late)) / core.accesses:.4f}, {core.prefetch_issued:,} prefetches)"
        )
    t = time.perf_counter()
    if args.executor == "sim":
        run_decisions(build_core(p, predictor_name="none"), p.groups())
    else:
        from moesim.experiments.pipeline import _fast_baseline

        _fast_baseline(p, build_core(p, predictor_name="none"))
    print(
        f"on-demand baseline replay (decisions only): {steps / (time.perf_counter() - t):,.0f} layer-steps/s"
    )
    print(
        f"best: {best:,.0f} layer-steps/s ({args.policy} + {args.predictor} prefetch, capacity {args.capacity} {args.scope})"
    )
    ok = True
    if args.check:
        ok = check(p)
    if args.whole_run:
        ok = whole_run(args, trace) and ok
    print(f"load average now {os.getloadavg()[0]:.1f}")
    return 0 if ok else 1


def check(p: Prepared) -> bool:
    """The scenario through the run pipeline on both executors, compared exactly."""
    import dataclasses

    from moesim.experiments.cache import RunCache
    from moesim.experiments.pipeline import simulate

    sys.path.insert(0, str(ROOT))
    from tests.engine.fastdiff import differences  # the differential tests' comparison

    runs = {}
    for executor in ("sim", "fast"):
        # its own cache: neither run reuses the other's on-demand baseline
        q = dataclasses.replace(
            p, scenario=dataclasses.replace(p.scenario, executor=executor), cache=RunCache()
        )
        t, c = time.perf_counter(), time.process_time()
        runs[executor] = simulate(q)
        ran = runs[executor].summary["provenance"]["executor"]
        print(
            f"pipeline run ({executor}, ran {ran}): {time.perf_counter() - t:.1f} s wall, {time.process_time() - c:.1f} s CPU"
        )
    diffs = differences(runs["sim"], runs["fast"])
    print(
        "sim vs fast: "
        + ("OK (summary bytes but the executor field, tables exact)" if not diffs else "DIFFERS")
    )
    for line in diffs[:12]:
        print("  " + line)
    return not diffs


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def whole_run(args: argparse.Namespace, trace) -> bool:
    """``moesim run`` of the benchmark's scenario in a new process, wall and CPU seconds."""
    from moesim.traces.native import save_trace

    if not args.trace.exists():
        save_trace(trace if not args.domain else import_trace("olmoe-npz", [CHUNKS]), args.trace)
    sets = {
        "model.name": "olmoe-1b-7b",
        "trace.path": str(args.trace.resolve()),
        "hardware.profile": "estimated:h100-pcie",
        "predictor.name": args.predictor,
        "predictor.horizon": args.horizon,
        "cache.policy": args.policy,
        "cache.capacity": args.capacity,
        "cache.scope": args.scope,
        "miss.policy": args.miss,
        "hardware.copy_engines": args.copy_engines,
        "executor": args.executor,
    }
    if args.domain:
        sets["trace.domain"] = args.domain
    if args.dram_gb is not None:
        sets["tiers.dram_gb"] = args.dram_gb
    argv = [sys.executable, "-m", "moesim.cli.main", "run", "--quiet"]
    for key, value in sets.items():
        argv += ["--set", f"{key}={value}"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    with tempfile.TemporaryDirectory(prefix="bench-olmoe-") as tmp:
        t, c = time.perf_counter(), _children_cpu()
        proc = subprocess.run(
            [*argv, "--out", str(Path(tmp) / "run")], env=env, capture_output=True, text=True
        )
        wall, cpu = time.perf_counter() - t, _children_cpu() - c
    print(f"whole `moesim run` ({args.executor}): {wall:.2f} s wall, {cpu:.2f} s CPU, exit {proc.returncode}")
    if proc.returncode != 0:
        print(proc.stderr.strip()[-2000:])
    return proc.returncode == 0


if __name__ == "__main__":
    sys.exit(main())
