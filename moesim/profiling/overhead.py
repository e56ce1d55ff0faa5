"""The live loop's own cost: what a layer-step takes beyond the kernels the tables time.

The LiveExecutor runs Python between kernels: the policy core's calls, slot bookkeeping, queueing
copies, reading copy states, the loop itself. None of it is in an op table, and on a CPU (or a
launch-bound GPU) it is a visible share of a layer-step. It is measured here as its own ops, with
the executor itself: a short synthetic decode of this model with every expert preloaded (capacity
L x E, no prediction), keeping only layer-steps with no miss and no copy in flight, and taking

  layer_overhead_pre_gate(batch)  = median[(gate decided - previous step ended) - (norm + attention + gate)]
  layer_overhead_post_gate(batch) = median[(step ended - gate decided - stall) - (shared + sum expert_ffn)]

with the kernel times interpolated from the tables just measured. The split matters: time spent
before the gate delays the issue of demand copies, time after it overlaps them.

On CUDA the host does not wait at a step's end, so only the whole step is measured (the residual of
each all-hit token over its layer-steps) and it is booked before the gate, where a launch-bound
host spends it (enqueueing the step's kernels before it can read the routing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from moesim.engine.live_executor import LiveExecutor, LiveOptions
from moesim.errors import fail
from moesim.hardware.profile import LatencyProfile
from moesim.hardware.table import Table
from moesim.policies.caches.base import CacheContext
from moesim.policies.core import PlannerConfig, PolicyCore
from moesim.policies.pool import ExpertPool
from moesim.policies.predictors.base import PredictorSetup
from moesim.policies.registries import CACHES, PREDICTORS
from moesim.traces.replay import iter_groups
from moesim.traces.synth import synthesize

if TYPE_CHECKING:
    from moesim.profiling.profiler import Profiler

MAX_LAYERS = 8  # the overhead is per layer-step; a few layers keep the measurement short
# Fewer usable samples than this (CUDA: tokens, CPU: layer-steps) and the median is no measurement:
# refuse rather than write a silent 0.
MIN_STEPS = 3


def _core(L: int, E: int, k: int, batch: int, capacity: int) -> PolicyCore:
    import moesim.policies.caches  # noqa: F401  (registration)
    import moesim.policies.predictors  # noqa: F401

    setup = PredictorSetup(L, E, k, batch, 1, 0, None, {})
    ctx = CacheContext(L, E, None)
    lru = CACHES.get("lru")

    class Resident(lru):  # type: ignore[misc, valid-type]
        """LRU with every expert loaded with the model: no token pays a cold miss."""

        def preload(self) -> list[int]:
            return list(range(min(self.capacity, L * E)))

    def pool() -> ExpertPool:
        return ExpertPool(Resident, capacity, "global", ctx, min(E, k * batch))

    return PolicyCore(PREDICTORS.get("none")(setup), pool, PlannerConfig(min(E, k * batch)), L, E)


def _pred_pre(profile: LatencyProfile, b: int, context: int) -> float:
    return (
        profile.time_ms("norm", tokens=b)
        + profile.time_ms("attention", batch=b, context=context)
        + profile.time_ms("gate", tokens=b)
    )


def _pred_post(profile: LatencyProfile, b: int, counts) -> float:
    sh = profile.time_ms("shared_expert_ffn", tokens=b) if profile.has("shared_expert_ffn") else 0.0
    return sh + sum(profile.time_ms("expert_ffn", tokens=int(n)) for n in counts)


def measure_loop_overhead(prof: Profiler, profile: LatencyProfile) -> list[Table]:
    m, s = prof.model, prof.s
    L = min(m.num_moe_layers, MAX_LAYERS)
    idx = m.moe_layer_indices[:L]
    from dataclasses import replace

    model = replace(m, moe_layer_indices=idx, num_layers=idx[-1] + 1)
    prompt = min(s.contexts)
    batches = tuple(sorted(set(s.batches)))
    pre_rows, post_rows, n_used, raw_pre, raw_post = [], [], [], [], []
    for b in batches:
        ex, stats = _overhead_run(prof, model, L, b, prompt)
        if prof.dev.is_cuda:
            pre, post = _cuda_residuals(ex, stats, profile, L)
        else:
            pre, post = _cpu_residuals(ex, profile)
        _check_enough(len(pre), b, L, s.overhead_tokens, prof.dev.is_cuda)
        n_used.append(len(pre))
        mp, mq = float(np.median(pre)), float(np.median(post))
        raw_pre.append(round(mp, 6))
        raw_post.append(round(mq, 6))
        pre_rows.append(round(max(0.0, mp), 6))
        post_rows.append(round(max(0.0, mq), 6))
    grid = (tuple(float(b) for b in batches),)
    info = prof.info
    base = {
        "kind": "measured",
        "device": info["device"],
        "driver": info["driver"],
        "cuda": info["cuda"],
        "torch": info["torch"],
        "date": info["date"],
        "host": info["host"],
        "statistic": "median over all-hit layer-steps with no copy in flight, floored at 0",
        "cache": "every expert preloaded (resident before the first token)",
        "min_steps": MIN_STEPS,
        "layers": L,
        "tokens_per_batch": s.overhead_tokens,
        "steps_used": n_used,
        "see": "moesim/profiling/overhead.py",
    }
    return [
        Table(
            "layer_overhead_pre_gate",
            ("batch",),
            grid,
            tuple(pre_rows),
            {
                **base,
                "method": "LiveExecutor layer-step from the previous step's end to the gate decision, "
                "minus norm + attention + gate from this profile",
                "raw_median_ms": raw_pre,
            },
        ),
        Table(
            "layer_overhead_post_gate",
            ("batch",),
            grid,
            tuple(post_rows),
            {
                **base,
                "method": "LiveExecutor layer-step from the gate decision to its end, minus stall, shared "
                "and routed expert FFNs from this profile"
                + (" (CUDA: not separable, booked before the gate)" if prof.dev.is_cuda else ""),
                "raw_median_ms": raw_post,
            },
        ),
    ]


def _overhead_run(prof: Profiler, model, L: int, b: int, prompt: int):
    """A short synthetic decode at batch ``b`` with every expert resident from the start: no token
    is lost to a cold cache, whatever the model's expert count."""
    m, s = prof.model, prof.s
    E, k = m.num_experts, m.top_k
    trace = synthesize(b, s.overhead_tokens, L, E, k, seed=s.seed + 7, domains=())
    group = next(iter_groups(trace, b))
    core = _core(L, E, k, b, L * E)
    opts = LiveOptions(
        device=str(prof.dev.torch_device),
        threads=prof.dev.threads,
        record_steps=True,
        keep_awake=s.keep_awake,
        realtime=s.realtime,
    )
    ex = LiveExecutor(model, prompt, b, prompt + s.overhead_tokens + 1, opts)
    stats = ex.run(core, [group])
    return ex, stats


