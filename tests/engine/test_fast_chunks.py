"""The fast executor in chunks of groups equals it in one chunk, byte for byte.

A long run is streamed chunk by chunk (``moesim.engine.fast.chunks``), the decision pass's state
(the cache's residents and each policy's order and counters, prefetch flags, refetch window, Belady's
next uses) and the timing pass's (clock, copy lanes, the prefetch queue, copies in flight) carried
from one to the next. Here the chunk size is set to a few accesses so that a tiny run crosses many
chunk boundaries: one group per chunk, about two, and a size that splits at uneven places; every
run must equal the same run in one chunk (``fastdiff.differences``: summary.json bytes, the tokens,
layers and extras tables exactly), and the saturated cases must carry copies still queued or in
flight across a boundary (else they would not test what they are named after).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from moesim.engine.fast import chunks
from tests.engine.fastdiff import differences, executor_of, needs_fast, run, write_inputs
from tests.helpers import random_trace

pytestmark = needs_fast

L, E, K = 3, 8, 2
LENGTHS = [9, 5, 12, 7, 3, 8, 6, 10]
PER_TOKEN = L * K  # routed accesses per token of a sequence
# chunk sizes (accesses): one group per chunk, about two groups of batch 1, an odd size (uneven splits)
# (batch 1: groups of 54, 30, 72, 42, 18, 48, 36, 60 accesses)
SIZES = {"one-group": 1, "two-groups": 90, "odd": 97}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, Any]:
    trace = random_trace(np.random.default_rng(31), len(LENGTHS), LENGTHS, L, E, K)
    return write_inputs(tmp_path_factory.mktemp("chunks"), trace)


class Boundaries:
    """What the timing pass carries at each chunk boundary (a spy on the executor's kernel)."""

    def __init__(self, mp: pytest.MonkeyPatch):
        import moesim.engine.fast.executor as fx
        from moesim.engine.fast import timing as ft

        self.calls = 0
        self.ends: list[tuple[bool, bool, bool]] = []  # per chunk: (queued, in flight, lane busy)
        kernel = fx.timing
        names = list(ft.timing.py_func.__code__.co_varnames[: ft.timing.py_func.__code__.co_argcount])
        at = {n: names.index(n) for n in ("FS", "c", "inflight", "free")}

        def spy(*args):
            out = kernel(*args)
            self.calls += 1
            now, c, inflight = args[at["FS"]][ft.NOW], args[at["c"]], args[at["inflight"]]
            CT, CS = out[-2], out[-1]
            started = inflight[(inflight >= 0) & (CS[np.maximum(inflight, 0)] == ft.STARTED)]
            self.ends.append(
                (
                    bool(c[ft.QT] > c[ft.QH]),  # prefetches still queued
                    bool((CT[ft.END, started] > now).any()),  # a started copy ending after the clock
                    bool((args[at["free"]] > now).any()),  # a lane busy after the clock
                )
            )
            return out

        mp.setattr(fx, "timing", spy)

    def carried(self, what: int) -> int:
        """Boundaries between chunks (not the run's end) where ``ends[what]`` held."""
        return sum(e[what] for e in self.ends[:-1])


def _run(base: dict[str, Any], over: dict[str, Any], size: int | None, mp: pytest.MonkeyPatch):
    if size is not None:
        mp.setattr(chunks, "CHUNK_ACCESSES", size)
    spy = Boundaries(mp)
    result = run({**base, **over}, "fast")
    assert executor_of(result) == "fast"
    return result, spy


def _assert_chunked_equal(base: dict[str, Any], over: dict[str, Any], size: int) -> Boundaries:
    with pytest.MonkeyPatch.context() as mp:
        one, spy1 = _run(base, over, None, mp)
    assert spy1.calls == 1, "the reference must be one chunk"
    with pytest.MonkeyPatch.context() as mp:
        cut, spy = _run(base, over, size, mp)
    assert spy.calls >= 3, f"only {spy.calls} chunks"
    diffs = differences(one, cut)
    assert not diffs, f"chunked ({spy.calls} chunks) != one chunk ({over}):\n" + "\n".join(diffs[:12])
    return spy


SATURATED = {"hardware.h2d_gbps": 0.2, "predictor.overprovision": 2}
CASES: dict[str, dict[str, Any]] = {
    "lru-popularity": {"predictor.name": "popularity", "cache.capacity": 10},
    "lru-oracle-slow-link": {"predictor.name": "oracle", "predictor.horizon": 2, "cache.capacity": 6,
                             "hardware.h2d_gbps": 0.02},
    "lru-popularity-saturated-2lanes": {
        "predictor.name": "popularity", "hardware.copy_engines": 2, "cache.capacity": 6, **SATURATED,
    },
    "lru-noisy-oracle-saturated-2lanes-b2": {
        "predictor.name": "noisy-oracle", "hardware.copy_engines": 2, "cache.capacity": 16, "batch": 2,
        **SATURATED,
    },
    "lfu-noisy-oracle-saturated": {
        "predictor.name": "noisy-oracle", "cache.policy": "lfu", "cache.capacity": 16,
        "predictor.overprovision": 2, "hardware.h2d_gbps": 2,
    },
    "lru-prev-token-2lanes-b2": {
        "predictor.name": "prev-token", "predictor.horizon": 2, "hardware.copy_engines": 2, "batch": 2,
        "cache.capacity": 6, "hardware.h2d_gbps": 0.02,
    },
    "fifo-prev-token-per-layer": {
        "predictor.name": "prev-token", "predictor.horizon": 2, "cache.policy": "fifo",
        "cache.scope": "per-layer", "cache.capacity": 3, "hardware.h2d_gbps": 0.2,
    },
    "lfu-markov-latency-b3": {
        "predictor.name": "markov", "predictor.params.runs_on": "gpu", "predictor.params.latency_ms": 0.3,
        "predictor.replay_training": True, "cache.policy": "lfu", "cache.capacity": 8, "batch": 3,
        "hardware.copy_engines": 2, "hardware.h2d_gbps": 0.2,
    },
    "belady-none": {"predictor.name": "none", "cache.policy": "belady", "cache.capacity": 5},
    "belady-oracle-per-layer-b2": {
        "predictor.name": "oracle", "cache.policy": "belady", "cache.scope": "per-layer",
        "cache.capacity": 4, "batch": 2, "hardware.h2d_gbps": 0.2,
    },
    "lru-none-refetch-window": {"predictor.name": "none", "cache.capacity": 4, "refetch_window": 40},
}  # fmt: skip


@pytest.mark.parametrize("size", sorted(SIZES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_chunked_run_equals_one_chunk(base, case, size):
    spy = _assert_chunked_equal(base, CASES[case], SIZES[size])
    if "saturated" in case and size == "one-group":  # every group boundary is a chunk boundary:
        # there are copies queued, copies running and lanes busy across one
        assert spy.carried(0) and spy.carried(1) and spy.carried(2), spy.ends


def test_generator_groups_in_chunks(base, monkeypatch):
    """Groups read from a generator (a trace too large for the run cache's lists) are chunked as
    they come: the same as one chunk of a list."""
    from moesim.engine.fast.executor import FastExecutor
    from moesim.experiments import pipeline
    from moesim.experiments.overrides import resolve_scenario
    from moesim.experiments.run import build_core

    sc = resolve_scenario(None, None, {**base, "batch": 2, "predictor.name": "markov",
                                       "predictor.replay_training": True, **SATURATED})  # fmt: skip
    p = pipeline.load(sc)
    costs = pipeline.cost_model(p)
    one = FastExecutor(costs, p.prompt_tokens).run(build_core(p), list(p.groups()))
    monkeypatch.setattr(chunks, "CHUNK_ACCESSES", 50)
    fx = FastExecutor(costs, p.prompt_tokens)
    cut = fx.run(build_core(p), lambda: iter(list(p.groups())))
    assert fx.steps is not None and fx.steps.kept is None
    assert _stats_bytes(one) == _stats_bytes(cut)


def _stats_bytes(stats) -> dict[str, bytes]:
    out = {}
    for name, value in vars(stats).items():
        out[name] = value.tobytes() if hasattr(value, "tobytes") else repr(value).encode()
    return out


@pytest.mark.parametrize("batch,lanes", [(1, 1), (1, 2), (3, 2)])
def test_pre_attention_predictor_in_chunks(batch, lanes, monkeypatch):
    """A GPU predictor firing before attention, with a cost (no built-in one does): its copies are
    issued before the gate, so a saturated link carries them across chunks."""
    from moesim.engine.fast.executor import FastExecutor
    from moesim.experiments.run import build_core
    from moesim.hardware.costs import CostModel
    from tests.engine.test_fast_executor import _core_with, _PreAttentionOracle, _prepared

    p = _prepared(["trace.max_sequences=6", f"batch={batch}", "cache.capacity=48", "predictor.horizon=2",
                   "hardware.h2d_gbps=2"])  # fmt: skip
    costs = CostModel(p.profile, p.model, lanes)
    groups = list(p.groups())
    setup = build_core(p).predictor.setup
    a = FastExecutor(costs, p.prompt_tokens)
    one = a.run(_core_with(p, _PreAttentionOracle(setup)), groups)
    monkeypatch.setattr(chunks, "CHUNK_ACCESSES", 1)
    b = FastExecutor(costs, p.prompt_tokens)
    cut = b.run(_core_with(p, _PreAttentionOracle(setup)), groups)
    assert a.steps is not None and a.steps.kept is not None and len(a.steps.kept) == 1
    assert b.steps is not None and b.steps.kept is not None and len(b.steps.kept) > 1
    assert _stats_bytes(one) == _stats_bytes(cut)
    assert a.counters is not None and b.counters is not None
    assert vars(a.counters) | {"predictor": None} == vars(b.counters) | {"predictor": None}
    assert sum(one.layer_late) > 0  # prefetches arriving late: the link is busy


def test_bounds_split_at_whole_groups(monkeypatch):
    monkeypatch.setattr(chunks, "CHUNK_ACCESSES", 10)
    assert chunks._bounds([4, 4, 4, 20, 1, 9, 0]) == [0, 2, 3, 4, 7]
    assert chunks._bounds([]) == [0, 0]
    monkeypatch.setattr(chunks, "CHUNK_ACCESSES", 1000)
    assert chunks._bounds([4, 4, 4]) == [0, 3]


def test_belady_lookahead_past_a_chunk(tmp_path: Path, monkeypatch):
    """Belady's next use of a key beyond a chunk's end: the first use after it, over every later chunk."""
    from moesim.engine.fast.decide import NEVER

    monkeypatch.setattr(chunks, "CHUNK_ACCESSES", 4)
    gl = [_group(i, keys) for i, keys in enumerate([[0, 1], [2, 3], [1, 4], [0, 0]])]
    steps = chunks.RunSteps(1, None, gl)
    after = steps.first_after(5)
    assert [c.acc0 for c in steps.chunks()] == [0, 4]
    assert after[0].tolist() == [0, 1, 2, 3, 5]
    assert after[1].tolist() == [6, 4, NEVER, NEVER, 5]
    assert after[2].tolist() == [NEVER] * 5


def _group(index: int, keys: list[int]):
    from moesim.traces.replay import Group

    return Group(index=index, seqs=(index,), steps=[keys], counts=None, active=[1], num_layers=1)
