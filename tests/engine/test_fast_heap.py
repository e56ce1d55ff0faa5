"""LFU's and Belady's victim heaps in the fast decision pass (``moesim.engine.fast.heap``).

A pool of more than ``decide.SCAN_MAX`` slots keeps a heap; smaller ones scan (and the tiny cases
of the other fast tests are all small). So every test here sets ``SCAN_MAX`` to 0 (a heap in every
LFU/Belady pool) unless it says otherwise, and checks the heaps two ways:

- the helpers alone, driven through random admissions, hits and pins against a scan of the
  residents in the scan's order (LFU least ``(freq, tick)``, Belady farthest next use then lowest
  key, pinned keys skipped, -1 when every resident is pinned), in a slice of a larger array whose
  other slots must stay untouched, with little room so the heap is rebuilt often;
- whole runs against the simulation executor (``fastdiff``): ties (uniform routing, next uses
  never), heavy pinning (capacity of one layer-step, every resident pinned with ``cache.bypass``),
  per-layer and split scopes, small pools that scan beside large ones that keep a heap, and chunk
  boundaries (the heaps are rebuilt at each chunk).
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moesim.engine.fast import chunks, heap
from moesim.engine.fast import decide as decision_pass
from tests.engine.fastdiff import assert_same, differences, executor_of, needs_fast, run, write_inputs
from tests.engine.test_fast_differential import _trace, cases
from tests.helpers import random_trace

pytestmark = needs_fast

NEVER = decision_pass.NEVER
GUARD = -7  # what the slots around a heap's slice hold (and must still hold)


def test_decide_names_the_heap_it_inlines():
    """numba's cache of ``decide`` is keyed to decide.py's text: heap.py's digest there makes an edit
    of heap.py invalidate it (a stale cached kernel would keep the old helpers, silently)."""
    text = Path(heap.__file__).read_bytes().replace(b"\r\n", b"\n")
    digest = hashlib.blake2b(text, digest_size=8).hexdigest()
    assert digest == decision_pass.HEAP_DIGEST, f'heap.py changed: set HEAP_DIGEST = "{digest}" in decide.py'


# -- the helpers against a scan ----------------------------------------------------------------------
def _scan(order: list[int], pin, belady: bool, freq, tick, nu) -> int:
    """The victim as decide's scan picks it: residents in list order, the least priority wins."""
    best, v = None, -1
    for k in order:
        if pin[k]:
            continue
        p = (-int(nu[k]), k) if belady else (int(freq[k]), int(tick[k]))
        if best is None or p < best:
            best, v = p, k
    return v


class Pool:
    """One pool of capacity ``cap`` over ``K`` keys, its heap in ``H[:, off:off + room]``."""

    def __init__(self, K: int, cap: int, room: int, belady: bool, off: int = 5):
        self.K, self.cap, self.room, self.belady, self.off = K, cap, room, belady, off
        self.H = np.full((3, off + room + 5), GUARD, np.int64)
        self.aside = np.full((3, room), GUARD, np.int64)
        self.res = np.zeros(K, np.int8)
        self.pin = np.zeros(K, np.int8)
        self.freq = np.zeros(K, np.int64)
        self.tick = np.zeros(K, np.int64)
        self.nu = np.full(K, NEVER, np.int64)
        self.order: list[int] = []  # residents, oldest first (decide's list)
        self.clock = 0
        self.n = heap.rebuild(self.H, off, -1, self._lnext(), belady, self.freq, self.tick, self.nu)

    def _lnext(self) -> np.ndarray:
        lnext = np.full(self.K, -1, np.int64)
        for a, b in zip(self.order, self.order[1:]):
            lnext[a] = b
        return lnext

    def _first(self) -> int:
        return self.order[0] if self.order else -1

    def _push(self, key: int) -> None:
        self.n = heap.push(self.H, self.off, self.n, self.room, key, self._first(), self._lnext(), self.belady,
                           self.freq, self.tick, self.nu)  # fmt: skip
        assert 0 < self.n <= self.room

    def touch(self, key: int, nu: int, prefetch: bool) -> None:
        """A demand access (or a prefetch's admission) of ``key``: hit or admit, as decide does."""
        if self.res[key] and prefetch:
            return  # a prediction of a resident key changes nothing
        self.clock += 1
        if self.res[key]:
            self.freq[key] += 1
            self.tick[key] = self.clock
            self.nu[key] = nu
            self._push(key)
            return
        if len(self.order) >= self.cap:
            want = _scan(self.order, self.pin, self.belady, self.freq, self.tick, self.nu)
            v, self.n = heap.victim(self.H, self.off, self.n, self.aside, self.res, self.pin, self.belady,
                                    self.freq, self.tick, self.nu)  # fmt: skip
            assert v == want, (v, want)
            if v < 0:
                return  # every resident pinned: no slot
            self.order.remove(v)
            self.res[v] = 0
        self.order.append(key)
        self.res[key] = 1
        self.freq[key] = 0 if prefetch else 1
        self.tick[key] = self.clock
        self.nu[key] = nu
        self._push(key)

    def check_guards(self) -> None:
        assert (self.H[:, : self.off] == GUARD).all() and (self.H[:, self.off + self.room :] == GUARD).all()


