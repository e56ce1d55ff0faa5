"""FastExecutor: a run as a prediction pass, a compiled decision pass and a compiled timing pass.

The policy core's decisions never depend on time (docs/engine.md), so the run splits: the
predictor's cut predictions for every planning call (``predictions``), the core's decisions over
them (``decide``), then ``SimExecutor``'s clock over those decisions (``timing``). It fills the same
``RunStats`` and, in place of the policy core's, a ``FastCounters`` with the counters the summary
reads, so ``summary.json`` equals the simulation executor's byte for byte (except the executor's
name). ``eligibility.run_gap`` says which runs it covers; the pipeline runs the others on ``sim``.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from moesim.engine.fast.decide import POLICY_CODES, Decisions, decide
from moesim.engine.fast.eligibility import CACHE_CLASSES
from moesim.engine.fast.predictions import (
    PlanArrays,
    StepArrays,
    memo,
    plan_arrays,
    routing_plan,
    step_arrays,
    trace_steps,
)
from moesim.engine.fast.timing import timing
from moesim.hardware.costs import CostModel
from moesim.metrics.stats import RunStats
from moesim.policies.core import PolicyCore
from moesim.policies.future import next_and_first
from moesim.policies.predictors.base import PRE_ATTENTION, Predictor
from moesim.policies.totals import LayerTotals
from moesim.traces.replay import Group
from moesim.traces.trace import Trace


@dataclass
class FastCounters(LayerTotals):
    """The policy core's counters after a fast run (``moesim.metrics.summary.CoreCounters``), plus
    the two attributes the pipeline reads of a core (``predictor``, ``log``)."""

    L: int
    predictor: Predictor
    layer_accesses: list[int]
    layer_present: list[int]
    layer_prefetch_issued: list[int]
    layer_prefetch_useful: list[int]
    layer_evictions: list[int]
    prefetch_unused: int = 0
    refetches: int = 0
    bypassed: int = 0
    misses_cpu: int = 0
    misses_skipped: int = 0
    misses_substituted: int = 0
    prefetch_stale: int = 0
    dram_hits: int = 0
    dram_misses: int = 0
    dram_evictions: int = 0
    log: list[tuple] | None = field(default=None, repr=False)


def _ints(a: np.ndarray) -> list[int]:
    return np.asarray(a, np.int64).tolist()  # Python ints, as the simulation executor's lists hold


def _floats(a: np.ndarray) -> list[float]:
    return np.asarray(a, np.float64).tolist()


def _int_array(a: np.ndarray) -> array:
    """A RunStats per-token column: int64 values in an ``array('q')``, as the simulator appends them."""
    return array("q", np.ascontiguousarray(a, np.int64).tobytes())


def _float_array(a: np.ndarray) -> array:
    return array("d", np.ascontiguousarray(a, np.float64).tobytes())


def run_decisions_fast(core: PolicyCore, steps: StepArrays, plan: PlanArrays) -> Decisions:
    """The decision pass for ``core``'s settings (a fresh core: it is only read)."""
    L, E = core.L, core.E
    pool = core.pool
    policy = POLICY_CODES[CACHE_CLASSES[type(pool.policies[0])]]
    caps = np.asarray(pool.capacities, np.int64)
    keys = steps.keys
    if policy == POLICY_CODES["belady"]:
        nxt, first = next_and_first(keys)
        nxt = nxt.astype(np.int64)
        first_all = np.full(L * E, len(keys), np.int64)
        first_all[: min(len(first), L * E)] = first[: L * E]
    else:
        nxt, first_all = np.zeros(len(keys), np.int64), np.zeros(L * E, np.int64)
    out = decide(
        steps.step_ptr, keys, steps.step_layer, steps.step_token, steps.grp_step0, steps.grp_tok0,
        plan.ev_ptr, plan.ev_keys, core.pre_attention_fires, L, E, policy, pool.scope != "global", caps,
        core._window, nxt, first_all,
    )  # fmt: skip
    return Decisions(*out[:16], int(out[16]), int(out[17]), int(out[18]))  # type: ignore[call-arg]


