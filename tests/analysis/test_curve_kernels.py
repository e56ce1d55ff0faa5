"""The compiled curves (one-pass LRU, per-capacity Belady kernel) equal the reference replays in
moesim.analysis.hitrate hit for hit, at every capacity from k to past the whole model, on
hypothesis-generated traces (pinned steps, sequence resets, repeated ids within a step, long
streams that renumber the LRU kernel's timestamps and rebuild Belady's heap)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.analysis import fast_curves
from moesim.analysis.curve_kernels import HAVE_NUMBA
from moesim.analysis.hitrate import hit_curves
from moesim.traces.trace import Trace, TraceMeta
from tests.helpers import random_trace

pytestmark = pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed (moesim[fast])")


def _both(trace: Trace, caps, scope: str, reset: bool):
    fast = hit_curves(trace, caps, scope=scope, reset_per_sequence=reset, fast=True)
    ref = hit_curves(trace, caps, scope=scope, reset_per_sequence=reset, fast=False)
    return fast, ref


def _all_caps(trace: Trace, scope: str) -> list[int]:
    m = trace.meta
    total = m.num_experts * (m.num_layers if scope == "global" else 1)
    return list(range(m.top_k, total + 3))


@st.composite
def traces(draw):
    L = draw(st.integers(1, 3))
    E = draw(st.integers(2, 9))
    k = draw(st.integers(1, min(3, E)))
    lens = draw(st.lists(st.integers(0, 14), min_size=1, max_size=4))
    if sum(lens) == 0:
        lens[0] = 1
    n = sum(lens)
    # ids drawn with repeats allowed inside a step: the kernels must treat a repeat as a hit
    ids = draw(st.lists(st.integers(0, E - 1), min_size=n * L * k, max_size=n * L * k))
    ex = np.array(ids, np.int16).reshape(n, L, k)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    return Trace(TraceMeta("h", L, E, k), ex, offsets, np.full(len(lens), -1, np.int16))


@settings(max_examples=150, deadline=None)
@given(traces(), st.sampled_from(["global", "per-layer"]), st.booleans())
def test_fast_equals_reference_every_capacity(trace, scope, reset):
    caps = _all_caps(trace, scope)
    fast, ref = _both(trace, caps, scope, reset)
    for p in ("lru", "belady"):
        assert fast[p].hits == ref[p].hits, p
        assert fast[p].accesses == ref[p].accesses


@pytest.mark.parametrize("scope", ["global", "per-layer"])
@pytest.mark.parametrize("reset", [False, True])
def test_long_stream_every_capacity(scope, reset, monkeypatch):
    """Long enough that the LRU kernel renumbers its timestamps many times, fed in small blocks
    (state carried across calls), and Belady rebuilds its heap; skewed and uniform popularity."""
    monkeypatch.setattr(fast_curves, "_TOKENS", 7)
    rng = np.random.default_rng(5)
    for skew in (1.2, 0.0):
        trace = random_trace(rng, 3, [150, 40, 110], 3, 12, 3, skew=skew)
        caps = _all_caps(trace, scope)
        fast, ref = _both(trace, caps, scope, reset)
        assert fast["lru"].hits == ref["lru"].hits
        assert fast["belady"].hits == ref["belady"].hits
        assert len(set(ref["lru"].hits)) > 5  # the curve actually varies over the capacities


def test_pinning_changes_lru_against_plain_stack_distance():
    """Steps {b, c} then {a, b}, capacity 2: plain LRU would evict b (the oldest) to fetch a,
    then miss b; pinning keeps b (same step), so b hits. The one-pass curve must say 1 hit."""
    ids = [[1, 2], [0, 1]]  # step 0: b=1, c=2; step 1: a=0 (evicts c, not the older b), b hits
    trace = Trace(
        TraceMeta("t", 1, 3, 2),
        np.array(ids, np.int16).reshape(2, 1, 2),
        np.array([0, 2]),
        np.array([-1], np.int16),
    )
    fast, ref = _both(trace, [2, 3], "global", False)
    assert fast["lru"].hits == ref["lru"].hits == (1, 1)
