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
