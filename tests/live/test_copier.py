"""The live copy engine keeps the simulator's queue discipline: demand copies ahead of queued
prefetches (behind earlier demands), a started copy never preempted, cancel and promote only while
queued. A gate per copy makes the thread's progress deterministic."""

from __future__ import annotations

import threading
import time

import pytest

from moesim.engine.live.copier import CANCELLED, DONE, QUEUED, STARTED, CopyWorker, LiveTransfer


class Gated:
    """issue() blocks until the test opens that copy's gate; records the service order."""

    def __init__(self):
        self.order: list[int] = []
        self.started = threading.Semaphore(0)
        self.gates: dict[int, threading.Event] = {}

    def gate(self, key: int) -> threading.Event:
        return self.gates.setdefault(key, threading.Event())

    def issue(self, tr: LiveTransfer) -> None:
        self.order.append(tr.key)
        self.started.release()
        assert self.gate(tr.key).wait(5), "test never opened the gate"


def clock() -> float:
    return time.perf_counter() * 1e3


def tr(key: int, demand: bool = False) -> LiveTransfer:
    return LiveTransfer(key, key, demand, 1, clock())


@pytest.fixture
def engine():
    g = Gated()
    w = CopyWorker(g.issue, clock)
    yield g, w
    for ev in g.gates.values():
        ev.set()
    for key in range(100):
        g.gate(key).set()
    w.close()


def test_demand_goes_ahead_of_queued_prefetches_but_not_the_started_copy(engine):
    g, w = engine
    a, b, c = tr(1), tr(2), tr(3)
    for t in (a, b, c):
        w.submit(t)
    assert g.started.acquire(timeout=5)  # a started
    d1, d2 = tr(10, True), tr(11, True)
    w.submit(d1)
    w.submit(d2)
    assert a.state == STARTED and b.state == QUEUED
    for key in (1, 10, 11, 2, 3):
        g.gate(key).set()
    w.drain()
    assert g.order == [1, 10, 11, 2, 3]
    assert all(t.state == DONE and t.end >= t.start >= t.issue for t in (a, b, c, d1, d2))
    assert [t.order for t in (a, d1, d2, b, c)] == [0, 1, 2, 3, 4]


def test_cancel_only_while_queued(engine):
    g, w = engine
    a, b = tr(1), tr(2)
    w.submit(a)
    w.submit(b)
    assert g.started.acquire(timeout=5)
    assert not w.cancel(a), "a started copy is not cancelled (it is wasted)"
    assert w.cancel(b)
    assert b.state == CANCELLED
    g.gate(1).set()
    w.drain()
    assert g.order == [1]
    assert not w.cancel(a)


def test_promote_moves_a_queued_prefetch_behind_earlier_demands(engine):
    g, w = engine
    a, p1, p2, d = tr(1), tr(2), tr(3), tr(10, True)
    for t in (a, p1, p2):
        w.submit(t)
    assert g.started.acquire(timeout=5)
    w.submit(d)
    w.promote(p2)
    assert p2.demand
    assert w.service_rank(a) == (0, 0)
    assert [w.service_rank(t) for t in (d, p2, p1)] == [(1, 0), (1, 1), (1, 2)]
    w.promote(a)  # started: nothing to do
    for key in (1, 10, 3, 2):
        g.gate(key).set()
    w.drain()
    assert g.order == [1, 10, 3, 2]


def test_lanes_serve_one_queue_in_parallel():
    g = Gated()
    w = CopyWorker(g.issue, clock, lanes=2)
    try:
        a, b, c = tr(1), tr(2), tr(3)
        for t in (a, b, c):
            w.submit(t)
        assert g.started.acquire(timeout=5) and g.started.acquire(timeout=5)
        assert {a.state, b.state, c.state} == {STARTED, QUEUED}
        assert c.state == QUEUED
        assert {a.lane, b.lane} == {0, 1}
        for key in (1, 2, 3):
            g.gate(key).set()
        w.drain()
        assert c.state == DONE
    finally:
        w.close()


def test_issue_complete_split_as_on_cuda():
    """CUDA: issue() enqueues and returns; complete() waits. A waiter of wait_issued wakes between."""
    issued, release = threading.Event(), threading.Event()

    def issue(t: LiveTransfer) -> None:
        t.end_evt = "recorded"  # stands in for the CUDA event

    def complete(t: LiveTransfer) -> None:
        issued.set()
        assert release.wait(5)

    w = CopyWorker(issue, clock, complete)
    try:
        t = tr(1, True)
        w.submit(t)
        w.wait_issued(t)
        assert t.issued and t.end_evt == "recorded" and t.state == STARTED
        assert issued.wait(5)
        release.set()
        w.wait(t)
        assert t.state == DONE
    finally:
        release.set()
        w.close()


