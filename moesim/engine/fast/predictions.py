"""The prediction pass: every planning call's cut prediction list for a whole run, as CSR arrays.

The covered predictors' predictions depend only on the routing they observe (never on the cache),
so they are computed once per run by calling the predictor object in the protocol's order
(``start``; per step ``observe`` then ``predict``, or ``predict`` then ``observe`` for one firing
before attention) and cut as the planner cuts them (top-n + over-provisioning, then the score
threshold). A sweep over cache sizes reuses them: ``cached_plan`` keeps the last few per
(predictor settings, replayed groups).
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np

from moesim.engine.fast import jit  # noqa: F401  (sets numba's cache folder before the kernels)
from moesim.policies.predictors.base import PRE_ATTENTION, Prediction, Predictor
from moesim.policies.predictors.oracle import Oracle
from moesim.policies.predictors.popularity import Popularity
from moesim.policies.predictors.prev_token import PreviousToken
from moesim.traces.replay import Group
from moesim.traces.trace import Trace

from numba import njit  # isort: skip

ORACLE, PREV_TOKEN, TABLE = 0, 1, 2


@dataclass(frozen=True)
class StepArrays:
    """The replayed groups flattened: keys per layer-step (CSR), tokens per key, group bounds, and
    per decode step its group index, step and batch (the tokens table's first columns)."""

    step_ptr: np.ndarray  # (steps + 1,)
    keys: np.ndarray  # (accesses,)
    counts: np.ndarray  # (accesses,) tokens routed to each key (1 where a group has no counts)
    grp_step0: np.ndarray  # (groups + 1,) first global step of each group
    grp_tok0: np.ndarray  # (groups + 1,) first global token (decode step) of each group
    grp_counts: np.ndarray  # (groups,) 1 where the group has per-key token counts
    step_layer: np.ndarray  # (steps,) layer of each step
    step_token: np.ndarray  # (steps,) global decode step of each step
    tok_group: np.ndarray  # (tokens,) Group.index
    tok_step: np.ndarray  # (tokens,) decode step within the group
    tok_batch: np.ndarray  # (tokens,) Group.active


def _finish(step_ptr, keys, counts, nsteps, ntok, grp_counts, index, active, L) -> StepArrays:
    grp_step0 = np.zeros(len(nsteps) + 1, np.int64)
    np.cumsum(nsteps, out=grp_step0[1:])
    grp_tok0 = np.zeros(len(ntok) + 1, np.int64)
    np.cumsum(ntok, out=grp_tok0[1:])
    local = np.arange(int(grp_step0[-1]), dtype=np.int64) - np.repeat(grp_step0[:-1], nsteps)
    step_token = np.repeat(grp_tok0[:-1], nsteps) + local // L
    tok_step = np.arange(int(grp_tok0[-1]), dtype=np.int64) - np.repeat(grp_tok0[:-1], ntok)
    tok_group = np.repeat(np.asarray(index, np.int64), ntok)
    return StepArrays(
        step_ptr, keys, counts, grp_step0, grp_tok0, grp_counts, local % L, step_token, tok_group,
        tok_step, active,
    )  # fmt: skip


def trace_steps(trace: Trace, lo: int = 0, hi: int | None = None) -> StepArrays:
    """``step_arrays`` of ``iter_groups(trace, batch=1)`` (one group per sequence, in order, its
    layer-steps the sequence's experts + ``layer * E``), built from the trace's arrays directly;
    ``lo, hi``: only sequences ``lo .. hi - 1``."""
    L, E, k = trace.meta.num_layers, trace.meta.num_experts, trace.meta.top_k
    hi = trace.num_sequences if hi is None else hi
    offsets = np.asarray(trace.seq_offsets[lo : hi + 1], np.int64)
    layer0 = (np.arange(L, dtype=np.int64) * E)[None, :, None]  # as replay.build_group's keys
    keys = (np.asarray(trace.experts[offsets[0] : offsets[-1]], np.int64) + layer0).reshape(-1)
    nsteps_all = len(keys) // k
    step_ptr = np.arange(nsteps_all + 1, dtype=np.int64) * k
    ntok = np.diff(offsets)
    n = hi - lo
    return _finish(
        step_ptr, keys, np.ones(len(keys), np.int64), ntok * L, ntok, np.zeros(n, np.int8),
        np.arange(lo, hi), np.ones(int(ntok.sum()), np.int64), L,
    )  # fmt: skip


@dataclass(frozen=True)
class PlanArrays:
    ev_ptr: (
        np.ndarray
    )  # (steps + groups + 1,): group g's start is event grp_step0[g] + g, step s event s + g + 1
    ev_keys: np.ndarray


def step_arrays(groups: Iterable[Group], L: int) -> StepArrays:
    """The groups flattened (read once: ``groups`` may be a generator, never held whole)."""
    key_parts, cnt_parts, lens_parts = [], [], []
    nsteps, ntok, has_counts, index, active = [], [], [], [], []
    for g in groups:
        lens = np.fromiter(map(len, g.steps), np.int64, count=len(g.steps))
        n = int(lens.sum())
        key_parts.append(np.fromiter(chain.from_iterable(g.steps), np.int64, count=n))
        if g.counts is not None:
            cnt_parts.append(np.fromiter(chain.from_iterable(g.counts), np.int64, count=n))
        else:
            cnt_parts.append(np.ones(n, np.int64))
        lens_parts.append(lens)
        nsteps.append(len(g.steps))
        ntok.append(g.num_tokens)
        has_counts.append(g.counts is not None)
        index.append(g.index)
        active.extend(g.active)
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.int64)  # noqa: E731
    lens_all = cat(lens_parts)
    step_ptr = np.zeros(len(lens_all) + 1, np.int64)
    np.cumsum(lens_all, out=step_ptr[1:])
    return _finish(
        step_ptr, cat(key_parts), cat(cnt_parts), np.asarray(nsteps, np.int64), np.asarray(ntok, np.int64),
        np.asarray(has_counts, np.int8), index, np.asarray(active, np.int64), L,
    )  # fmt: skip


