"""Executor events for timelines: one plain dict per slice, in a stable order.

Each event: ``{"track": "compute" | "h2d", "name", "start_ms", "end_ms", "args": {...}}``. Copies
carry ``args.kind`` ("demand" or "prefetch"), ``args.key`` and ``args.issue_ms``; an expert compute
slice carries ``args.key`` so a viewer can draw a flow from the copy that brought that expert in.
Exporters (Chrome/Perfetto JSON, Gantt PNG) read this list; executors only fill it.

A ``TimelineRecorder`` with a ``TimelineWindow`` keeps only what the window's export shows: the
compute slices of its decode steps and the copies that overlap them (``select_tokens`` in
``moesim.reports.timeline`` would keep the same events, in the same order, from a whole-run
recording), so a few tokens of a long run cost a few tokens' memory.
"""

from __future__ import annotations

from dataclasses import dataclass

# The state codes of a copy (``moesim.engine.copy_engine``; tests/test_architecture.py pins them
# equal), written here because metrics sits below the executors and imports none of them.
PENDING = 0
CANCELLED = 2


def build_timeline(slices: list[tuple], transfers: list, num_experts: int) -> list[dict]:
    events = [
        {"track": track, "name": name, "start_ms": start, "end_ms": end, "args": args}
        for track, name, start, end, args in slices
    ]
    for tr in transfers:
        if tr.state == CANCELLED and not tr.demand:
            continue  # never ran
        layer, expert = divmod(tr.key, num_experts)
        kind = "demand" if tr.demand else "prefetch"
        events.append(
            {
                "track": "h2d",
                "name": f"L{layer} E{expert} {kind}",
                "start_ms": tr.start,
                "end_ms": tr.end,
                "args": {"key": tr.key, "kind": kind, "issue_ms": tr.issue, "bytes": tr.nbytes},
            }
        )
    events.sort(key=lambda e: (e["start_ms"], e["track"], e["name"]))
    return events


@dataclass(frozen=True)
class TimelineWindow:
    """Decode steps ``start`` (inclusive) to ``stop`` (exclusive) in run order: the distinct
    (group, step) pairs of the compute slices in order of first appearance, prompt passes included."""

    start: int
    stop: int


class WindowedEvents(list):
    """The events of one window (a list, as a whole-run recording is) that also says which window
    it holds and how many decode steps the run had (for the export's range check)."""

    def __init__(self, events: list[dict], window: TimelineWindow, num_steps: int) -> None:
        super().__init__(events)
        self.window = window
        self.num_steps = num_steps


def window_events(events: list[dict], start: int, stop: int) -> tuple[list[dict], int]:
    """The events of decode steps ``start:stop`` (run order) plus the copies overlapping them, and
    the number of decode steps in ``events`` (``moesim.reports.timeline.select_tokens``'s rule)."""
    order: dict[tuple[int, int], int] = {}
    for e in events:
        a = e["args"]
        if e["track"] == "compute" and "step" in a:
            order.setdefault((a.get("group", 0), a["step"]), len(order))
    chosen = []
    lo, hi = float("inf"), float("-inf")
    for e in events:
        a = e["args"]
        if e["track"] == "compute" and "step" in a and start <= order[(a.get("group", 0), a["step"])] < stop:
            chosen.append(e)
            lo, hi = min(lo, e["start_ms"]), max(hi, e["end_ms"])
    for e in events:
        if e["track"] != "compute" and e["end_ms"] > lo and e["start_ms"] < hi:
            chosen.append(e)
    chosen.sort(key=lambda e: (e["start_ms"], e["track"], e["name"]))
    return chosen, len(order)


class TimelineRecorder:
    """What an executor records for a timeline: compute slices (``slices``) and copies
    (``transfers``, whose lazily-decided times are final once the run ends).

    Without a window everything is kept. With one, ``step`` (called once per layer-step, before its
    slices) says whether to record the step's slices, and trims ``transfers`` in place: before the
    window opens it drops copies already over by the step's start (no slice of the window starts
    earlier, so they cannot overlap it); once a step past the window begins, nothing later is
    needed unless steps can come back (continuous batching repeats the prompt-pass step -1), and
    ``closed`` tells the executor to stop handing over copies.
    """

    def __init__(self, window: TimelineWindow | None = None, revisits: bool = False) -> None:
        self.window = window
        self.revisits = revisits
        self.slices: list[tuple] = []
        self.transfers: list = []
        self.closed = False
        self._order: dict[tuple[int, int], int] = {}
        self._opened = False
        self._kept = 0  # copies kept at the last trim

    def step(self, group: int, t: int, now: float) -> bool:
        """Layer-step of decode step ``t`` of ``group`` starting at ``now``: record its slices?"""
        w = self.window
        if w is None:
            return True
        order = self._order
        i = order.setdefault((group, t), len(order))
        if w.start <= i < w.stop:
            if not self._opened:
                self._trim(now)
                self._opened = True
            return True
        if i >= w.stop and not self.revisits:
            self.closed = True
        elif not self._opened and len(self.transfers) > 2 * self._kept + 1024:
            self._trim(now)
        return False

    def _trim(self, now: float) -> None:
        # A copy not pending has its final times; it overlaps a window starting at or after ``now``
        # only if it ends after ``now`` (a cancelled copy never started: end -1).
        self.transfers[:] = [tr for tr in self.transfers if tr.state == PENDING or tr.end > now]
        self._kept = len(self.transfers)

    def events(self, num_experts: int) -> list[dict]:
        events = build_timeline(self.slices, self.transfers, num_experts)
        w = self.window
        if w is None:
            return events
        chosen, _ = window_events(events, 0, w.stop - w.start)
        return WindowedEvents(chosen, w, len(self._order))
