"""The live copy engine: ``lanes`` threads serving one priority queue of expert copies, each lane one
copy at a time.

It keeps the simulator's queue discipline (``moesim.engine.copy_engine.CopyEngine``): a prefetch
joins the back of the queue; a demand copy goes ahead of every queued prefetch but behind earlier
demands; a started copy is never preempted; a queued prefetch can be cancelled (no bytes move) or
promoted to a demand; a free lane takes the head of the queue. A CUDA stream cannot reorder work once
enqueued, so the queue lives here on the host; on the CPU the thread does the memory copy itself
(torch's ``copy_`` releases the GIL, so copies overlap compute on another core).

A copy may depend on others (``LiveTransfer.after``): an earlier copy into the same slot still in
flight on another lane, or a ``SlotHold`` the executor keeps on a slot its current step still reads.
A lane starts it only once they are met (CUDA: once the earlier copy is issued, its stream then waits
on that copy's end event), so no slot is written by two copies at once or overwritten before use.

Times are milliseconds on the executor's clock. ``state`` moves QUEUED -> STARTED -> DONE, or
QUEUED -> CANCELLED; every change happens under the lock, so a decision taken under the lock (cancel
or promote) sees a consistent state.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

QUEUED, STARTED, DONE, CANCELLED = 0, 1, 2, 3


class LiveTransfer:
    __slots__ = (
        "key",
        "slot",
        "demand",
        "nbytes",
        "issue",
        "start",
        "end",
        "state",
        "order",
        "issued",
        "from_ssd",
        "lane",
        "start_evt",
        "end_evt",
        "after",
    )

    def __init__(self, key: int, slot: int, demand: bool, nbytes: int, issue: float, from_ssd: bool = False):
        self.key = key
        self.slot = slot
        self.demand = demand
        self.nbytes = nbytes
        self.issue = issue
        self.start = -1.0
        self.end = -1.0
        self.state = QUEUED
        self.order = -1  # rank in service order once started
        self.issued = False  # handed to the device (CUDA: its events are recorded)
        self.from_ssd = from_ssd  # read from the SSD tier's file first
        self.lane = -1
        # CUDA events, set by the CUDA copy function (Any: this module does not depend on torch)
        self.start_evt: Any = None
        self.end_evt: Any = None
        # what must happen before this copy may write its slot (LiveTransfer or SlotHold)
        self.after: list[Any] = []


class SlotHold:
    """A slot the executor's current layer-step still reads: copies into it wait for ``release``."""

    __slots__ = ("released",)

    def __init__(self) -> None:
        self.released = False


POLL_S = 50e-6  # a pipelined lane re-checks its oldest copy this often while nothing new is queued