@njit(cache=True)
def _routing_plan(step_ptr, keys, grp_step0, mode, h, L, n_cut, table, table_len):
    """The cut predictions of the predictors whose plan is a copy of known rows (their classes'
    ``start`` and ``predict``, restated): the oracle (step ``s + h``'s keys), previous-token (step
    ``s + h - L``'s, once observed) and a static per-layer table (popularity's ranking)."""
    G = len(grp_step0) - 1
    nev = len(step_ptr) - 1 + G
    ptr = np.zeros(nev + 1, np.int64)
    cap = 0
    for g in range(G):
        n = grp_step0[g + 1] - grp_step0[g]
        cap += (n + min(h, n)) * max(n_cut, table.shape[1] if mode == TABLE else 0)
    out = np.empty(cap, np.int64)
    m = 0
    e = 0
    for g in range(G):
        s0 = grp_step0[g]
        n = grp_step0[g + 1] - s0
        for op in range(n + 1):  # op 0: the group's start; op j: after step j - 1
            if op == 0:
                lo, hi = 0, (min(h, n) if mode != PREV_TOKEN else 0)  # start: targets 0 .. h-1
            else:
                s = op - 1
                t = s + h - L if mode == PREV_TOKEN else s + h
                ok = (0 <= t <= s) if mode == PREV_TOKEN else (t < n)
                lo, hi = (t, t + 1) if ok else (0, 0)
            for t in range(lo, hi):
                if mode == TABLE:
                    row = t % L
                    for j in range(min(n_cut, table_len[row])):
                        out[m] = table[row, j]
                        m += 1
                else:
                    a = step_ptr[s0 + t]
                    b = min(step_ptr[s0 + t + 1], a + n_cut)
                    for i in range(a, b):
                        out[m] = keys[i]
                        m += 1
            e += 1
            ptr[e] = m
    return ptr, out[:m]


