"""Golden hit counts: demand-only LRU and Belady against a reference written here from docs/design.md's
reference cache semantics, sharing no code with moesim."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

from moesim.hardware import estimate_profile
from tests.helpers import decisions, make_model, prepared, random_trace


def reference_hits(seq_arrays: list[np.ndarray], E: int, capacity: int, scope: str, policy: str) -> int:
    """Replay sequences in order, tokens, layers, ranks; victims exclude the current layer-step's experts."""
    accesses: list[tuple[int, int, int]] = []  # (step id, layer, expert)
    step = 0
    for arr in seq_arrays:
        T, L, _ = arr.shape
        for t in range(T):
            for layer in range(L):
                for e in arr[t, layer]:
                    accesses.append((step, layer, int(e)))
                step += 1
    n = len(accesses)
    nxt = [0] * n
    last: dict[tuple[int, int], int] = {}
    for i in range(n - 1, -1, -1):
        key = (accesses[i][1], accesses[i][2])
        nxt[i] = last.get(key, 1 << 60)
        last[key] = i
    # The gate picks a layer-step's k experts at once, so all of them are pinned for the whole step.
    step_sets: dict[int, set] = {}
    for st, layer, e in accesses:
        step_sets.setdefault(st, set()).add((layer, e))
    pools: dict[int, OrderedDict] = {}
    next_use: dict[tuple[int, int], int] = {}
    hits = 0
    for i, (st, layer, e) in enumerate(accesses):
        key = (layer, e)
        cur_set = step_sets[st]
        pool = pools.setdefault(layer if scope == "per-layer" else 0, OrderedDict())
        if key in pool:
            hits += 1
            pool.move_to_end(key)
        else:
            if len(pool) >= capacity:
                candidates = [r for r in pool if r not in cur_set]
                if policy == "lru":
                    victim = candidates[0]
                else:  # belady: farthest next use, ties by lowest (layer, expert)
                    victim = min(candidates, key=lambda r: (-next_use[r], r))
                del pool[victim]
            pool[key] = None
        next_use[key] = nxt[i]
    return hits


def _check(trace, model, capacities, scope):
    profile = estimate_profile(model, "h100-pcie")
    seqs = [np.asarray(trace.sequence(s)) for s in range(trace.num_sequences)]
    results = {}
    for cap in capacities:
        for policy in ("lru", "belady"):
            core = decisions(prepared(trace, model, profile, policy=policy, capacity=cap, scope=scope))
            ref = reference_hits(seqs, model.num_experts, cap, scope, policy)
            assert core.present == ref, (policy, cap, scope)
            assert core.misses == core.accesses - ref
            results[(policy, cap)] = ref
        assert results[("belady", cap)] >= results[("lru", cap)]
    return results


@pytest.mark.parametrize("scope,capacities", [("global", [8, 24, 64, 160]), ("per-layer", [2, 3, 6, 10])])
def test_synthetic_golden(scope, capacities):
    rng = np.random.default_rng(7)
    model = make_model(4, 16, 2)
    trace = random_trace(rng, 3, [40, 25, 33], 4, 16, 2)
    _check(trace, model, capacities, scope)


def test_pinned_numbers_tiny_trace():
    """Checked by hand: 1 layer, E=4, k=1, capacity 2, accesses 0 1 2 0 1 3 0.

    LRU:    0m 1m 2m(-0) 0m(-1) 1m(-2) 3m(-0) 0m(-1)            -> 0 hits
    Belady: 0m 1m 2m(-1: next 4 > 3) 0h 1m(-2: never) 3m(-1: never) 0h -> 2 hits
    """
    from moesim.traces.trace import Trace, TraceMeta

    ids = [0, 1, 2, 0, 1, 3, 0]
    ex = np.array(ids, np.int16).reshape(-1, 1, 1)
    trace = Trace(TraceMeta("t", 1, 4, 1), ex, np.array([0, len(ids)]), np.array([-1], np.int16))
    model = make_model(1, 4, 1)
    profile = estimate_profile(model, "h100-pcie")
    assert decisions(prepared(trace, model, profile, policy="lru", capacity=2)).present == 0
    assert decisions(prepared(trace, model, profile, policy="belady", capacity=2)).present == 2


@pytest.mark.shared
@pytest.mark.parametrize("scope,capacities", [("global", [64, 256, 512]), ("per-layer", [8, 16, 32])])
def test_olmoe_golden(external_traces, scope, capacities):
    from moesim.models import get_model
    from moesim.traces.importers import import_trace

    chunks = external_traces / "helloimrizy-pages__opt" / "decode_traces" / "chunks"
    # 12 sequences spread over the 4 domains keep the pure-Python reference fast.
    files = [
        chunks / domain / f"sequence_{i:04d}.npz"
        for base, domain in ((0, "general"), (100, "coding"), (200, "math"), (300, "reasoning"))
        for i in range(base, base + 3)
    ]
    trace = import_trace("olmoe-npz", files)
    assert trace.num_sequences == 12
    _check(trace, get_model("olmoe-1b-7b"), capacities, scope)
