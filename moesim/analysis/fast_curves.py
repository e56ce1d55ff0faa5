"""Hit counts at every capacity through the compiled kernels (moesim.analysis.curve_kernels).

Memory: LRU streams the trace block by block (state O(keys)); Belady holds one scope's key
stream (int16 where keys fit) and its next-use positions (int32): 6 bytes per access.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

from moesim.analysis.curve_kernels import belady_run, lru_block, next_positions_into
from moesim.traces.trace import Trace

_TOKENS = 1 << 15  # tokens per block fed to the LRU kernel


def _seq_start_flags(trace: Trace) -> np.ndarray:
    flags = np.zeros(trace.num_tokens, dtype=bool)
    starts = np.asarray(trace.seq_offsets[:-1], dtype=np.int64)
    flags[starts[starts < trace.num_tokens]] = True
    return flags


def _blocks(trace: Trace) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, trace.num_tokens, _TOKENS):
        yield start, np.asarray(trace.experts[start : start + _TOKENS], dtype=np.int64)


class _LruState:
    def __init__(self, num_keys: int, k: int):
        size = 4 * num_keys + 4 * k
        self.last_ts = np.full(num_keys, -1, np.int64)
        self.owner = np.full(size + 1, -1, np.int64)
        self.bit = np.zeros(size + 1, np.int64)
        self.state = np.zeros(2, np.int64)
        self.hist = np.zeros(num_keys + 2, np.int64)

    def feed(self, keys: np.ndarray, k: int, reset_at: np.ndarray) -> None:
        lru_block(keys, k, reset_at, self.last_ts, self.owner, self.bit, self.state, self.hist)

    def hits(self, capacities: Sequence[int]) -> list[int]:
        cum = np.cumsum(self.hist[:-1])  # cum[c]: repeats + accesses at depth <= c
        return [int(cum[min(c, len(cum) - 1)]) for c in capacities]


def lru_curve(trace: Trace, capacities: Sequence[int], scope: str, reset: bool) -> list[int]:
    m = trace.meta
    L, E, k = m.num_layers, m.num_experts, m.top_k
    offs = (np.arange(L, dtype=np.int64) * E)[None, :, None]
    flags = _seq_start_flags(trace) if reset else np.zeros(trace.num_tokens, dtype=bool)
    states = [_LruState(L * E, k)] if scope == "global" else [_LruState(E, k) for _ in range(L)]
    for start, block in _blocks(trace):
        f = flags[start : start + len(block)]
        if scope == "global":
            reset_at = np.zeros((len(block), L), dtype=bool)
            reset_at[:, 0] = f
            states[0].feed((block + offs).reshape(-1), k, reset_at.reshape(-1))
        else:
            for layer, st in enumerate(states):
                st.feed(np.ascontiguousarray(block[:, layer, :]).reshape(-1), k, f)
    totals = np.zeros(len(capacities), np.int64)
    for st in states:
        totals += st.hits(capacities)
    return [int(t) for t in totals]


def _scope_streams(trace: Trace, scope: str, reset: bool) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """(keys, per-step reset flags, number of keys) for the global stream or each layer's; keys are
    int16 where they fit, so with their int32 next uses Belady holds 6 bytes per access."""
    m = trace.meta
    L, E = m.num_layers, m.num_experts
    flags = _seq_start_flags(trace) if reset else np.zeros(trace.num_tokens, dtype=bool)
    layers = [None] if scope == "global" else list(range(L))
    n = trace.num_tokens * m.top_k * (L if scope == "global" else 1)
    dtype = np.int16 if L * E < 1 << 15 else np.int32
    offs = (np.arange(L, dtype=np.int64) * E)[None, :, None]
    for layer in layers:
        keys = np.empty(n, dtype)  # filled block by block: no list of parts to concatenate
        at = 0
        for _, block in _blocks(trace):
            flat = (block + offs).reshape(-1) if layer is None else block[:, layer, :].reshape(-1)
            keys[at : at + len(flat)] = flat
            at += len(flat)
        if layer is None:
            reset_at = np.zeros((trace.num_tokens, L), dtype=bool)
            reset_at[:, 0] = flags
            yield keys, reset_at.reshape(-1), L * E
        else:
            yield keys, flags, E


def belady_curve(
    trace: Trace, capacities: Sequence[int], scope: str, reset: bool, progress: Callable[[int], None] | None
) -> list[int]:
    k = trace.meta.top_k
    totals = np.zeros(len(capacities), np.int64)
    per_layer = scope != "global"
    for keys, reset_at, num_keys in _scope_streams(trace, scope, reset):
        nxt = np.empty(len(keys), np.int32 if len(keys) < np.iinfo(np.int32).max else np.int64)
        next_positions_into(keys, num_keys, nxt)
        for i, c in enumerate(capacities):
            totals[i] += belady_run(keys, nxt, k, c, reset_at, num_keys)
            if progress is not None and not per_layer:
                progress(1)
        del keys, nxt
    if progress is not None and per_layer:
        progress(len(capacities))
    return [int(t) for t in totals]


def fast_hits(
    trace: Trace,
    capacities: Sequence[int],
    policies: Sequence[str],
    scope: str,
    reset: bool,
    progress: Callable[[int], None] | None,
) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    for policy in policies:
        if policy == "lru":
            out[policy] = tuple(lru_curve(trace, capacities, scope, reset))
            if progress is not None:
                progress(len(capacities))
        else:
            out[policy] = tuple(belady_curve(trace, capacities, scope, reset, progress))
    return out
