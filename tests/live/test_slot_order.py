"""A slot is written by one copy at a time and not overwritten while its layer-step still reads it:
the executor's slot bookkeeping (``_submit``) orders a copy into a slot after an earlier copy into it
still running on another lane, and after the step's compute (``SlotHold``) when the slot is one the
step reads (a substitute is not pinned by the core). Gated copies make the lanes' progress
deterministic."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import torch

from moesim.engine.live.copier import DONE, CopyWorker, LiveTransfer
from moesim.engine.live_executor import LiveExecutor, LiveOptions
from tests.live.test_copier import Gated, clock

SETTLE_S = 0.3  # ample for an idle lane to take a queued copy (it takes microseconds)


def executor(worker: CopyWorker, slots: int = 4) -> LiveExecutor:
    """Just the slot bookkeeping of a LiveExecutor, around a real copy worker."""
    ex = object.__new__(LiveExecutor)
    ex.options = LiveOptions()
    ex.store = SimpleNamespace(nbytes=1, scratch=[slots], num_slots=slots)
    ex._worker = worker
    ex._inflight, ex._slot_of = {}, {}
    ex._free = list(range(slots - 1, -1, -1))
    ex._scratch_next = ex._ssd_bytes = 0
    ex._writer, ex._hold, ex._held = {}, None, set()
    ex._arrived, ex._waiting = [], []
    ex.transfers = []
    return ex


def gate_step(ex: LiveExecutor, substitutes: list[int]) -> None:
    """The executor's ``gated`` phase on a step with no hits or misses, only substitutes."""
    out = SimpleNamespace(
        evicted=[], hit_keys=[], hit_was_prefetch=[], miss_keys=[], cpu_keys=[], substitutes=substitutes
    )
    ex._core = SimpleNamespace(out=out, dram=None, pool=set(ex._slot_of), simple=False)
    ex._stats = SimpleNamespace(layer_bytes_demand=[0])
    ex._layer, ex._t_gate, ex._h2d_bytes, ex._xg = 0, clock(), 0, None
    ex._grp = SimpleNamespace(counts=None, steps=[[]])
    ex.dev = SimpleNamespace(is_cuda=False)
    ex._pending = SimpleNamespace(slack=[])
    ex.gated(0)


def evict(ex: LiveExecutor, key: int) -> None:
    ex._free.append(ex._slot_of.pop(key))
    ex._inflight.pop(key, None)


@pytest.fixture
def lanes2():
    g = Gated()
    w = CopyWorker(g.issue, clock, lanes=2)
    yield g, w
    for key in range(100):
        g.gate(key).set()
    w.close()


def test_a_reused_slot_waits_for_the_copy_still_writing_it(lanes2):
    g, w = lanes2
    ex = executor(w)
    a = ex._submit(1, False, clock(), False, True)
    assert g.started.acquire(timeout=5)  # lane 0 copies expert 1 into its slot
    evict(ex, 1)  # an unused prefetch evicted while copying: its slot is free at once
    b = ex._submit(2, True, clock(), False, True)
    assert b.slot == a.slot
    time.sleep(SETTLE_S)  # lane 1 is idle: without the ordering it would write the slot now
    assert g.order == [1] and a.state != DONE
    g.gate(1).set()
    g.gate(2).set()
    w.wait(b)
    assert g.order == [1, 2] and b.start >= a.end


def test_a_substitutes_slot_is_held_until_the_step_has_computed(lanes2):
    g, w = lanes2
    g.gate(1).set()
    g.gate(2).set()
    ex = executor(w)
    sub = ex._submit(1, False, clock(), False, True)
    w.wait(sub)
    gate_step(ex, substitutes=[1])  # the gate picks resident expert 1 as a substitute for a miss
    evict(ex, 1)  # after_gate evicts it (a substitute is not pinned by the core)
    p = ex._submit(2, False, clock(), False, True)  # and a prefetch takes the slot
    assert p.slot == sub.slot
    time.sleep(SETTLE_S)
    assert g.order == [1], "the prefetch overwrote the substitute before its compute"
    ex._release_step_slots()  # the step's experts are computed
    w.wait(p)
    assert g.order == [1, 2]


def test_a_copy_behind_a_queued_copy_into_its_slot_does_not_block_the_only_lane():
    g = Gated()
    w = CopyWorker(g.issue, clock, lanes=1)
    try:
        busy, old = LiveTransfer(0, 0, False, 1, clock()), LiveTransfer(5, 5, False, 1, clock())
        w.submit(busy)
        assert g.started.acquire(timeout=5)
        w.submit(old)  # left over from a reset pool: still queued for slot 5
        new = LiveTransfer(6, 5, True, 1, clock())
        new.after.append(old)
        w.submit(new)  # a demand: ahead of ``old`` in the queue, but it must write after it
        for key in (0, 5, 6):
            g.gate(key).set()
        w.wait(new)
        assert g.order == [0, 5, 6]
    finally:
        for key in range(10):
            g.gate(key).set()
        w.close()


@pytest.mark.parametrize("miss", ["substitute", "fetch"])
def test_every_expert_computes_from_its_own_weights_with_two_lanes(trace, model, monkeypatch, miss):
    """End to end on the CPU (2 lanes, prefetching, a small cache): whenever an expert is computed,
    its slot holds exactly that expert's weights, and the decisions are the simulator's."""
    from moesim.engine.live.kernels import ModelKernels
    from moesim.experiments.live import run_live
    from moesim.experiments.run import run_prepared
    from tests.live.conftest import live_prepared

    state: dict = {}
    bad: list[tuple[int, int]] = []
    compute, expert = LiveExecutor.compute, ModelKernels.expert

    def checked_compute(self, s):
        state["store"] = self.store
        state["slots"] = {slot: key for slot, key in self._arrived} | {t.slot: t.key for t in self._waiting}
        return compute(self, s)

    def checked_expert(self, w, x):
        store, slots = state.get("store"), state.get("slots")
        if store is not None and slots is not None:
            slot = (w.data_ptr() - store.slots.data_ptr()) // (
                store.slots.stride(0) * store.slots.element_size()
            )
            if not torch.equal(w, store.host[slots[slot]]):
                bad.append((slot, slots[slot]))
        return expert(self, w, x)

    monkeypatch.setattr(LiveExecutor, "compute", checked_compute)
    monkeypatch.setattr(ModelKernels, "expert", checked_expert)
    p = live_prepared(trace, model, predictor="prev-token", miss=miss, copy_engines=2, capacity=4)
    live = run_live(p, LiveOptions(device="cpu", keep_awake=False), record=True).result
    assert state, "the check never ran"
    assert not bad, f"experts computed from overwritten slots: {bad[:5]}"
    assert live.decisions == run_prepared(p, record=True).decisions