def _check_enough(n: int, batch: int, L: int, tokens: int, cuda: bool) -> None:
    if n >= MIN_STEPS:
        return
    unit = "all-hit tokens" if cuda else "all-hit layer-steps"
    fail(
        f"loop overhead at batch {batch}: only {n} usable {unit} out of {tokens} tokens x {L} layers "
        f"(need {MIN_STEPS}); raise ProfileSettings.overhead_tokens or leave 'overhead' out of --ops"
    )


def _cpu_residuals(ex: LiveExecutor, profile: LatencyProfile) -> tuple[np.ndarray, np.ndarray]:
    pre, post = [], []
    for r in ex.steps:
        if r.step == 0 or r.misses or not r.copies_idle or r.stall > 0:
            continue
        pre.append((r.t_gate - r.prev_end) - _pred_pre(profile, r.batch, r.context))
        post.append((r.t_end - r.t_gate - r.stall) - _pred_post(profile, r.batch, r.counts))
    return np.asarray(pre), np.asarray(post)


def _cuda_residuals(
    ex: LiveExecutor, stats, profile: LatencyProfile, L: int
) -> tuple[np.ndarray, np.ndarray]:
    by_token: dict[int, list] = {}
    for r in ex.steps:
        by_token.setdefault(r.step // L, []).append(r)
    pre = []
    for row, t in enumerate(stats.tok_step):
        steps = by_token.get(t, [])
        if t == 0 or len(steps) != L or any(r.misses or not r.copies_idle for r in steps):
            continue
        pred = sum(
            _pred_pre(profile, r.batch, r.context) + _pred_post(profile, r.batch, r.counts) for r in steps
        )
        pre.append((stats.tok_latency_ms[row] - pred) / L)
    return np.asarray(pre), np.zeros(len(pre))