def _token_costs(costs: CostModel, predictor: Predictor, steps: StepArrays, prompt_tokens: int):
    """Per global decode step: its shape's costs (pre-attention, attention, gate, shared, predictor),
    each asked of the cost model once per distinct (batch, context)."""
    timed = type(predictor).latency_ms is not Predictor.latency_ms
    batch = steps.tok_batch
    ctx = prompt_tokens + steps.tok_step
    span = int(ctx.max()) + 1 if len(ctx) else 1
    codes, inverse = np.unique(batch * span + ctx, return_inverse=True)  # one int per (batch, context)
    table = np.empty((len(codes), 5), np.float64)
    for i, (b, c) in enumerate(zip((codes // span).tolist(), (codes % span).tolist())):
        table[i] = (
            costs.pre_attention_ms(b),
            costs.attention_ms(b, c),
            costs.gate_ms(b),
            costs.shared_ms(b),
            predictor.latency_ms(b, c) if timed else 0.0,
        )
    per_token = table[np.asarray(inverse).reshape(-1)]
    return [np.ascontiguousarray(per_token[:, i]) for i in range(5)]


class FastExecutor:
    name = "fast"

    def __init__(
        self,
        costs: CostModel,
        prompt_tokens: int,
        progress: Callable[[int], None] | None = None,
        plan_key: tuple | None = None,
        trace: Trace | None = None,
    ):
        self.costs = costs
        self.prompt_tokens = prompt_tokens
        self.progress = progress
        # identity of the predictor's inputs and settings: predictions are reused under it
        self.plan_key = plan_key
        self.counters: FastCounters | None = None
        # batch 1, no prefill: the groups are the trace's sequences, so the steps come from its arrays
        self.trace = trace
        self.steps: StepArrays | None = None

    def run(self, core: PolicyCore, groups: Iterable[Group] | Callable[[], Iterable[Group]]) -> RunStats:
        """Replay ``groups`` (or a function returning them: called only when the groups themselves
        are needed, i.e. without ``self.trace`` or for a predictor the compiled pass does not cover)."""
        L = core.L
        steps, get_groups = self.steps_of(groups, L)
        self.steps = steps
        pred = core.predictor
        n_pred, thr = core._n_pred, core._threshold

        def build() -> PlanArrays:
            fast = routing_plan(pred, steps, L, n_pred, thr)
            return fast if fast is not None else plan_arrays(pred, get_groups(), n_pred, thr)

        if self.plan_key is not None:
            key = ("plan", id(steps), json.dumps(self.plan_key, sort_keys=True, default=str), n_pred, thr)
            plan = memo(key, (steps,), build)
        else:
            plan = build()
        dec = run_decisions_fast(core, steps, plan)
        stats = self._timing(core, steps, dec)
        self.counters = FastCounters(
            L, pred, _ints(dec.layer_accesses), _ints(dec.layer_present), _ints(dec.layer_prefetch_issued),
            _ints(dec.layer_prefetch_useful), _ints(dec.layer_evictions), dec.prefetch_unused,
            dec.refetches, dec.bypassed,
        )  # fmt: skip
        if self.progress is not None:
            for n in np.diff(steps.grp_tok0).tolist():
                self.progress(n)
        return stats

    def steps_of(self, groups, L: int) -> tuple[StepArrays, Callable[[], list[Group]]]:
        """The flattened steps (kept per trace or per cached groups list across runs) and a function
        giving the groups as a list."""
        if self.trace is not None:  # batch 1: straight from the trace's arrays, no Group objects
            trace = self.trace
            steps = memo(("trace-steps", id(trace), L), (trace,), lambda: trace_steps(trace))
        elif isinstance(groups, list):  # a run cache's list: the same object for every run
            gl = groups
            steps = memo(("steps", id(gl), L), (gl,), lambda: step_arrays(gl, L))
        else:
            steps = None
        held: list[list[Group]] = []

        def get_groups() -> list[Group]:
            if not held:
                g = groups() if callable(groups) else groups
                held.append(g if isinstance(g, list) else list(g))
            return held[0]

        if steps is None:
            g = groups() if callable(groups) else groups
            if isinstance(g, list):
                held.append(g)
            steps = step_arrays(g, L)  # a generator is read once, never held whole
        return steps, get_groups

    def _timing(self, core: PolicyCore, steps: StepArrays, dec: Decisions) -> RunStats:
        costs, pred = self.costs, core.predictor
        c_norm, c_attn, c_gate, c_shared, c_pred = _token_costs(costs, pred, steps, self.prompt_tokens)
        on_gpu = pred.runs_on == "gpu"
        fires_pre = pred.fires == PRE_ATTENTION
        max_count = int(steps.counts.max()) if len(steps.counts) else 1
        expert_ms = np.array([0.0] + [costs.expert_ms(c) for c in range(1, max_count + 1)], np.float64)
        out = timing(
            steps.step_ptr, steps.keys, dec.acc_hit, dec.acc_pf, steps.counts, steps.grp_step0,
            steps.grp_tok0, steps.grp_counts, dec.load_ptr, dec.load_keys, dec.pevp_ptr, dec.pevp_keys,
            dec.gevp_ptr, dec.gevp_keys, dec.cum_evictions, dec.cum_refetches, dec.finish_keys,
            c_norm, c_attn, c_gate, c_shared, c_pred, fires_pre, on_gpu, on_gpu and not fires_pre,
            core.L, core.E, int(costs.copy_engines), float(costs.h2d_ms), int(costs.expert_bytes),
            float(costs.expert_ms(1)), expert_ms,
        )  # fmt: skip
        tok_lat, tok_comp, tok_stall, tok_int, layers, lead, slack, pf_late, makespan = out
        stats = RunStats(core.L)
        stats.tok_group = _int_array(steps.tok_group)
        stats.tok_step = _int_array(steps.tok_step)
        stats.tok_batch = _int_array(steps.tok_batch)
        stats.tok_latency_ms = _float_array(tok_lat)
        stats.tok_compute_ms = _float_array(tok_comp)
        stats.tok_stall_ms = _float_array(tok_stall)
        stats.tok_hits = _int_array(tok_int[:, 0])
        stats.tok_late = _int_array(tok_int[:, 1])
        stats.tok_misses = _int_array(tok_int[:, 2])
        stats.tok_bytes_h2d = _int_array(tok_int[:, 3])
        stats.tok_evictions = _int_array(tok_int[:, 4])
        stats.tok_refetches = _int_array(tok_int[:, 5])
        l_late, l_stall, l_bdem, l_bpf, l_bwasted, l_wasted, l_cancel = layers
        stats.layer_late = _ints(l_late)
        stats.layer_stall_ms = _floats(l_stall)
        stats.layer_bytes_demand = _ints(l_bdem)
        stats.layer_bytes_prefetch = _ints(l_bpf)
        stats.layer_bytes_wasted = _ints(l_bwasted)
        stats.layer_prefetch_wasted = _ints(l_wasted)
        stats.layer_prefetch_cancelled = _ints(l_cancel)
        stats.prefetch_late = int(pf_late)
        stats.lead_samples = _float_array(lead)
        stats.slack_samples = _float_array(slack)
        stats.makespan_ms = float(makespan)
        return stats
