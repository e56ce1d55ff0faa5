"""The live executor warms every prompt-pass shape its run will use (issue 13, item 3): each distinct
group prompt length and each distinct per-expert prompt token count, not only the longest prompt."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from moesim.engine.live import warmup
from moesim.engine.live.kernels import ModelKernels
from moesim.engine.live_executor import LiveExecutor, LiveOptions
from moesim.experiments.live import run_live
from tests.helpers import random_trace
from tests.live.conftest import E, K, L, live_prepared, tiny_model

OPTS = LiveOptions(device="cpu", keep_awake=False)
PROMPTS = [5, 9, 3, 7, 2]  # batch 2: groups of 14, 10 and 2 prompt tokens


def _trace():
    rng = np.random.default_rng(11)
    tr = random_trace(rng, len(PROMPTS), 3, L, E, K)
    pre = random_trace(rng, len(PROMPTS), PROMPTS, L, E, K)
    tr.prefill_experts = pre.experts
    tr.prefill_offsets = pre.seq_offsets
    return tr


def _expected(tr, batch: int) -> tuple[set[int], set[int]]:
    """Group prompt lengths and per-(layer, expert) prompt token counts, counted directly."""
    off = np.asarray(tr.prefill_offsets)
    lengths, counts = set(), set()
    for g in range(0, len(PROMPTS), batch):
        block = np.asarray(tr.prefill_experts[off[g] : off[min(g + batch, len(PROMPTS))]])
        lengths.add(len(block))
        for layer in range(L):
            counts.update(np.unique(block[:, layer, :], return_counts=True)[1].tolist())
    return lengths, counts


@pytest.fixture
def recorded(monkeypatch):
    """Rows of every prefill_attention / gate / expert call, split into warm-up and run."""
    calls: dict[str, Counter] = {"warm": Counter(), "run": Counter()}
    phase = ["run"]

    def wrap(name):
        orig = getattr(ModelKernels, name)

        def f(self, *a):
            x = a[-1] if name == "expert" else a[1]
            calls[phase[0]][(name, int(x.shape[0]))] += 1
            return orig(self, *a)

        monkeypatch.setattr(ModelKernels, name, f)

    for name in ("prefill_attention", "gate", "expert"):
        wrap(name)
    orig_warm = LiveExecutor._warm_up

    def warm(self, layers):
        phase[0] = "warm"
        try:
            orig_warm(self, layers)
        finally:
            phase[0] = "run"

    monkeypatch.setattr(LiveExecutor, "_warm_up", warm)
    return calls


def _shapes(counter: Counter, op: str) -> set[int]:
    return {n for (name, n) in counter if name == op}


def test_every_prompt_shape_is_warmed(recorded):
    tr = _trace()
    lengths, counts = _expected(tr, 2)
    assert len(lengths) == 3 and len(counts) > 3  # shorter prompts exist: max_prompt alone misses them
    run_live(live_prepared(tr, tiny_model(), prefill=True, batch=2, capacity=8), OPTS)
    warm, run = recorded["warm"], recorded["run"]
    # the warm-up ran each group prompt length through prefill attention: all 3, not the longest only
    assert _shapes(warm, "prefill_attention") == lengths
    assert _shapes(run, "prefill_attention") == lengths
    # ... and the gate at each length and each decode batch size
    assert _shapes(warm, "gate") == lengths | {1, 2}
    # every expert row count the run used was warmed (prompt counts and decode batch sizes)
    assert _shapes(run, "expert") <= _shapes(warm, "expert")
    assert _shapes(warm, "expert") == counts | {1, 2}
    # the longest prompt through every layer, the others through one
    assert recorded["warm"][("prefill_attention", max(lengths))] == L
    assert all(recorded["warm"][("prefill_attention", n)] == 1 for n in lengths - {max(lengths)})


def test_prompt_shapes_match_the_trace():
    tr = _trace()
    assert warmup.prompt_shapes(tr, 1).lengths == tuple(sorted(PROMPTS, reverse=True))
    for batch in (2, 3):
        lengths, counts = _expected(tr, batch)
        shapes = warmup.prompt_shapes(tr, batch)
        assert shapes.lengths == tuple(sorted(lengths, reverse=True))
        assert shapes.expert_tokens == tuple(sorted(counts, reverse=True))


def test_without_prefill_routing_nothing_to_warm():
    tr = random_trace(np.random.default_rng(1), 2, 3, L, E, K)
    assert warmup.prompt_shapes(tr, 1) == warmup.PromptShapes()


def test_bound_keeps_the_most_frequent_and_the_longest():
    c = Counter({3: 5, 4: 5, 2: 1, 100: 1})
    assert warmup._pick(c, 2) == (100, 4)  # 3 and 4 tie on count; the longer wins; 100 forced in
    assert warmup._pick(c, 3) == (100, 4, 3)
    assert warmup._pick(c, 10) == (100, 4, 3, 2)
    assert warmup._pick(Counter(), 3) == ()
