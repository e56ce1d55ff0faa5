"""Compiled kernels behind the hit-rate curves (numba, a dependency of moesim).

- ``lru_block``: one stack-distance pass gives LRU hits at every capacity. Under moesim's pinning
  (a miss never evicts an expert its own layer-step uses) LRU keeps the inclusion property at
  layer-step boundaries: the pool at capacity C after a step is the top C of the recency stack
  (the step's set, then the other residents' most recent ones). So an access hits at C exactly
  when its key's depth *at the start of its step* is <= C (or the key already came earlier in the
  same step). Depths are counted with a Fenwick tree over access timestamps, renumbered when it
  fills, so memory is O(keys), and the stream is fed block by block.
- ``belady_run``: one replay per capacity of farthest-next-use eviction over precomputed next-use
  positions, with an array heap bounded by rebuilding from the residents.

Both equal the reference per-capacity replays in moesim.analysis.hitrate hit for hit
(tests/analysis/test_curve_kernels.py).
"""

from __future__ import annotations

import numpy as np

try:  # optional: without numba the reference replays run instead
    from numba import njit

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised where numba is absent
    HAVE_NUMBA = False

    def njit(*args, **kwargs):  # type: ignore[no-redef]
        return args[0] if args and callable(args[0]) else (lambda f: f)


@njit(cache=True)
def _bit_add(bit, i, v):
    n = len(bit)
    while i < n:
        bit[i] += v
        i += i & -i


@njit(cache=True)
def _bit_prefix(bit, i):
    s = 0
    while i > 0:
        s += bit[i]
        i -= i & -i
    return s


@njit(cache=True)
def _compact(last_ts, owner, bit, now):
    """Renumber live timestamps 1..m in order; returns m (the new ``now``)."""
    m = 0
    for t in range(1, now + 1):
        x = owner[t]
        if x >= 0:
            m += 1
            owner[t] = -1
            owner[m] = x
            last_ts[x] = m
    bit[:] = 0
    for t in range(1, m + 1):
        _bit_add(bit, t, 1)
    return m


@njit(cache=True)
def _clear(last_ts, owner, bit, now):
    for t in range(1, now + 1):
        x = owner[t]
        if x >= 0:
            last_ts[x] = -1
            owner[t] = -1
    bit[:] = 0


@njit(cache=True)
def lru_block(keys, k, reset_at, last_ts, owner, bit, state, hist):
    """Feed one block of whole layer-steps (``len(keys) == k * len(reset_at)``).

    State carried across blocks: ``last_ts[key]`` (-1: not in the stack), ``owner[t]`` (key stamped
    t, -1: none), ``bit`` (Fenwick over stamps, ``len(owner) == len(bit)``), ``state = [now, marks]``.
    ``hist[0]`` counts repeats within a step (always hits), ``hist[d]`` accesses at depth d,
    ``hist[-1]`` cold misses (first use, or first since a reset).
    """
    size = len(bit) - 1
    now, marks = state[0], state[1]
    depth = np.empty(k, np.int64)
    for s in range(len(reset_at)):
        base = s * k
        if reset_at[s]:
            _clear(last_ts, owner, bit, now)
            now, marks = 0, 0
        if now + k > size:
            now = _compact(last_ts, owner, bit, now)
        for j in range(k):  # depths at the step's start, before any of its updates
            x = keys[base + j]
            t = last_ts[x]
            depth[j] = marks - _bit_prefix(bit, t - 1) if t > 0 else -1
        for j in range(k):
            x = keys[base + j]
            repeat = False
            for i in range(j):
                if keys[base + i] == x:
                    repeat = True
            if repeat:
                hist[0] += 1
            elif depth[j] < 0:
                hist[len(hist) - 1] += 1
            else:
                hist[depth[j]] += 1
            t = last_ts[x]
            if t > 0:
                _bit_add(bit, t, -1)
                owner[t] = -1
                marks -= 1
            now += 1
            last_ts[x] = now
            owner[now] = x
            _bit_add(bit, now, 1)
            marks += 1
    state[0], state[1] = now, marks


@njit(cache=True)
def _sift_up(heap, i):
    v = heap[i]
    while i > 0:
        p = (i - 1) >> 1
        if heap[p] >= v:
            break
        heap[i] = heap[p]
        i = p
    heap[i] = v


@njit(cache=True)
def _sift_down(heap, i, n):
    v = heap[i]
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and heap[c + 1] > heap[c]:
            c += 1
        if heap[c] <= v:
            break
        heap[i] = heap[c]
        i = c
    heap[i] = v


@njit(cache=True)
def _pop(heap, n):
    top = heap[0]
    n -= 1
    if n > 0:
        heap[0] = heap[n]
        _sift_down(heap, 0, n)
    return top, n


@njit(cache=True)
def _rebuild(heap, cur):
    n = 0
    for y in range(len(cur)):
        if cur[y] >= 0:
            heap[n] = cur[y]
            n += 1
    for i in range(n // 2 - 1, -1, -1):
        _sift_down(heap, i, n)
    return n


@njit(cache=True)
def next_positions_into(keys, num_keys, out):
    """``out[i]``: next position of ``keys[i]``'s key (``len(keys)`` if none); one backward pass."""
    n = len(keys)
    first = np.full(num_keys, n, np.int64)
    for i in range(n - 1, -1, -1):
        x = keys[i]
        out[i] = first[x]
        first[x] = i


@njit(cache=True)
def belady_run(keys, nxt, k, capacity, reset_at, num_keys):
    """Demand-only Belady hits at one capacity (same semantics as hitrate.belady_hits).

    ``nxt[i]``: next position of ``keys[i]``'s key, ``>= len(keys)`` for never. Heap entries are
    ``next_use * num_keys + (num_keys - 1 - key)``: the max is the farthest use, ties the lowest key.
    A step's own keys are pinned: the ones it has accessed are pushed only when it ends, and the
    ones it has not yet reached carry a next use inside the step, below every other resident's,
    so the heap's top live entry is always an evictable resident.
    """
    n = len(keys)
    cur = np.full(num_keys, -1, np.int64)  # key -> its live heap code, -1: not resident
    limit = 2 * capacity + 64
    heap = np.empty(limit + k + 2, np.int64)
    hsize, size, hits = 0, 0, 0
    for s in range(len(reset_at)):
        base = s * k
        if reset_at[s]:
            cur[:] = -1
            hsize, size = 0, 0
        for j in range(k):
            x = keys[base + j]
            if cur[x] >= 0:
                hits += 1
            elif size >= capacity:
                while True:  # drop stale entries; the first live one is the victim
                    top, hsize = _pop(heap, hsize)
                    y = num_keys - 1 - top % num_keys
                    if cur[y] == top:
                        cur[y] = -1
                        break
            else:
                size += 1
            cur[x] = min(nxt[base + j], n) * num_keys + (num_keys - 1 - x)
        for j in range(k):
            heap[hsize] = cur[keys[base + j]]
            _sift_up(heap, hsize)
            hsize += 1
        if hsize > limit:
            hsize = _rebuild(heap, cur)
    return hits
