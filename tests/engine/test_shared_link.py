"""Lanes that share the link among the active copies (hardware.lane_sharing: active), hand-computed."""

import pytest

from moesim.engine.copy_engine import PENDING, CopyEngine, SharedLinkEngine, Transfer


def _demand(ce, key: int, now: float, dur: float) -> Transfer:
    tr = Transfer(key, now, dur, True, 1)
    ce.advance(now)
    ce.schedule(tr, now)
    return tr


def test_lone_copy_on_two_lanes_takes_the_one_lane_time():
    # setup 0.25 ms + bytes 1.0 ms at the whole link (binary fractions: exact in floats)
    shared = _demand(SharedLinkEngine(2, 0.25), 1, 0.0, 1.25)
    one = _demand(CopyEngine(1), 1, 0.0, 1.25)
    static = _demand(CopyEngine(2), 1, 0.0, 0.25 + 2 * 1.0)  # static: a lane has half the link
    assert shared.end == one.end == 1.25
    assert static.end == 2.25


def test_two_overlapping_copies_share_the_link():
    # A starts at 0, B at 0.5; no setup; 1 ms of bytes each. A alone to 0.5 (0.5 left), then both at
    # half rate: A's 0.5 takes 1.0 -> ends 1.5; B has done 0.5 by then and finishes alone at 2.0.
    ce = SharedLinkEngine(2, 0.0)
    a = _demand(ce, 1, 0.0, 1.0)
    b = _demand(ce, 2, 0.5, 1.0)
    ce.advance(10.0)
    assert (a.start, a.end, b.start, b.end) == (0.0, 1.5, 0.5, 2.0)


def test_setup_overlaps_and_bytes_share():
    # setup 0.125: A moves bytes from 0.125, B (issued 0.5) from 0.625. A alone 0.125-0.625 (0.5 of 1
    # left), shared after: ends 0.625 + 1.0 = 1.625; B then has 0.5 left alone: ends 2.125.
    ce = SharedLinkEngine(2, 0.125)
    a = _demand(ce, 1, 0.0, 1.125)
    b = _demand(ce, 2, 0.5, 1.125)
    ce.advance(10.0)
    assert (a.end, b.end) == (1.625, 2.125)


def test_two_copies_started_together_match_the_static_split():
    ce, st = SharedLinkEngine(2, 0.25), CopyEngine(2)
    a, b = _demand(ce, 1, 0.0, 1.25), _demand(ce, 2, 0.0, 1.25)
    c, d = _demand(st, 1, 0.0, 2.25), _demand(st, 2, 0.0, 2.25)
    assert a.end == b.end == c.end == d.end == 2.25


def test_third_copy_waits_for_a_lane_then_has_the_link_alone():
    ce = SharedLinkEngine(2, 0.0)
    a, b, c = (_demand(ce, i, 0.0, 1.0) for i in (1, 2, 3))
    ce.advance(10.0)
    assert (a.end, b.end) == (2.0, 2.0)
    assert (c.start, c.end) == (2.0, 3.0)  # static: 2.0 -> 4.0 (half the link on its lane)


def test_a_later_copy_moves_a_projected_end():
    ce = SharedLinkEngine(2, 0.0)
    a = _demand(ce, 1, 0.0, 1.0)
    assert a.end == 1.0  # projected: nothing else known yet
    p = Transfer(2, 0.5, 1.0, False, 1)
    ce.submit_prefetch(p)  # starts at 0.5 on the free lane and slows a
    assert (a.end, p.start, p.end) == (1.5, 0.5, 2.0)


def test_demand_goes_before_waiting_prefetches_and_promote_cancel():
    ce = SharedLinkEngine(2, 0.0)
    pf = [Transfer(i, 0.0, 1.0, False, 1) for i in (1, 2, 3, 4)]
    for tr in pf:
        ce.submit_prefetch(tr)
    ce.advance(0.5)  # 1 and 2 run; 3 and 4 wait
    assert (pf[2].state, pf[3].state) == (PENDING, PENDING)
    ce.promote(pf[3], 0.5)  # now first in line
    assert ce.cancel(pf[2], 0.5)
    ce.advance(10.0)
    assert (pf[0].end, pf[1].end) == (2.0, 2.0)
    assert (pf[3].start, pf[3].end) == (2.0, 3.0)
    assert not ce.cancel(pf[0], 10.0)


def test_not_before_holds_a_copy_back():
    ce = SharedLinkEngine(2, 0.0)
    tr = Transfer(1, 0.0, 1.0, True, 1, not_before=0.75)
    ce.advance(0.0)
    ce.schedule(tr, 0.0)
    assert (tr.start, tr.end) == (0.75, 1.75)
    assert ce.idle(2.0)


@pytest.mark.parametrize("n", [3, 7])
def test_equal_copies_end_together_and_the_link_is_conserved(n):
    ce = SharedLinkEngine(n, 0.0)
    trs = [_demand(ce, i, 0.0, 0.1) for i in range(n)]
    ce.advance(100.0)
    assert all(tr.end == pytest.approx(0.1 * n, rel=1e-12) for tr in trs)


def _fluid_reference(copies, lanes: int, fixed: float, dt: float) -> list[float]:
    """Independent time-stepped fluid model: each step, free lanes take the oldest arrived copies;
    copies past their setup split the link equally. Returns each copy's end (to within ~dt)."""
    n = len(copies)
    start = [None] * n
    left = [dur - fixed for _, dur in copies]
    end = [None] * n
    t = 0.0
    while any(e is None for e in end):
        running = [i for i in range(n) if start[i] is not None and end[i] is None]
        for i in range(n):
            if len(running) >= lanes:
                break
            if start[i] is None and copies[i][0] <= t + 1e-12:
                start[i] = t
                running.append(i)
        moving = [i for i in running if start[i] + fixed <= t + 1e-12]
        for i in moving:
            left[i] -= dt / len(moving)
        t += dt
        for i in running:
            if start[i] + fixed <= t and left[i] <= 1e-12:
                end[i] = t
    return end


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_an_independent_fluid_simulation(seed):
    rng = __import__("numpy").random.default_rng(seed)
    lanes, fixed, dt = 3, 0.05, 1e-3
    arrivals = sorted(float(x) for x in rng.uniform(0, 2, 8))
    copies = [(a, float(d)) for a, d in zip(arrivals, rng.uniform(0.1, 1.0, 8))]
    ce = SharedLinkEngine(lanes, fixed)
    trs = [_demand(ce, i, a, d) for i, (a, d) in enumerate(copies)]
    ce.advance(1e9)
    ref = _fluid_reference(copies, lanes, fixed, dt)
    assert [tr.end for tr in trs] == pytest.approx(ref, abs=10 * dt)