def empty_plan(steps: StepArrays) -> PlanArrays:
    """One empty planning call per group start and per step."""
    n = len(steps.step_ptr) - 1 + len(steps.grp_step0) - 1
    return PlanArrays(np.zeros(n + 1, np.int64), np.zeros(0, np.int64))


def routing_plan(
    predictor: Predictor, steps: StepArrays, L: int, n_pred: int, threshold: float | None
) -> PlanArrays | None:
    """``plan_arrays`` for the oracle, previous-token and popularity predictors, compiled; None for
    any other class (exact class: a subclass may predict otherwise)."""
    cls = type(predictor)
    if not predictor.predicts:  # never predicts (checked by the contract tests): no plan at all
        return empty_plan(steps)
    table = np.zeros((1, 1), np.int64)
    table_len = np.zeros(1, np.int64)
    if cls is Oracle:
        mode = ORACLE
    elif cls is PreviousToken:
        mode = PREV_TOKEN
    elif cls is Popularity:
        assert isinstance(predictor, Popularity)
        mode = TABLE
        rows = []
        for keys, scores in zip(predictor._ranked, predictor._scores):
            cand = keys[:n_pred]
            if threshold is not None:
                cand = [k for k, sc in zip(cand, scores[:n_pred]) if sc >= threshold]
            rows.append(cand)
        width = max(1, max(len(r) for r in rows))
        table = np.zeros((L, width), np.int64)
        table_len = np.array([len(r) for r in rows], np.int64)
        for i, r in enumerate(rows):
            table[i, : len(r)] = r
    else:
        return None
    h = int(predictor.h)
    ptr, out = _routing_plan(
        steps.step_ptr, steps.keys, steps.grp_step0, mode, h, L, n_pred, table, table_len
    )
    return PlanArrays(ptr, out)


def plan_arrays(
    predictor: Predictor, groups: Sequence[Group], n_pred: int, threshold: float | None
) -> PlanArrays:
    """Call ``predictor`` as the policy core would over ``groups`` and keep each call's cut list."""
    out = array("q")
    ptr = array("q", [0])
    if not predictor.predicts:  # never predicts: one empty event per group start and step
        total = sum(len(g.steps) + 1 for g in groups)
        return PlanArrays(np.zeros(total + 1, np.int64), np.zeros(0, np.int64))

    def add(predictions: list[Prediction]) -> None:
        for _target, keys, scores in predictions:
            cand = keys[:n_pred]
            if threshold is not None and scores is not None:
                cand = [k for k, sc in zip(cand, scores[:n_pred]) if sc >= threshold]
            out.extend(cand)
        ptr.append(len(out))

    pre = predictor.fires == PRE_ATTENTION
    observe = predictor.observe if type(predictor).observe is not Predictor.observe else None
    predict = predictor.predict
    for group in groups:
        first = predictor.start(group)
        whole = predictor.planned(n_pred, threshold)
        if whole is not None:  # the group's predictions at once (Prophet's batch inference)
            sizes, keys = whole
            ptr.extend((len(out) + np.cumsum(sizes)).tolist())
            out.frombytes(np.ascontiguousarray(keys, np.int64).tobytes())
            continue
        add(first)
        steps = group.steps
        for s in range(len(steps)):
            if pre:
                add(predict(s))
                if observe is not None:
                    observe(s, steps[s])
            else:
                if observe is not None:
                    observe(s, steps[s])
                add(predict(s))
    return PlanArrays(np.frombuffer(ptr, np.int64).copy(), np.frombuffer(out, np.int64).copy())


# -- reuse across the runs of one process (a sweep's worker) ------------------------------------------
_CACHE: OrderedDict[Hashable, tuple[object, object]] = OrderedDict()
_CACHE_SIZE = 12


def memo(key: Hashable, anchors: tuple, build):
    """``build()`` kept under ``key``; ``anchors`` are the objects whose ids ``key`` holds, kept
    alive with the entry so an id cannot be reused by another object while it is cached."""
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit[0]
    value = build()
    _CACHE[key] = (value, anchors)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return value