ops = st.lists(
    st.tuples(st.sampled_from(["touch", "touch", "touch", "prefetch", "pin", "unpin"]), st.integers(0, 29),
              st.sampled_from([3, 5, 5, 9, NEVER, NEVER])),
    min_size=1, max_size=200,
)  # fmt: skip


@settings(max_examples=500, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    belady=st.booleans(),
    K=st.integers(1, 30),
    cap=st.integers(1, 12),
    extra=st.sampled_from([1, 2, 3, 40]),
    script=ops,
)
def test_victim_is_the_scans_choice(belady, K, cap, extra, script):
    """Few distinct next uses and frequencies (ties everywhere), pins drawn at random (often every
    resident pinned), and room for only a few stale entries (rebuilt often)."""
    pool = Pool(K, cap, cap + extra, belady)
    for op, key, nu in script:
        key %= K
        if op == "pin":
            pool.pin[key] = 1
        elif op == "unpin":
            pool.pin[key] = 0
        else:
            pool.touch(key, nu, op == "prefetch")
        pool.check_guards()
    pool.pin[:] = 0  # then empty it: every resident comes out in the scan's order
    while pool.order:
        want = _scan(pool.order, pool.pin, belady, pool.freq, pool.tick, pool.nu)
        v, pool.n = heap.victim(pool.H, pool.off, pool.n, pool.aside, pool.res, pool.pin, belady, pool.freq,
                                pool.tick, pool.nu)  # fmt: skip
        assert v == want
        pool.order.remove(v)
        pool.res[v] = 0
    pool.check_guards()


def test_every_resident_pinned_is_no_victim_and_keeps_the_heap():
    pool = Pool(6, 3, 10, belady=False)
    for k in (0, 1, 2):
        pool.touch(k, NEVER, prefetch=False)
    pool.pin[[0, 1, 2]] = 1
    n = pool.n
    assert heap.victim(pool.H, pool.off, pool.n, pool.aside, pool.res, pool.pin, False, pool.freq, pool.tick,
                       pool.nu) == (-1, n)  # fmt: skip
    pool.pin[1] = 0
    assert heap.victim(pool.H, pool.off, pool.n, pool.aside, pool.res, pool.pin, False, pool.freq, pool.tick,
                       pool.nu)[0] == 1  # fmt: skip


# -- whole runs against the simulator --------------------------------------------------------------
@pytest.fixture
def heaps(monkeypatch):
    """Every LFU/Belady pool on a heap, and proof that the kernel got the setting."""
    import moesim.engine.fast.executor as fx

    monkeypatch.setattr(decision_pass, "SCAN_MAX", 0)
    seen: list[int] = []
    kernel = fx.decide
    names = decision_pass.decide.py_func.__code__.co_varnames
    at = names.index("scan_max")

    def spy(*args):
        seen.append(args[at])
        return kernel(*args)

    monkeypatch.setattr(fx, "decide", spy)
    return seen


def _inputs(tmp: Path, L: int, E: int, k: int, lengths: list[int], seed: int, skew: float) -> dict[str, Any]:
    trace = random_trace(np.random.default_rng(seed), len(lengths), lengths, L, E, k, skew=skew)
    return write_inputs(tmp, trace)


