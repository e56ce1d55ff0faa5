"""A Prophet run against a popularity run on one OLMoE domain (CPU and wall time; issue 14's target: <= 3x).

    python benchmarks/bench_learned.py                          # trains a small Prophet on coding (~30 s)
    python benchmarks/bench_learned.py --model /tmp/prophet.safetensors --domain general
    python benchmarks/bench_learned.py --per-step-sequences 2   # also time the per-step path (slow)

Replays the domain with each predictor (LRU 256, horizon 1) through each executor (``--executors``:
the simulation executor, policy core + SimPy timing model, and the compiled fast executor, which
replays Prophet's batched predictions since they depend only on the routing) and prints
CPU and wall seconds, layer-steps per wall second and the ratios on each (Prophet's network runs its
blocks on one thread per core, so its wall time is below its CPU time on an idle machine). The Prophet
figure includes building the predictor (loading the model, importing torch) and all its network
calls. Without --model a small Prophet (default architecture, 1 epoch on 20,000 samples) is
trained on --train-domain into a temporary directory, never into the repository. Needs
../shared/external-traces (or --trace). Not a test: CPU time on a shared machine is noisy; state
the load (``uptime``) with any figure.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHUNKS = ROOT.parent / "shared" / "external-traces" / "helloimrizy-pages__opt" / "decode_traces" / "chunks"


def _prepared(trace, predictor: str, params: dict, capacity: int, horizon: int):
    from moesim.experiments.run import Prepared
    from moesim.experiments.scenario import CacheConfig, PredictorConfig, Scenario
    from moesim.hardware import load_profile
    from moesim.models import get_model

    model = get_model("olmoe-1b-7b")
    sc = Scenario(
        name="bench-learned",
        predictor=PredictorConfig(name=predictor, horizon=horizon, params=params),
        cache=CacheConfig(policy="lru", capacity=capacity, scope="global"),
    )
    profile = load_profile("estimated:h100-pcie", model)
    return Prepared(sc, model, trace, CHUNKS, profile, 512, model.top_k, model.top_k), model, profile


def _timed_run(
    trace, predictor: str, params: dict, capacity: int, horizon: int, executor: str
) -> tuple[float, float, float]:
    """CPU and wall seconds of one run (predictor built inside the timing) and its hit rate."""
    from moesim.engine.fast.executor import FastExecutor
    from moesim.engine.sim_executor import SimExecutor
    from moesim.experiments.run import build_core
    from moesim.hardware.costs import CostModel

    p, model, profile = _prepared(trace, predictor, params, capacity, horizon)
    groups = list(p.groups())
    cls = SimExecutor if executor == "sim" else FastExecutor
    t, w = time.process_time(), time.perf_counter()
    core = build_core(p)
    stats = cls(CostModel(profile, model, 1), 512).run(core, groups)
    dt, dw = time.process_time() - t, time.perf_counter() - w
    hits, late, misses = sum(stats.tok_hits), sum(stats.tok_late), sum(stats.tok_misses)
    return dt, dw, hits / (hits + late + misses)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", help="an imported .moetrace (default: import the shared OLMoE chunks)")
    ap.add_argument("--domain", default="general", help="the domain replayed")
    ap.add_argument("--model", help="a Prophet model file (default: train a small one)")
    ap.add_argument("--train-domain", default="coding", help="domain the default model trains on")
    ap.add_argument("--capacity", type=int, default=256)
    ap.add_argument("--horizon", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2, help="runs of each; the fastest counts")
    ap.add_argument(
        "--per-step-sequences", type=int, default=0, help="also time the per-step path on this many sequences"
    )
    ap.add_argument("--executors", default="sim,fast", help="comma list of sim, fast")
    args = ap.parse_args()

    if args.trace:
        from moesim.traces.native import load_trace

        trace = load_trace(args.trace)
    else:
        if not CHUNKS.is_dir():
            print(f"no --trace and no shared OLMoE chunks at {CHUNKS}", file=sys.stderr)
            return 2
        from moesim.traces.importers import import_trace

        trace = import_trace("olmoe-npz", [CHUNKS])
    dom = trace.select_domain(args.domain)
    steps = dom.num_tokens * dom.meta.num_layers
    print(
        f"{args.domain}: {dom.num_sequences} sequences, {steps:,} layer-steps; load {os.getloadavg()[0]:.1f}"
    )

    model_path = args.model
    tmp = None
    if model_path is None:
        from moesim.policies.predictors.prophet import Prophet

        tmp = tempfile.TemporaryDirectory(prefix="bench-learned-")
        model_path = str(Path(tmp.name) / "prophet.safetensors")
        t = time.process_time()
        fitted = Prophet.fit_model(
            trace.select_domain(args.train_domain), {"epochs": 1, "max_samples": 20000}, seed=0
        )
        fitted.save(model_path)
        print(f"trained a small Prophet on {args.train_domain} in {time.process_time() - t:.1f} CPU-s")

    def best(name: str, params: dict, executor: str, tr=dom) -> tuple[float, float, float]:
        runs = [
            _timed_run(tr, name, params, args.capacity, args.horizon, executor) for _ in range(args.repeat)
        ]
        return min(r[0] for r in runs), min(r[1] for r in runs), runs[0][2]

    if "fast" in args.executors:  # compile (or load) the fast kernels outside the timings
        from moesim.engine.fast.warmup import run_tiny

        run_tiny()
    for executor in [e for e in args.executors.split(",") if e]:
        pop_s, pop_w, pop_hit = best("popularity", {}, executor)
        pro_s, pro_w, pro_hit = best("prophet", {"model": model_path}, executor)
        for name, cpu, wall, hit in (
            ("popularity", pop_s, pop_w, pop_hit),
            ("prophet", pro_s, pro_w, pro_hit),
        ):
            print(
                f"[{executor}] {name:10s}: {cpu:6.2f} CPU-s {wall:6.2f} s wall  {steps / wall:10,.0f} layer-steps/s"
                f"  (hit rate {hit:.4f})"
            )
        print(
            f"[{executor}] ratio prophet / popularity: {pro_s / pop_s:.2f}x CPU, {pro_w / pop_w:.2f}x wall"
            f" (target <= 3x); load {os.getloadavg()[0]:.1f}"
        )
    if args.per_step_sequences:
        cut = dom.select(range(min(args.per_step_sequences, dom.num_sequences)))
        n = cut.num_tokens * cut.meta.num_layers
        _, w, _ = best("prophet", {"model": model_path, "batch_inference": False}, "sim", cut)
        print(f"prophet per-step path: {n / w:10,.0f} layer-steps/s ({n:,} layer-steps)")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
