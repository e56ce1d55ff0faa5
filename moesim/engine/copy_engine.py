"""A copy engine on a link, modelled with busy-until timestamps instead of a SimPy Resource.

A non-preemptive priority server with ``lanes`` parallel copy engines that share the link: each
lane gets ``1/lanes`` of the bandwidth, so a copy on a lane takes ``h2d(lanes x bytes)`` (the fixed
per-copy overhead overlaps across lanes; the bytes do not). Whenever a lane is free it starts the
oldest waiting demand copy, else the waiting prefetch that became ready first; a started copy is
never preempted (docs/design.md, miss handling). Demand copies are timed the moment they are submitted
(nothing can overtake them); prefetches are timed lazily, when the executor's clock passes the
moment a lane could start them, so every operation stays cheap even when prefetches back the link
up. A copy may not start before ``not_before`` (e.g. the end of the SSD read that feeds it).
"""

from __future__ import annotations

import heapq
from collections import deque

PENDING, STARTED, CANCELLED = 0, 1, 2


class Transfer:
    __slots__ = ("key", "issue", "start", "end", "dur", "demand", "nbytes", "state", "not_before", "seq")

    def __init__(
        self, key: int, issue: float, dur: float, demand: bool, nbytes: int, not_before: float = 0.0
    ):
        self.key = key
        self.issue = issue  # when it was asked for (a prefetch keeps this when promoted)
        self.dur = dur
        self.demand = demand
        self.nbytes = nbytes
        self.not_before = not_before if not_before > issue else issue
        self.start = -1.0
        self.end = -1.0
        self.state = PENDING
        self.seq = 0

    def __lt__(self, other: Transfer) -> bool:  # heap order: ready first, then submission order
        return (self.not_before, self.seq) < (other.not_before, other.seq)


class CopyEngine:
    def __init__(self, lanes: int = 1, fifo: bool = False) -> None:
        self.free = [0.0] * lanes  # per lane: end of its last started or demand-scheduled copy
        # Prefetches not started (cancelled ones skipped): a heap by readiness, or, when every copy
        # is ready at its issue (no SSD stage), a plain queue in issue order, which is the same order.
        self._fifo = fifo
        # ``_queue`` and ``_heap`` are typed views of the one that ``_waiting`` is (the other stays empty).
        self._queue: deque[Transfer] = deque()
        self._heap: list[Transfer] = []
        self._waiting: list[Transfer] | deque[Transfer] = self._queue if fifo else self._heap
        self._seq = 0
        if fifo:  # issue order is the serving order: submitting is appending
            # A per-instance override of the method, on purpose: the deque's own append, no wrapper.
            self.submit_prefetch = self._queue.append  # type: ignore[method-assign,assignment]

    @property
    def free_at(self) -> float:
        return min(self.free)

    def idle(self, now: float) -> bool:
        """Every copy submitted so far has finished by ``now`` (after ``advance(now)``)."""
        return not self._waiting and max(self.free) <= now

    def advance(self, now: float) -> None:
        """Start every waiting prefetch a lane would have started by ``now``."""
        q, free = self._waiting, self.free
        if not q:
            return
        single = len(free) == 1
        dq = self._queue  # is ``q`` when ``_fifo``
        if single and self._fifo:  # the common case, kept short
            f = free[0]
            while dq and f <= now:
                tr = dq[0]
                if tr.state != PENDING:
                    dq.popleft()
                    continue
                start = f if f > tr.not_before else tr.not_before
                if start > now:
                    break
                dq.popleft()
                tr.start = start
                tr.end = f = start + tr.dur
                tr.state = STARTED
            free[0] = f
            return
        hq = self._heap  # is ``q`` when not ``_fifo``
        while q:
            lane = 0 if single else free.index(min(free))
            f = free[lane]
            if f > now:
                return
            tr = q[0]
            if tr.state != PENDING:
                if self._fifo:
                    dq.popleft()
                else:
                    heapq.heappop(hq)
                continue
            start = f if f > tr.not_before else tr.not_before
            if start > now:
                return
            if self._fifo:
                dq.popleft()
            else:
                heapq.heappop(hq)
            tr.start = start
            tr.end = free[lane] = start + tr.dur
            tr.state = STARTED

    def submit_demand(self, tr: Transfer, now: float) -> None:
        self.advance(now)
        self.schedule(tr, now)

    def submit_prefetch(self, tr: Transfer) -> None:
        self._seq += 1
        tr.seq = self._seq
        heapq.heappush(self._heap, tr)

    def schedule(self, tr: Transfer, now: float) -> None:
        """Time a demand copy on the first free lane (callers have advanced the engine to ``now``)."""
        free = self.free
        lane = 0 if len(free) == 1 else free.index(min(free))
        start = free[lane] if free[lane] > now else now
        if tr.not_before > start:
            start = tr.not_before
        tr.start = start
        tr.end = free[lane] = start + tr.dur
        tr.state = STARTED

    def submit_demands(
        self, keys: list[int], now: float, dur: float, nbytes: int, inflight: dict, ready: list[float]
    ) -> None:
        """Demand copies of ``keys`` issued at ``now`` in this order, with nothing to wait for first
        (callers have advanced the engine to ``now``): each is timed at once, stored in
        ``inflight[key]``, and its end appended to ``ready``. One call per layer-step's misses."""
        free = self.free
        if len(free) != 1:
            for key in keys:
                tr = Transfer(key, now, dur, True, nbytes)
                self.schedule(tr, now)
                inflight[key] = tr
                ready.append(tr.end)
            return
        f = free[0] if free[0] > now else now
        for key in keys:
            tr = Transfer(key, now, dur, True, nbytes)
            tr.start = f
            tr.end = f = f + dur
            tr.state = STARTED
            inflight[key] = tr
            ready.append(f)
        free[0] = f

    def promote(self, tr: Transfer, now: float) -> None:
        """The gate needs a prefetch that has not started: it becomes a demand copy (after ``advance(now)``)."""
        if tr.state == PENDING:
            tr.demand = True
            self.schedule(tr, now)  # now STARTED, so its heap entry is skipped

    def cancel(self, tr: Transfer, now: float) -> bool:
        """Drop ``tr`` if it has not started by ``now``; True if cancelled (no bytes moved)."""
        self.advance(now)
        if tr.state == PENDING:
            tr.state = CANCELLED
            return True
        return False