class CopyWorker:
    """``issue(tr)`` starts moving one expert (on lane ``tr.lane``); ``complete(tr)``, when given,
    returns once it has arrived. On the CPU ``issue`` is the whole copy; on CUDA it enqueues the
    copy on the lane's stream and records its events, and ``complete`` waits on the end event
    (releasing the GIL). ``clock`` returns the executor's milliseconds.

    With ``arrived(tr)`` (a non-blocking check, CUDA: the end event's ``query``) a lane pipelines:
    it issues up to ``depth`` copies back to back on its stream, each as soon as it heads the queue,
    and marks them DONE as it polls them, so the link does not idle between copies while the host
    thread waits for the GIL. A copy is STARTED once issued: a demand goes ahead of the queue, not of
    the (at most ``depth - 1``) copies already issued behind the running one."""

    def __init__(
        self,
        issue: Callable[[LiveTransfer], None],
        clock: Callable[[], float],
        complete: Callable[[LiveTransfer], None] | None = None,
        name: str = "h2d",
        cpus: frozenset[int] | None = None,
        lanes: int = 1,
        realtime: bool = False,
        arrived: Callable[[LiveTransfer], bool] | None = None,
        depth: int = 2,
    ):
        self._arrived = arrived
        self._depth = max(1, depth)
        self._cpus = cpus
        self._realtime = realtime
        self._issue = issue
        self._complete = complete
        self._clock = clock
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._done = threading.Condition(self._lock)
        self._queue: list[LiveTransfer] = []  # not started, in service order
        self._busy = 0  # lanes copying
        self._served = 0
        self._closed = False
        self._error: BaseException | None = None
        self._threads = [
            threading.Thread(
                target=self._loop if arrived is None else self._pipelined,
                args=(lane,),
                name=f"moesim-copy-{name}-{lane}",
                daemon=True,
            )
            for lane in range(max(1, lanes))
        ]
        for th in self._threads:
            th.start()

    # -- called by the executor -------------------------------------------------------------
    def submit(self, tr: LiveTransfer) -> None:
        with self._lock:
            self._insert(tr)
            if self._arrived is None:
                self._work.notify()
            else:  # the lane woken might be polling a full stream while another sits idle
                self._work.notify_all()

    def cancel(self, tr: LiveTransfer) -> bool:
        """Drop ``tr`` if it has not started; True if cancelled (no bytes moved)."""
        with self._lock:
            if tr.state != QUEUED:
                return False
            self._queue.remove(tr)
            tr.state = CANCELLED
            return True

    def promote(self, tr: LiveTransfer) -> None:
        """A queued prefetch whose expert the gate now needs becomes a demand copy."""
        with self._lock:
            if tr.state != QUEUED or tr.demand:
                return
            self._queue.remove(tr)
            tr.demand = True
            self._insert(tr)

    def release(self, hold: SlotHold) -> None:
        """The step has read its slots: copies held on them may start."""
        with self._lock:
            hold.released = True
            self._done.notify_all()

    def wait(self, tr: LiveTransfer) -> None:
        """Block until ``tr`` has arrived."""
        if tr.state == DONE:
            return
        with self._lock:
            while tr.state != DONE:
                self._check()
                self._done.wait()

    def wait_issued(self, tr: LiveTransfer) -> None:
        """Block until ``tr`` has been handed to the device (CUDA: its end event is recorded)."""
        if tr.issued:
            return
        with self._lock:
            while not tr.issued:
                self._check()
                self._done.wait()

    def service_rank(self, tr: LiveTransfer) -> tuple[int, int]:
        """Sort key of arrival order: started copies by start order, then the queue's order."""
        with self._lock:
            if tr.state != QUEUED:
                return (0, tr.order)
            return (1, self._queue.index(tr))

    def drain(self) -> None:
        with self._lock:
            while self._queue or self._busy:
                self._check()
                self._done.wait()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._work.notify_all()
        for th in self._threads:
            th.join()
        self._check()

    @property
    def idle(self) -> bool:
        with self._lock:
            return not self._queue and not self._busy

    # -- internals ---------------------------------------------------------------------------
    def _insert(self, tr: LiveTransfer) -> None:
        q = self._queue
        if tr.demand:
            i = 0
            while i < len(q) and q[i].demand:  # demands form a prefix of the queue
                i += 1
            q.insert(i, tr)
        else:
            q.append(tr)

    def _take(self) -> LiveTransfer:
        """The head of the queue, unless it must follow a copy into its slot still queued: that one
        goes first (a reset pool's leftovers; waiting for it could block the only lane)."""
        tr = self._queue[0]
        while True:
            first = next((d for d in tr.after if isinstance(d, LiveTransfer) and d.state == QUEUED), None)
            if first is None:
                break
            tr = first
        self._queue.remove(tr)
        return tr

    def _ready(self, tr: LiveTransfer) -> bool:
        # CUDA: the device orders it after an issued copy's end event (see ExpertStore._cuda_issue)
        cuda = self._complete is not None or self._arrived is not None
        for d in tr.after:
            if isinstance(d, SlotHold):
                if not d.released:
                    return False
            elif d.state not in (DONE, CANCELLED) and not (cuda and d.issued):
                return False
        return True

    def _start(self, lane: int) -> LiveTransfer:
        """Under the lock: the next copy in service order, STARTED on ``lane`` once it may write."""
        tr = self._take()
        tr.state = STARTED
        tr.order = self._served
        tr.lane = lane
        self._served += 1
        self._busy += 1
        while tr.after and not self._ready(tr) and not self._closed and self._error is None:
            self._done.wait()
        tr.start = self._clock()
        return tr

    def _fail(self, exc: BaseException, running: int) -> None:
        with self._lock:
            self._error = exc
            self._busy -= running
            self._done.notify_all()

    def _retire(self, flight: deque[LiveTransfer]) -> None:
        """Under the lock: the lane's copies that have arrived, in issue order (one stream is FIFO)."""
        arrived = self._arrived
        assert arrived is not None
        retired = False
        while flight and arrived(flight[0]):
            tr = flight.popleft()
            tr.end = self._clock()
            tr.state = DONE
            self._busy -= 1
            retired = True
        if retired:
            self._done.notify_all()

    def _pipelined(self, lane: int) -> None:
        if self._cpus or self._realtime:
            from moesim.engine.live.device import pin_current_thread

            pin_current_thread(self._cpus, self._realtime)
        lock = self._lock
        flight: deque[LiveTransfer] = deque()  # issued on this lane's stream, not yet seen arrived
        while True:
            tr: LiveTransfer | None = None
            try:
                with lock:
                    self._retire(flight)
                    while not flight and not self._queue and not self._closed:
                        self._work.wait()
                    if self._queue and len(flight) < self._depth:
                        tr = self._start(lane)
                    elif not flight:
                        return
                    else:
                        self._work.wait(POLL_S)  # a submit wakes it at once
                        continue
                assert tr is not None
                self._issue(tr)
                tr.after = []
                flight.append(tr)
                with lock:
                    tr.issued = True
                    self._done.notify_all()  # the compute stream may now wait on its event
            except BaseException as exc:  # surfaced in the executor's thread by _check
                self._fail(exc, len(flight) + (tr is not None and tr not in flight))
                return

    def _check(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"copy engine thread failed: {self._error!r}") from self._error

    def _loop(self, lane: int) -> None:
        if self._cpus or self._realtime:
            from moesim.engine.live.device import pin_current_thread

            pin_current_thread(self._cpus, self._realtime)  # this thread only (see device._split_cpus)
        lock = self._lock
        while True:
            with lock:
                while not self._queue and not self._closed:
                    self._work.wait()
                if not self._queue:
                    return
                tr = self._start(lane)
            try:
                self._issue(tr)
                tr.after = []  # met: keep no chain of earlier copies alive
                if self._complete is not None:
                    with lock:
                        tr.issued = True
                        self._done.notify_all()  # CUDA: the compute stream may now wait on its event
                    self._complete(tr)
            except BaseException as exc:  # surfaced in the executor's thread by _check
                self._fail(exc, 1)
                return
            end = self._clock()
            with lock:
                tr.end = end
                tr.issued = True
                tr.state = DONE
                self._busy -= 1
                self._done.notify_all()
