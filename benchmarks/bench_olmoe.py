"""Simulator throughput on the full shared OLMoE trace (400 sequences, 51,112 tokens, 16 layers, k=8).

    python benchmarks/bench_olmoe.py [--policy lru] [--predictor popularity] [--capacity 256] [--repeat 3]

Prints layer-steps per second of the simulation executor (the policy core and SimPy timing model;
trace import and the on-demand baseline replay are timed separately). Needs ../shared/external-traces.
"""

from __future__ import annotations

import argparse
import sys
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
    ap.add_argument("--executor", default="fast", choices=("sim", "fast"), help="executor to time (default fast)")
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
    groups = list(p.groups())  # built once, as a run's cache keeps them
    if args.executor == "fast":
        from moesim.engine.fast.eligibility import core_gap
        from moesim.engine.fast.executor import FastExecutor
        from moesim.engine.fast.jit import warm_kernels

        gap = core_gap(build_core(p))
        if gap:
            print(f"the fast executor does not cover {gap}; use --executor sim", file=sys.stderr)
            return 2
        warm_kernels()
    for i in range(args.repeat):
        core = build_core(p)
        costs = CostModel(profile, model, args.copy_engines)
        t = time.perf_counter()
        c0 = time.process_time()
        if args.executor == "fast":
            # a fresh plan key per repeat: the prediction pass is timed too, never reused
            fast = FastExecutor(costs, 512)
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
    run_decisions(build_core(p, predictor_name="none"), p.groups())
    print(
        f"on-demand baseline replay (decisions only): {steps / (time.perf_counter() - t):,.0f} layer-steps/s"
    )
    print(
        f"best: {best:,.0f} layer-steps/s ({args.policy} + {args.predictor} prefetch, capacity {args.capacity} {args.scope})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