L, E, K = 3, 10, 2
LENGTHS = [9, 5, 12, 7, 3, 8]
CASES: dict[str, dict[str, Any]] = {
    # uniform routing, no predictions: frequencies tie everywhere, ticks decide
    "ties-none": {"skew": 0.0, "predictor.name": "none", "cache.capacity": 9},
    # prefetches enter at frequency 0 (and Belady: next use "never" for wrong guesses, ties by key)
    "ties-noisy-oracle": {"skew": 0.0, "predictor.name": "noisy-oracle", "predictor.params.accuracy": 0.5,
                          "predictor.overprovision": 2, "predictor.horizon": 2, "cache.capacity": 7},
    # one layer-step's experts: the gate pins nearly every resident, the plans pin the rest
    "pinned-one-step-b2": {"predictor.name": "oracle", "predictor.horizon": 3, "predictor.overprovision": 2,
                           "batch": 2, "cache.capacity": 4},
    # below a layer-step: every resident pinned, misses streamed through
    "bypass": {"predictor.name": "popularity", "predictor.horizon": 2, "cache.bypass": True,
               "cache.capacity": 1, "batch": 2},
    "per-layer": {"predictor.name": "prev-token", "predictor.horizon": 2, "cache.scope": "per-layer",
                  "cache.capacity": 3},
    "split-b2": {"predictor.name": "oracle", "predictor.horizon": 2, "cache.scope": "split",
                 "cache.split": "proportional", "cache.capacity": 12, "batch": 2},
}  # fmt: skip


def _over(case: str, policy: str) -> tuple[float, dict[str, Any]]:
    over = dict(CASES[case])
    skew = over.pop("skew", 1.2)
    return skew, {**over, "cache.policy": policy, "hardware.h2d_gbps": 0.2}


@pytest.mark.parametrize("policy", ["lfu", "belady"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_heaps_equal_the_simulator(heaps, case, policy, tmp_path, monkeypatch):
    """One chunk, one group per chunk and an uneven chunk size: each equals the simulator."""
    skew, over = _over(case, policy)
    base = _inputs(tmp_path, L, E, K, LENGTHS, 7, skew)
    sim = run({**base, **over}, "sim")
    for size in (None, 1, 97):
        if size is not None:
            monkeypatch.setattr(chunks, "CHUNK_ACCESSES", size)
        calls = len(heaps)
        fast = run({**base, **over}, "fast")
        assert executor_of(fast) == "fast"
        assert_same(sim, fast, f"{case} {policy} chunk {size}")
        assert len(heaps) - calls >= (1 if size is None else 3) and set(heaps) == {0}
    cache = sim.summary["cache"]
    assert cache["evictions"] > 0, cache  # victims were chosen
    if case == "bypass":
        assert sim.summary["counts"]["misses_streamed"] > 0  # and none found, every resident pinned


def test_small_pools_scan_beside_heaps(tmp_path, monkeypatch):
    """Split capacities with SCAN_MAX between them: some layers scan, some keep a heap."""
    import moesim.engine.fast.executor as fx

    base = _inputs(tmp_path, 4, 10, 2, LENGTHS, 3, 1.2)
    caps: list[np.ndarray] = []
    kernel = fx.decide
    at = decision_pass.decide.py_func.__code__.co_varnames.index("caps")
    monkeypatch.setattr(fx, "decide", lambda *a: (caps.append(a[at].copy()), kernel(*a))[1])
    for policy in ("lfu", "belady"):
        over = {"predictor.name": "oracle", "predictor.horizon": 2, "cache.scope": "split", "cache.split": "dp",
                "cache.capacity": 16, "cache.policy": policy}  # fmt: skip
        sim = run({**base, **over}, "sim")
        caps.clear()
        run({**base, **over}, "fast")
        c = caps[0]
        assert c.min() < c.max() <= 10, c  # layers of different sizes, none holding every expert
        monkeypatch.setattr(decision_pass, "SCAN_MAX", int(c.min()))
        fast = run({**base, **over}, "fast")
        assert not differences(sim, fast), differences(sim, fast)
        monkeypatch.setattr(decision_pass, "SCAN_MAX", 64)


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
@given(data=st.data())
def test_heaps_equal_the_simulator_on_random_cases(data):
    """The differential suite's drawn cases (tests/engine/test_fast_differential.py), LFU or Belady,
    every pool on a heap."""
    case = data.draw(cases(data.draw(st.sampled_from(["oracle", "noisy-oracle", "popularity", "none"]))))
    over = {**case["overrides"], "cache.policy": data.draw(st.sampled_from(["lfu", "belady"]))}
    with pytest.MonkeyPatch.context() as mp, tempfile.TemporaryDirectory(prefix="heap-") as tmp:
        mp.setattr(decision_pass, "SCAN_MAX", 0)
        base = write_inputs(Path(tmp), _trace(case["shape"]), None, case["shape"]["shared"])
        sim, fast = run({**base, **over}, "sim"), run({**base, **over}, "fast")
    assert executor_of(fast) == "fast"
    assert_same(sim, fast, over)