def test_a_failing_copy_is_raised_in_the_waiting_thread():
    def issue(t: LiveTransfer) -> None:
        raise OSError("disk on fire")

    w = CopyWorker(issue, clock)
    t = tr(1, True)
    w.submit(t)
    with pytest.raises(RuntimeError, match="disk on fire"):
        w.wait(t)
    with pytest.raises(RuntimeError):
        w.close()


class FakeStream:
    """Stands in for a lane's CUDA stream: issue() records an "event" the test sets on arrival."""

    def __init__(self):
        self.issued: list[int] = []

    def issue(self, t: LiveTransfer) -> None:
        t.end_evt = threading.Event()
        self.issued.append(t.key)

    @staticmethod
    def arrived(t: LiveTransfer) -> bool:
        return t.end_evt.is_set()


def wait_until(cond, timeout: float = 5.0) -> bool:
    end = time.perf_counter() + timeout
    while not cond():
        if time.perf_counter() > end:
            return False
        time.sleep(1e-3)
    return True


def test_a_pipelined_lane_issues_the_next_copy_before_the_previous_arrives():
    s = FakeStream()
    w = CopyWorker(s.issue, clock, arrived=s.arrived, depth=2)
    try:
        a, b, c = tr(1), tr(2), tr(3)
        for t in (a, b, c):
            w.submit(t)
        # two copies back to back on the stream while the first has not arrived; the third queued
        assert wait_until(lambda: s.issued == [1, 2]) and a.issued and b.issued
        time.sleep(0.05)
        assert s.issued == [1, 2] and c.state == QUEUED and a.state == STARTED
        d = tr(10, True)
        w.submit(d)  # a demand goes ahead of the queued prefetch, not of the issued copies
        a.end_evt.set()
        assert wait_until(lambda: a.state == DONE)
        assert wait_until(lambda: s.issued == [1, 2, 10])
        assert c.state == QUEUED and b.state == STARTED
        for t in (b, d):
            t.end_evt.set()
        assert wait_until(lambda: s.issued == [1, 2, 10, 3])
        c.end_evt.set()
        w.drain()
        assert [t.state for t in (a, b, c, d)] == [DONE] * 4
        assert a.order < b.order < d.order < c.order
    finally:
        for t in (a, b, c):
            if isinstance(t.end_evt, threading.Event):
                t.end_evt.set()
        w.close()


def test_a_pipelined_lane_marks_copies_done_in_stream_order():
    s = FakeStream()
    w = CopyWorker(s.issue, clock, arrived=s.arrived, depth=2)
    try:
        a, b = tr(1), tr(2)
        w.submit(a)
        w.submit(b)
        assert wait_until(lambda: b.issued)
        b.end_evt.set()  # a stream is FIFO: b cannot be seen done before a
        time.sleep(0.05)
        assert a.state == STARTED and b.state == STARTED
        a.end_evt.set()
        w.wait(b)
        assert a.state == DONE and a.end <= b.end
    finally:
        for t in (a, b):
            if isinstance(t.end_evt, threading.Event):
                t.end_evt.set()
        w.close()


def test_a_pipelined_copy_into_a_busy_slot_is_issued_behind_the_earlier_one():
    """CUDA: a copy into a slot another lane is still writing is issued once that copy is (its
    stream then waits on the earlier copy's end event); a held slot takes nothing until released."""
    from moesim.engine.live.copier import SlotHold

    s = FakeStream()
    w = CopyWorker(s.issue, clock, arrived=s.arrived, depth=2, lanes=2)
    a, b = LiveTransfer(1, 0, False, 1, clock()), LiveTransfer(2, 0, False, 1, clock())
    hold = SlotHold()
    b.after += [a, hold]
    try:
        w.submit(a)
        w.submit(b)
        assert wait_until(lambda: a.issued)
        time.sleep(0.05)
        assert s.issued == [1] and not b.issued  # held
        w.release(hold)
        assert wait_until(lambda: b.issued) and a.state == STARTED  # issued behind a, not after it
    finally:
        for t in (a, b):
            if isinstance(t.end_evt, threading.Event):
                t.end_evt.set()
        w.close()


def test_an_idle_pipelined_lane_takes_a_copy_while_the_other_polls_a_full_stream():
    s = FakeStream()
    w = CopyWorker(s.issue, clock, arrived=s.arrived, depth=1, lanes=2)
    ts = [tr(1), tr(2)]
    try:
        w.submit(ts[0])
        assert wait_until(lambda: ts[0].issued)
        w.submit(ts[1])
        assert wait_until(lambda: ts[1].issued)
        assert ts[1].issued and ts[1].lane != ts[0].lane  # the idle lane took it at once
    finally:
        for t in ts:
            if isinstance(t.end_evt, threading.Event):
                t.end_evt.set()
        w.close()
