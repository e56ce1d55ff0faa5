"""FastExecutor: a run as a prediction pass, a compiled decision pass and a compiled timing pass.

The policy core's decisions never depend on time (docs/engine.md), so the run splits: the
predictor's cut predictions for every planning call (``predictions``), the core's decisions over
them (``decide``), then ``SimExecutor``'s clock over those decisions (``timing``). It fills the same
``RunStats`` and, in place of the policy core's, a ``FastCounters`` with the counters the summary
reads, so ``summary.json`` equals the simulation executor's byte for byte (except the executor's
name). ``eligibility.run_gap`` says which runs it covers; the pipeline runs the others on ``sim``.

The three passes run chunk by chunk of whole groups (``chunks``), each carrying what crosses groups
(``decide.DecideState``, ``timing.TimingState``), so memory is bounded by a chunk plus the per-token
columns and samples the RunStats keeps for the whole run.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moesim.engine.fast import decide as decision_pass
from moesim.engine.fast.chunks import Chunk, RunSteps
from moesim.engine.fast.decide import (
    BYPASSED,
    L_ACC,
    L_EV,
    L_ISSUED,
    L_PRESENT,
    L_USEFUL,
    POLICY_CODES,
    REFETCHES,
    UNUSED,
    DecideState,
    Decisions,
    decide,
    next_uses,
)
from moesim.engine.fast.eligibility import CACHE_CLASSES
from moesim.engine.fast.overlap import overlapped
from moesim.engine.fast.predictions import PlanArrays, StepArrays, empty_plan, memo, plan_arrays, routing_plan
from moesim.engine.fast.timing import (
    BDEM,
    BPF,
    BWASTED,
    CANCEL,
    LATE,
    NOW,
    PF_LATE,
    WASTED,
    TimingState,
    timing,
)
from moesim.hardware.costs import CostModel
from moesim.metrics.stats import RunStats
from moesim.policies.core import PolicyCore
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


def _policy(core: PolicyCore) -> int:
    return POLICY_CODES[CACHE_CLASSES[type(core.pool.policies[0])]]


class _Decider:
    """The decision pass over a run's chunks, in order, for ``core``'s settings (a fresh core: it
    is only read), carrying its state from chunk to chunk."""

    def __init__(self, core: PolicyCore, steps: RunSteps):
        self.core = core
        self.policy = _policy(core)
        self.caps = np.asarray(core.pool.capacities, np.int64)
        K = core.L * core.E
        self.after = steps.first_after(K) if self.policy == POLICY_CODES["belady"] else None
        first = self.after[0] if self.after is not None else None
        self.state = DecideState.new(core.L, core.E, len(self.caps), first)
        self._n = 0
        self._dummy = np.zeros(1, np.int64)

    def __call__(self, chunk: Chunk, plan: PlanArrays) -> Decisions:
        core, st, s = self.core, self.state, chunk.steps
        self._n += 1
        after = self.after
        nxt = self._dummy if after is None else next_uses(s.keys, chunk.acc0, after[self._n])  # Belady's
        out = decide(
            s.step_ptr, s.keys, s.step_layer, s.step_token, s.grp_step0, s.grp_tok0, chunk.tok0,
            plan.ev_ptr, plan.ev_keys, core.pre_attention_fires, core.L, core.E, self.policy,
            core.pool.scope != "global", self.caps, decision_pass.SCAN_MAX, core._window, nxt, st.KS, st.K8,
            st.PS, st.SC, st.LC,
        )  # fmt: skip
        return Decisions(*out)


def run_decisions_fast(core: PolicyCore, steps: RunSteps) -> DecideState:
    """The decision pass alone with no predictions (the on-demand baseline): its final state, whose
    ``layer_accesses`` and ``layer_present`` count the run."""
    decider = _Decider(core, steps)
    for chunk in steps.chunks():
        decider(chunk, empty_plan(chunk.steps))
    return decider.state


class _Costs:
    """Per decode step its shape's costs (pre-attention, attention, gate, shared, predictor), each
    asked of the cost model once per distinct (batch, context) in the run."""

    def __init__(self, costs: CostModel, predictor: Predictor, prompt_tokens: int):
        self.costs, self.predictor, self.prompt_tokens = costs, predictor, prompt_tokens
        self.timed = type(predictor).latency_ms is not Predictor.latency_ms
        self.rows: dict[tuple[int, int], tuple[float, ...]] = {}
        self.expert: list[float] = [0.0]

    def _row(self, b: int, c: int) -> tuple[float, ...]:
        row = self.rows.get((b, c))
        if row is None:
            costs = self.costs
            row = self.rows[b, c] = (
                costs.pre_attention_ms(b),
                costs.attention_ms(b, c),
                costs.gate_ms(b),
                costs.shared_ms(b),
                self.predictor.latency_ms(b, c) if self.timed else 0.0,
            )
        return row

    def per_token(self, steps: StepArrays) -> list[np.ndarray]:
        batch = steps.tok_batch
        ctx = self.prompt_tokens + steps.tok_step
        span = int(ctx.max()) + 1 if len(ctx) else 1
        codes, inverse = np.unique(batch * span + ctx, return_inverse=True)  # one int per (batch, context)
        table = np.empty((len(codes), 5), np.float64)
        for i, (b, c) in enumerate(zip((codes // span).tolist(), (codes % span).tolist())):
            table[i] = self._row(b, c)
        per_token = table[np.asarray(inverse).reshape(-1)]
        return [np.ascontiguousarray(per_token[:, i]) for i in range(5)]

    def expert_ms(self, counts: np.ndarray) -> np.ndarray:
        """``expert_ms(c)`` for c = 0 .. the most tokens routed to one key in ``counts``."""
        max_count = int(counts.max()) if len(counts) else 1
        while len(self.expert) <= max(1, max_count):
            self.expert.append(self.costs.expert_ms(len(self.expert)))
        return np.array(self.expert[: max(1, max_count) + 1], np.float64)


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
        self.steps: RunSteps | None = None

    def run(self, core: PolicyCore, groups: Iterable[Group] | Callable[[], Iterable[Group]]) -> RunStats:
        """Replay ``groups`` (or a function returning them: called only when the groups themselves
        are needed, i.e. without ``self.trace`` or for a predictor the compiled pass does not cover),
        chunk by chunk (``chunks.RunSteps``)."""
        L = core.L
        steps = self.steps_of(groups, L)
        self.steps = steps
        pred = core.predictor
        decider = _Decider(core, steps)
        timer = _Timer(self.costs, core, self.prompt_tokens)
        plans = self._plans(core, steps)
        progress = self.progress

        def timed(chunk: Chunk, dec: Decisions) -> None:
            timer(chunk.steps, dec)
            if progress is not None:
                for n in np.diff(chunk.steps.grp_tok0).tolist():
                    progress(n)

        overlapped(steps.chunks(), lambda chunk: decider(chunk, plans(chunk)), timed)
        st = decider.state
        finish = st.finish_keys()
        stats = timer.stats(finish)
        LC, SC = st.LC, st.SC
        self.counters = FastCounters(
            L, pred, _ints(LC[L_ACC]), _ints(LC[L_PRESENT]), _ints(LC[L_ISSUED]), _ints(LC[L_USEFUL]),
            _ints(LC[L_EV]), int(SC[UNUSED]) + len(finish), int(SC[REFETCHES]), int(SC[BYPASSED]),
        )  # fmt: skip
        return stats

    def _plans(self, core: PolicyCore, steps: RunSteps) -> Callable[[Chunk], PlanArrays]:
        """Each chunk's predictions (chunks asked for in order); those of a run whose steps are kept
        (``RunSteps.kept``) are kept too, under ``plan_key``, for the runs sharing its predictor
        settings and groups."""
        pred, L = core.predictor, core.L
        n_pred, thr = core._n_pred, core._threshold
        groups_of = steps.group_lists()

        def build(chunk: Chunk) -> PlanArrays:
            fast = routing_plan(pred, chunk.steps, L, n_pred, thr)
            return fast if fast is not None else plan_arrays(pred, groups_of(chunk), n_pred, thr)

        kept = steps.kept
        if kept is None or self.plan_key is None:
            return build
        key = ("plan", id(kept), json.dumps(self.plan_key, sort_keys=True, default=str), n_pred, thr)
        plans = memo(key, (kept,), lambda: [build(chunk) for chunk in steps.chunks()])  # in order
        return lambda chunk: plans[chunk.index]

    def steps_of(self, groups, L: int) -> RunSteps:
        """The run's steps in chunks (from the trace's arrays when the executor has one)."""
        return RunSteps(L, self.trace, groups)


class _Timer:
    """The timing pass over a run's chunks, in order, carrying its state; the run's RunStats."""

    def __init__(self, costs: CostModel, core: PolicyCore, prompt_tokens: int):
        pred = core.predictor
        self.costs, self.core = costs, core
        self.table = _Costs(costs, pred, prompt_tokens)
        self.on_gpu = pred.runs_on == "gpu"
        self.fires_pre = pred.fires == PRE_ATTENTION
        self.state = TimingState.new(core.L, core.E, int(costs.copy_engines))
        # RunStats' per-token and per-sample columns, filled chunk after chunk
        self.cols: dict[str, array[Any]] = {name: array("q") for name in (*_TOK_IDS, *_TOK_INT)}
        self.cols |= {name: array("d") for name in _TOK_FLOAT}

    def _add(self, name: str, a: np.ndarray) -> None:
        col = self.cols[name]
        col.frombytes(np.ascontiguousarray(a, np.int64 if col.typecode == "q" else np.float64).tobytes())

    def __call__(self, steps: StepArrays, dec: Decisions) -> None:
        costs, core, st = self.costs, self.core, self.state
        c_norm, c_attn, c_gate, c_shared, c_pred = self.table.per_token(steps)
        on_gpu, fires_pre = self.on_gpu, self.fires_pre
        out = timing(
            steps.step_ptr, steps.keys, dec.acc_hit, dec.acc_pf, steps.counts, steps.grp_step0,
            steps.grp_tok0, steps.grp_counts, steps.step_layer, steps.step_token, dec.load_ptr,
            dec.load_keys, dec.pevp_ptr, dec.pevp_keys, dec.gevp_ptr, dec.gevp_keys, dec.cum_evictions,
            dec.cum_refetches,
            c_norm, c_attn, c_gate, c_shared, c_pred, fires_pre, on_gpu, on_gpu and not fires_pre,
            core.L, core.E, int(costs.copy_engines), float(costs.h2d_ms), int(costs.expert_bytes),
            float(costs.expert_ms(1)), self.table.expert_ms(steps.counts),
            st.FS, st.IS, st.free, st.c, st.inflight, st.CT, st.CS, st.LS, st.l_stall,
        )  # fmt: skip
        tok_lat, tok_comp, tok_stall, tok_int, lead, slack, st.CT, st.CS = out
        for name, a in zip(_TOK_IDS, (steps.tok_group, steps.tok_step, steps.tok_batch)):
            self._add(name, a)
        for name, a in zip(_TOK_FLOAT, (tok_lat, tok_comp, tok_stall, lead, slack)):
            self._add(name, a)
        for i, name in enumerate(_TOK_INT):
            self._add(name, tok_int[:, i])

    def stats(self, finish: np.ndarray) -> RunStats:
        """The run's RunStats, once every chunk is timed; ``finish``: prefetches never demanded,
        resident at the end (wasted)."""
        L, E, st = self.core.L, self.core.E, self.state
        LS = st.LS
        np.add.at(LS[WASTED], finish // E, 1)
        np.add.at(LS[BWASTED], finish // E, int(self.costs.expert_bytes))
        stats = RunStats(L)
        for name, col in self.cols.items():
            setattr(stats, name, col)
        stats.layer_late = _ints(LS[LATE])
        stats.layer_stall_ms = _floats(st.l_stall)
        stats.layer_bytes_demand = _ints(LS[BDEM])
        stats.layer_bytes_prefetch = _ints(LS[BPF])
        stats.layer_bytes_wasted = _ints(LS[BWASTED])
        stats.layer_prefetch_wasted = _ints(LS[WASTED])
        stats.layer_prefetch_cancelled = _ints(LS[CANCEL])
        stats.prefetch_late = int(st.IS[PF_LATE])
        stats.makespan_ms = float(st.FS[NOW])
        return stats


# RunStats' columns the timing pass fills: the token's identity (from the steps), the float ones in
# the order the kernel returns them, the integer ones in the order of its ``tok_int``
_TOK_IDS = ("tok_group", "tok_step", "tok_batch")
_TOK_FLOAT = ("tok_latency_ms", "tok_compute_ms", "tok_stall_ms", "lead_samples", "slack_samples")
_TOK_INT = ("tok_hits", "tok_late", "tok_misses", "tok_bytes_h2d", "tok_evictions", "tok_refetches")
