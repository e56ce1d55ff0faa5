"""Fast demand-only LRU / Belady hit counters for hit-rate-vs-capacity curves.

These follow docs/design.md's reference cache semantics exactly (batch 1): sequences in trace order,
the cache warm across them unless ``reset_per_sequence``; per token, per MoE layer, the k ids in
rank order; a miss with a full pool evicts a resident expert *not in the current layer-step's set*
(the whole step is pinned, including ranks not yet accessed); LRU evicts the least recently used,
Belady the farthest next use (never = infinite, ties by lowest (layer, expert id)).
tests/analysis checks them against ``moesim.engine.decisions.run_decisions`` hit for hit.

Why a separate implementation: a curve needs one replay per capacity and policy, and the policy
core's per-access bookkeeping (prefetch state, pins, event records) costs ~10x more than these
tight loops. These Python replays are the reference; with numba installed ``hit_curves`` runs the
compiled fast path instead (moesim.analysis.fast_curves: LRU for every capacity from one
stack-distance pass, Belady one compiled replay per capacity), proven equal to them in tests. Per-layer scope is the global algorithm on each layer's own sub-stream (pools are
independent and a step only pins its own layer), summed.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from moesim.analysis.curve_kernels import HAVE_NUMBA
from moesim.errors import fail
from moesim.traces.trace import Trace

NEVER = 1 << 62  # same sentinel as the policy core's "never accessed again"
POLICIES = ("lru", "belady")
SCOPES = ("global", "per-layer")

# Accesses converted to Python ints at a time: bounded memory on million-token traces.
_CHUNK = 1 << 20


@dataclass(frozen=True)
class HitCurve:
    """Hits at each capacity for one policy and scope (capacity in expert slots)."""

    policy: str
    scope: str
    capacities: tuple[int, ...]
    hits: tuple[int, ...]
    accesses: int

    @property
    def hit_rates(self) -> tuple[float, ...]:
        return tuple(h / self.accesses if self.accesses else 0.0 for h in self.hits)


@dataclass(frozen=True)
class _Stream:
    keys: np.ndarray  # int64 layer * E + id, replay order
    k: int  # accesses per layer-step
    seq_starts: np.ndarray  # access index where each sequence starts (for resets)


def _stream(trace: Trace, layer: int | None = None) -> _Stream:
    """Replay-order keys; with ``layer`` only that layer's sub-stream."""
    L, E, k = trace.meta.num_layers, trace.meta.num_experts, trace.meta.top_k
    offs = (np.arange(L, dtype=np.int64) * E)[None, :, None]
    parts = []
    step = max(1, _CHUNK // max(1, L * k))
    for start in range(0, trace.num_tokens, step):
        block = np.asarray(trace.experts[start : start + step], dtype=np.int64)
        if layer is None:
            parts.append((block + offs).reshape(-1))
        else:
            parts.append((block[:, layer] + layer * E).reshape(-1))
    keys = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    per_token = k * (L if layer is None else 1)
    starts = np.asarray(trace.seq_offsets[:-1], dtype=np.int64) * per_token
    return _Stream(keys, k, starts)


def next_use(keys: np.ndarray) -> np.ndarray:
    """For each access, the index of the next access to the same key (NEVER if none)."""
    order = np.argsort(keys, kind="stable")
    nxt = np.full(len(keys), NEVER, dtype=np.int64)
    same = keys[order[1:]] == keys[order[:-1]]
    nxt[order[:-1][same]] = order[1:][same]
    return nxt


def _resets(stream: _Stream, reset: bool) -> set[int]:
    return {int(s) for s in stream.seq_starts[1:]} if reset else set()


def _steps(keys: np.ndarray, k: int) -> Iterator[tuple[int, list[int]]]:
    """(index of the step's first access, its k keys), converting to Python ints chunk by chunk."""
    chunk = max(k, (_CHUNK // k) * k)
    for base in range(0, len(keys), chunk):
        flat = keys[base : base + chunk].tolist()
        for j in range(0, len(flat), k):
            yield base + j, flat[j : j + k]


def lru_hits(stream: _Stream, capacity: int, reset: bool = False) -> int:
    k = stream.k
    resets = _resets(stream, reset)
    pool: OrderedDict[int, None] = OrderedDict()
    hits = 0
    for pos, step in _steps(stream.keys, k):
        if pos in resets:
            pool.clear()
        for key in step:
            if key in pool:
                hits += 1
                pool.move_to_end(key)
                continue
            if len(pool) >= capacity:
                victim = None
                for cand in pool:  # oldest first; at most k-1 pinned keys are skipped
                    if cand not in step:
                        victim = cand
                        break
                del pool[victim]
            pool[key] = None
    return hits


def belady_hits(stream: _Stream, capacity: int, reset: bool = False, nxt: np.ndarray | None = None) -> int:
    k = stream.k
    resets = _resets(stream, reset)
    if nxt is None:
        nxt = next_use(stream.keys)
    push, pop = heapq.heappush, heapq.heappop
    resident: dict[int, int] = {}  # key -> its next use
    heap: list[tuple[int, int]] = []  # (-next use, key), stale entries dropped lazily
    limit = 4 * capacity + 64
    hits = 0
    chunk = max(k, (_CHUNK // k) * k)
    for base in range(0, len(stream.keys), chunk):
        flat = stream.keys[base : base + chunk].tolist()
        nflat = (-nxt[base : base + chunk]).tolist()  # negated once here: heap order is farthest first
        for j in range(0, len(flat), k):
            if resets and base + j in resets:
                resident.clear()
                heap.clear()
            step = flat[j : j + k]
            for key, neg_nu in zip(step, nflat[j : j + k]):
                if key in resident:
                    hits += 1
                elif len(resident) >= capacity:
                    skipped = []
                    while True:
                        neg, cand = heap[0]
                        if resident.get(cand) != neg:
                            pop(heap)
                        elif cand in step:
                            skipped.append(pop(heap))
                        else:
                            break
                    pop(heap)
                    del resident[cand]
                    for item in skipped:
                        push(heap, item)
                resident[key] = neg_nu
                push(heap, (neg_nu, key))
            if len(heap) > limit:  # drop stale entries so the heap stays O(capacity)
                heap = [(v, c) for c, v in resident.items()]
                heapq.heapify(heap)
    return hits


def default_capacities(trace: Trace, scope: str = "global") -> tuple[int, ...]:
    """Powers of two from k up to (not including) the whole model: the interesting range."""
    m = trace.meta
    total = m.num_experts * (m.num_layers if scope == "global" else 1)
    caps, c = [], 1
    while c < total:
        if c >= m.top_k:
            caps.append(c)
        c *= 2
    return tuple(caps) or (total,)


def hit_curves(
    trace: Trace,
    capacities: Sequence[int] | None = None,
    policies: Sequence[str] = POLICIES,
    scope: str = "global",
    reset_per_sequence: bool = False,
    progress: Callable[[int], None] | None = None,
    *,
    fast: bool | None = None,
) -> dict[str, HitCurve]:
    """One curve per policy. ``progress(n)`` is told about each finished replay (the one-pass LRU
    counts as one per capacity). ``fast`` (default: when numba is installed) uses the compiled
    one-pass LRU and per-capacity Belady kernels; False runs the reference replays below."""
    if scope not in SCOPES:
        fail(f"cache scope {scope!r} is unknown; use one of {', '.join(SCOPES)}")
    bad = [p for p in policies if p not in POLICIES]
    if bad:
        fail(f"hit-rate policy {bad[0]!r} is unknown; use one of {', '.join(POLICIES)}")
    caps = tuple(int(c) for c in (capacities or default_capacities(trace, scope)))
    k = trace.meta.top_k
    for c in caps:
        if c < k:
            fail(f"capacity {c} is below top_k={k} for {scope} scope; every layer-step needs k slots")
    if fast is None:
        fast = HAVE_NUMBA
    if fast:
        from moesim.analysis.fast_curves import fast_hits

        accesses = trace.num_tokens * trace.meta.num_layers * k
        hits_by = fast_hits(trace, caps, policies, scope, reset_per_sequence, progress)
        return {p: HitCurve(p, scope, caps, hits_by[p], accesses) for p in policies}
    streams = (
        [_stream(trace)]
        if scope == "global"
        else [_stream(trace, layer) for layer in range(trace.meta.num_layers)]
    )
    accesses = sum(len(s.keys) for s in streams)
    out: dict[str, HitCurve] = {}
    for policy in policies:
        hits = []
        nxts = [next_use(s.keys) for s in streams] if policy == "belady" else None
        for c in caps:
            total = 0
            for i, s in enumerate(streams):
                if policy == "lru":
                    total += lru_hits(s, c, reset_per_sequence)
                else:
                    assert nxts is not None
                    total += belady_hits(s, c, reset_per_sequence, nxts[i])
            hits.append(total)
            if progress is not None:
                progress(1)
        out[policy] = HitCurve(policy, scope, caps, tuple(hits), accesses)
    return out
