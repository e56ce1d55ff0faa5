"""Belady's precomputed future index and the bounded lazy heaps (Belady, LFU).

The heaps are rebuilt from their live entries when stale ones pile up; these tests check the
rebuilt policies choose exactly what a brute-force reference chooses, on streams long enough that
rebuilds happen many times, and that the heap stays bounded.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.policies import future
from moesim.policies.caches.base import NEVER, CacheContext
from moesim.policies.caches.belady import Belady
from moesim.policies.caches.lfu import LFU
from moesim.policies.future import FutureIndex, next_positions


def _ref_next_use(stream, key, pos):
    for j in range(pos, len(stream)):
        if stream[j] == key:
            return j
    return NEVER


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 9), max_size=60), st.integers(1, 7))
def test_next_positions_across_chunk_boundaries(keys, chunk):
    stream = np.array(keys, dtype=np.int32)
    old = future._CHUNK
    future._CHUNK = chunk  # small chunks: every boundary case of the backward pass
    try:
        nxt = next_positions(stream)
    finally:
        future._CHUNK = old
    n = len(keys)
    want = [min(_ref_next_use(keys, k, i + 1), n) if _ref_next_use(keys, k, i + 1) != NEVER else n
            for i, k in enumerate(keys)]  # fmt: skip
    assert nxt.tolist() == want


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.integers(0, 9), min_size=1, max_size=60),
    st.lists(st.tuples(st.integers(0, 11), st.integers(0, 70)), max_size=40),
)
def test_next_use_answers_any_query(keys, queries):
    stream = np.array(keys, dtype=np.int32)
    idx = FutureIndex(stream)
    # replay-order queries (the cursor path), then arbitrary ones (behind the cursor too)
    for key, pos in sorted(queries, key=lambda q: q[1]) + queries:
        assert idx.next_use(key, pos) == _ref_next_use(keys, key, pos)
    for pos, key in enumerate(keys):  # the hit path: the use after the access at pos
        assert idx.next_use(key, pos + 1) == _ref_next_use(keys, key, pos + 1)


def _ref_belady_victim(resident: dict[int, int], pinned) -> int | None:
    cands = [(-nu, k) for k, nu in resident.items() if k not in pinned]
    return min(cands)[1] if cands else None


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 11), min_size=1, max_size=400), st.integers(2, 6), st.integers(0, 2**31))
def test_belady_bounded_heap_matches_reference(keys, capacity, seed):
    """A demand replay with random pins and prefetches: every victim equals the brute-force
    farthest-next-use choice (ties to the lowest key), and the heap never exceeds ~2x residents."""
    rng = np.random.default_rng(seed)
    stream = np.array(keys, dtype=np.int32)
    idx = FutureIndex(stream)
    pol = Belady(capacity, CacheContext(1, 12, idx.next_use))
    ref: dict[int, int] = {}
    for pos, key in enumerate(keys):
        pinned = {key, *(int(x) for x in rng.integers(0, 12, size=int(rng.integers(0, 2))))}
        if rng.random() < 0.2:  # a prefetch of some other key at this position
            pkey = int(rng.integers(0, 12))
            if pkey not in pol and len(pol) < capacity:
                pol.admit(pkey, pos, True)
                ref[pkey] = _ref_next_use(keys, pkey, pos)
        if key in pol:
            pol.on_hit(key, pos)
            ref[key] = _ref_next_use(keys, key, pos + 1)
        else:
            if len(pol) >= capacity:
                v = pol.victim(pinned)
                assert v == _ref_belady_victim(ref, pinned)
                if v is None:
                    continue
                pol.evict(v)
                del ref[v]
            pol.admit(key, pos, False)
            ref[key] = _ref_next_use(keys, key, pos + 1)
        assert set(ref) == {k for k in range(12) if k in pol}
        assert len(pol._heap) <= 2 * len(pol) + 64 + 1


def test_belady_heap_stays_bounded_on_a_long_hit_stream():
    """All hits (the case that grew without bound): 200k accesses, the heap stays O(capacity)."""
    keys = np.tile(np.arange(8, dtype=np.int32), 25_000)
    pol = Belady(8, CacheContext(1, 8, FutureIndex(keys).next_use))
    for pos, key in enumerate(keys.tolist()):
        if key in pol:
            pol.on_hit(key, pos)
        else:
            pol.admit(key, pos, False)
    assert len(pol._heap) <= 2 * 8 + 64 + 1


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 11), st.booleans()), min_size=1, max_size=400), st.integers(2, 6))
def test_lfu_bounded_heap_matches_reference(ops, capacity):
    pol = LFU(capacity, CacheContext(1, 12))
    ref: dict[int, tuple[int, int]] = {}
    tick = 0
    for pos, (key, prefetch) in enumerate(ops):
        tick += 1
        if key in pol:
            pol.on_hit(key, pos)
            ref[key] = (ref[key][0] + 1, tick)
            continue
        if len(pol) >= capacity:
            v = pol.victim({key})
            assert v == min((f, t, k) for k, (f, t) in ref.items())[2]
            pol.evict(v)
            del ref[v]
        pol.admit(key, pos, prefetch)
        ref[key] = (0 if prefetch else 1, tick)
        assert len(pol._heap) <= 2 * len(pol) + 64 + 1


def test_lazy_index_is_built_once_on_the_first_query_and_answers_the_same():
    from moesim.policies.future import lazy_next_use

    rng = np.random.default_rng(5)
    stream = rng.integers(0, 12, 400).astype(np.int32)
    calls = []

    def make() -> np.ndarray:
        calls.append(1)
        return stream

    lazy = lazy_next_use(make)
    assert calls == []  # a fast run never asks: nothing built
    ref = FutureIndex(stream)
    queries = [(int(k), p) for p in range(0, 401, 3) for k in (stream[min(p, 399)], 0, 11)]
    assert [lazy(k, p) for k, p in queries] == [ref.next_use(k, p) for k, p in queries]
    assert calls == [1]