class FifoLink:
    """A device read in issue order at its own pace (the NVMe drive feeding host memory).

    Timed eagerly: a read is committed once issued, even if the copy it feeds is later cancelled.
    """

    def __init__(self) -> None:
        self.free_at = 0.0

    def read(self, now: float, dur: float) -> float:
        start = self.free_at if self.free_at > now else now
        self.free_at = start + dur
        return self.free_at


_DONE_MS = 1e-12  # a copy with less work left than this (float residue) has finished


class SharedLinkEngine:
    """Lanes that share the link among the copies actually active (``hardware.lane_sharing: active``).

    A copy holds a lane from its start to its end. For its first ``fixed_ms`` (the per-copy setup,
    which overlaps other copies) it moves no bytes; then its bytes need ``dur - fixed_ms`` of the
    whole link, which every copy moving bytes at that moment shares equally (processor sharing).
    So a lone copy on any number of lanes takes ``dur``, the one-lane time, and two copies that
    start together on two lanes both end at ``fixed + 2 x bytes time``, as under the static split.
    Whenever a lane is free it starts the oldest ready demand copy, else the prefetch that became
    ready first; a started copy is never preempted.

    Exact event simulation. Times up to the last ``advance(now)`` are final; the start and end of
    every copy not finished by then are projected assuming nothing else is submitted, and
    re-projected after each submission, promotion or cancellation. The executor reads a step's
    ready times after the step's last submission (copies issued later start after they are used),
    so the times it uses are final.
    """

    def __init__(self, lanes: int, fixed_ms: float) -> None:
        self.lanes = lanes
        self.fixed = fixed_ms
        self.t = 0.0  # committed up to here
        self._active: list[list] = []  # [bytes start, work left at the whole link (ms), Transfer]
        self._demand: list[Transfer] = []  # waiting demand copies, oldest first
        self._heap: list[Transfer] = []  # waiting prefetches by readiness (promoted ones skipped)
        self._seq = 0

    # -- the event simulation -------------------------------------------------------------------
    @staticmethod
    def _waiting(tr: Transfer, demand: bool) -> bool:
        return tr.state == PENDING and tr.demand == demand

    def _pick(self, demand: list[Transfer], heap: list[Transfer], t: float) -> Transfer | None:
        for i, tr in enumerate(demand):
            if tr.not_before <= t:
                return demand.pop(i)
        while heap and not self._waiting(heap[0], False):
            heapq.heappop(heap)
        if heap and heap[0].not_before <= t:
            return heapq.heappop(heap)
        return None

    def _next_ready(self, demand: list[Transfer], heap: list[Transfer]) -> float:
        r = min((tr.not_before for tr in demand), default=float("inf"))
        while heap and not self._waiting(heap[0], False):
            heapq.heappop(heap)
        return min(r, heap[0].not_before) if heap else r

    def _start(
        self, active: list[list], demand: list[Transfer], heap: list[Transfer], t: float, commit: bool
    ) -> None:
        """Fill the free lanes at ``t``: the oldest ready demand copy, else the first ready prefetch."""
        fixed = self.fixed
        while len(active) < self.lanes:
            tr = self._pick(demand, heap, t)
            if tr is None:
                return
            tr.start = t
            tr.end = -1.0
            if commit:
                tr.state = STARTED
            active.append([t + fixed, tr.dur - fixed if tr.dur > fixed else 0.0, tr])

    def _run(
        self,
        active: list[list],
        demand: list[Transfer],
        heap: list[Transfer],
        t: float,
        until: float,
        commit: bool,
    ) -> float:
        """Simulate from ``t`` to ``until`` (events at ``until`` included); returns the time reached."""
        inf = float("inf")
        while True:
            self._start(active, demand, heap, t, commit)
            moving = sum(1 for a in active if a[0] <= t)
            nxt = min((a[0] if a[0] > t else t + a[1] * moving for a in active), default=inf)
            if len(active) < self.lanes:
                nxt = min(nxt, self._next_ready(demand, heap))
            if nxt > until or nxt == inf:
                if moving and until != inf:
                    share = (until - t) / moving
                    for a in active:
                        if a[0] <= t:
                            a[1] -= share
                return until if until != inf else t
            share = (nxt - t) / moving if moving else 0.0
            keep = []
            for a in active:
                if a[0] <= t:
                    # the copies whose bytes end at ``nxt`` end exactly there (no float residue)
                    if t + a[1] * moving <= nxt or a[1] - share <= _DONE_MS:
                        a[2].end = nxt
                        continue
                    a[1] -= share
                keep.append(a)
            active[:] = keep
            t = nxt

    def _project(self) -> None:
        """Provisional start and end of every copy not finished at ``self.t``."""
        active = [list(a) for a in self._active]
        self._run(active, list(self._demand), list(self._heap), self.t, float("inf"), commit=False)

    def _commit(self, now: float) -> None:
        if now >= self.t:
            self.t = self._run(self._active, self._demand, self._heap, self.t, now, commit=True)

    # -- the CopyEngine interface the simulation executor uses ------------------------------------
    @property
    def free_at(self) -> float:
        return self.t if len(self._active) < self.lanes else min(a[2].end for a in self._active)

    def idle(self, now: float) -> bool:
        self.advance(now)
        return not self._active and not self._demand and self._next_ready([], self._heap) == float("inf")

    def advance(self, now: float) -> None:
        self._commit(now)
        self._project()

    def submit_prefetch(self, tr: Transfer) -> None:
        self._seq += 1
        tr.seq = self._seq
        heapq.heappush(self._heap, tr)
        self._project()

    def submit_demand(self, tr: Transfer, now: float) -> None:
        self.schedule(tr, now)

    def schedule(self, tr: Transfer, now: float) -> None:
        """Queue a demand copy at ``now`` (callers have advanced the engine to ``now``)."""
        tr.demand = True
        tr.state = PENDING
        if tr.not_before < now:
            tr.not_before = now
        self._demand.append(tr)
        self._commit(now)
        self._project()

    def submit_demands(
        self, keys: list[int], now: float, dur: float, nbytes: int, inflight: dict, ready: list[float]
    ) -> None:
        trs = []
        for key in keys:
            tr = Transfer(key, now, dur, True, nbytes)
            self.schedule(tr, now)
            inflight[key] = tr
            trs.append(tr)
        ready.extend(tr.end for tr in trs)

    def promote(self, tr: Transfer, now: float) -> None:
        if tr.state == PENDING and not tr.demand:
            self.schedule(tr, now)  # its heap entry is skipped from now on (a demand copy)

    def cancel(self, tr: Transfer, now: float) -> bool:
        self._commit(now)
        cancelled = tr.state == PENDING
        if cancelled:
            tr.state = CANCELLED
            if tr in self._demand:
                self._demand.remove(tr)
        self._project()
        return cancelled
