"""Timeline exports: Chrome / Perfetto trace-event JSON, and a PNG Gantt of a few tokens.

Input is the executor's event list (``RunResult.timeline``, see ``moesim/metrics/timeline.py``):
``{"track": "compute" | "h2d" | ..., "name", "start_ms", "end_ms", "args"}``.

Trace-event mapping (https://docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU):
one process (the simulated GPU); one thread per stream: the compute stream, and one per copy-engine
lane (copies that overlap, with several copy engines, go to separate lanes so slices nest). Each
slice is a complete event (``"ph": "X"``) with ``ts``/``dur`` in microseconds. A flow (``"s"`` on
the prefetch copy, ``"f"`` with ``"bp": "e"`` on the compute slice) joins each prefetch copy to the
first compute slice of the same expert (``args.key``) that starts after the copy ends: the use the
prefetch was for. A prefetch that is evicted or re-fetched before any use gets no flow.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moesim.errors import fail
from moesim.io import atomic_write_bytes, atomic_write_text
from moesim.metrics.timeline import WindowedEvents, window_events

PID = 1
COMPUTE_TID = 1
_EPS_MS = 1e-9
_TRACK_LABEL = {"compute": "compute stream", "h2d": "copy engine H2D"}


def _us(ms: float) -> float:
    # Microseconds rounded to the nanosecond: compact, and identical across reruns.
    return round(ms * 1000.0, 3)


@dataclass(frozen=True)
class TokenRange:
    start: int  # first decode step (in run order), inclusive
    stop: int  # last decode step, exclusive

    @classmethod
    def parse(cls, text: str) -> TokenRange:
        a, sep, b = text.partition(":")
        try:
            start = int(a) if a.strip() else 0
            stop = int(b) if b.strip() else start + 1
        except ValueError:
            fail(f"--tokens {text!r}: expected A:B, decode steps A (inclusive) to B (exclusive), e.g. 0:4")
        if not sep:
            stop = start + 1
        if start < 0 or stop <= start:
            fail(f"--tokens {text!r}: need 0 <= A < B")
        return cls(start, stop)


def _step_order(events: Sequence[dict]) -> dict[tuple[int, int], int]:
    order: dict[tuple[int, int], int] = {}
    for e in events:
        a = e["args"]
        if e["track"] == "compute" and "step" in a:
            order.setdefault((a.get("group", 0), a["step"]), len(order))
    return order


def select_tokens(events: Sequence[dict], tokens: TokenRange | None) -> list[dict]:
    """The events of decode steps ``tokens`` (run order), plus the copies overlapping that window.
    A recording of that window only (``WindowedEvents``) already is that selection."""
    if tokens is None:
        return list(events)
    if isinstance(events, WindowedEvents):
        assert (events.window.start, events.window.stop) == (tokens.start, tokens.stop)  # the caller's
        chosen, steps = list(events), events.num_steps
    else:
        chosen, steps = window_events(list(events), tokens.start, tokens.stop)
    if tokens.start >= steps:
        fail(f"--tokens {tokens.start}:{tokens.stop}: the run has only {steps} decode steps")
    return chosen


def _lanes(events: Sequence[dict]) -> dict[int, tuple[str, int]]:
    """Per event index: (track, lane). Overlapping slices of one track get separate lanes."""
    ends: dict[str, list[float]] = {}
    out: dict[int, tuple[str, int]] = {}
    for i, e in sorted(enumerate(events), key=lambda ie: (ie[1]["start_ms"], ie[0])):
        lanes = ends.setdefault(e["track"], [])
        for j, end in enumerate(lanes):
            if end <= e["start_ms"] + _EPS_MS:
                lanes[j] = e["end_ms"]
                out[i] = (e["track"], j)
                break
        else:
            lanes.append(e["end_ms"])
            out[i] = (e["track"], len(lanes) - 1)
    return out


def _category(e: dict) -> str:
    if e["track"] == "compute":
        if "key" in e["args"]:
            return "expert"
        return "shared" if "shared" in e["name"] else "attention"
    return str(e["args"].get("kind", e["track"]))


def chrome_trace(events: Sequence[dict], metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """The trace-event JSON object for ``events`` (see the module docstring)."""
    lanes = _lanes(events)
    tracks = sorted({tl for tl in lanes.values()}, key=lambda tl: (tl[0] != "compute", tl[0], tl[1]))
    tid_of = {tl: COMPUTE_TID + n for n, tl in enumerate(tracks)}
    lane_count: dict[str, int] = {}
    for track, lane in tracks:
        lane_count[track] = max(lane_count.get(track, 0), lane + 1)
    out: list[dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "pid": PID, "tid": 0, "args": {"name": "GPU (moesim simulation)"}}
    ]
    for (track, lane), tid in tid_of.items():
        label = _TRACK_LABEL.get(track, track)
        if lane_count[track] > 1:
            label = f"{label} lane {lane}"
        out.append({"name": "thread_name", "ph": "M", "pid": PID, "tid": tid, "args": {"name": label}})
        out.append(
            {"name": "thread_sort_index", "ph": "M", "pid": PID, "tid": tid, "args": {"sort_index": tid}}
        )
    pending: dict[int, tuple[dict, int]] = {}  # expert key -> (prefetch copy event, its tid)
    flow_id = 0
    flows: list[dict[str, Any]] = []
    for i, e in sorted(enumerate(events), key=lambda ie: (ie[1]["start_ms"], ie[0])):
        tid = tid_of[lanes[i]]
        args = {k: v for k, v in e["args"].items()}
        out.append(
            {
                "name": e["name"],
                "cat": _category(e),
                "ph": "X",
                "ts": _us(e["start_ms"]),
                "dur": max(0.0, _us(e["end_ms"] - e["start_ms"])),
                "pid": PID,
                "tid": tid,
                "args": args,
            }
        )
        key = e["args"].get("key")
        if key is None:
            continue
        if e["track"] != "compute":
            if e["args"].get("kind") == "prefetch":
                pending[key] = (e, tid)
            else:
                pending.pop(key, None)  # a demand copy: any earlier prefetch of it went unused
        elif key in pending:
            src, src_tid = pending[key]
            if src["end_ms"] <= e["start_ms"] + _EPS_MS:
                del pending[key]
                flow_id += 1
                common = {"name": "prefetch -> use", "cat": "prefetch", "id": flow_id, "pid": PID}
                flows.append({**common, "ph": "s", "ts": _us(src["start_ms"]), "tid": src_tid})
                flows.append({**common, "ph": "f", "bp": "e", "ts": _us(e["start_ms"]), "tid": tid})
    return {
        "traceEvents": out + flows,
        "displayTimeUnit": "ms",
        "otherData": dict(metadata or {}),
    }


def write_chrome_trace(
    path: str | Path, events: Sequence[dict], metadata: dict[str, Any] | None = None
) -> Path:
    path = Path(path)
    atomic_write_text(path, json.dumps(chrome_trace(events, metadata), separators=(",", ":")) + "\n")
    return path


_NUM = (int, float)
_FIELDS = {"name": (str,), "pid": (int,), "tid": (int,)}  # every event's, then its phase's:
_PHASE_FIELDS: dict[str, dict[str, tuple]] = {
    "X": {"ts": _NUM, "dur": _NUM},
    "s": {"ts": _NUM, "id": (int, str), "cat": (str,)},
    "t": {"ts": _NUM, "id": (int, str), "cat": (str,)},
    "f": {"ts": _NUM, "id": (int, str), "cat": (str,)},
    "M": {"args": (dict,)},
}


def _event_problems(n: int, ev: dict) -> list[str]:
    ph = ev.get("ph")
    if not isinstance(ph, str) or ph not in _PHASE_FIELDS:
        return [f"event {n}: unsupported phase {ph!r}"]
    problems = []
    for k, types in {**_FIELDS, **_PHASE_FIELDS[ph]}.items():
        v = ev.get(k)
        if not isinstance(v, types) or isinstance(v, bool):
            problems.append(
                f"event {n} ({ph}): field {k!r} missing or not {'/'.join(t.__name__ for t in types)}"
            )
    if ph == "X" and isinstance(ev.get("dur"), _NUM) and ev["dur"] < 0:
        problems.append(f"event {n}: negative dur")
    if "args" in ev and not isinstance(ev["args"], dict):
        problems.append(f"event {n}: args must be an object")
    return problems


def validate_trace(obj: Any) -> list[str]:
    """Problems with ``obj`` as trace-event JSON (empty = valid): required fields and their types
    per phase, and every flow id opened once and closed once, not before it opened."""
    if not isinstance(obj, dict) or not isinstance(obj.get("traceEvents"), list):
        return ["top level must be an object with a traceEvents array"]
    problems: list[str] = []
    ends: dict[str, dict[Any, float]] = {"s": {}, "f": {}}  # flow id -> ts of its start / finish
    for n, ev in enumerate(obj["traceEvents"]):
        if not isinstance(ev, dict):
            problems.append(f"event {n}: not an object")
            continue
        problems += _event_problems(n, ev)
        ph = ev.get("ph")
        if isinstance(ph, str) and ph in ends:
            if ev.get("id") in ends[ph]:
                problems.append(f"flow id {ev.get('id')}: {'opened' if ph == 's' else 'closed'} twice")
            ends[ph][ev.get("id")] = ev.get("ts", 0)
    starts, finishes = ends["s"], ends["f"]
    for fid in set(starts) ^ set(finishes):
        problems.append(f"flow id {fid}: not paired (needs one 's' and one 'f')")
    for fid in set(starts) & set(finishes):
        if finishes[fid] < starts[fid]:
            problems.append(f"flow id {fid}: finishes before it starts")
    return problems


_COLORS = {
    "attention": "#9e9e9e",
    "shared": "#c8a165",
    "expert": "#4caf50",
    "demand": "#e4572e",
    "prefetch": "#3f7fbf",
}


def write_gantt(
    path: str | Path, events: Sequence[dict], tokens: TokenRange | None = None, title: str = ""
) -> Path:
    """A PNG Gantt chart of the chosen decode steps: compute stream and copy-engine lanes over time."""
    from matplotlib.patches import Patch

    from moesim.reports.html import png_bytes, pyplot

    tokens = tokens or TokenRange(0, 2)
    chosen = select_tokens(events, tokens)
    if not chosen:
        fail("--gantt: the run recorded no timeline events")
    lanes = _lanes(chosen)
    tracks = sorted(set(lanes.values()), key=lambda tl: (tl[0] != "compute", tl[0], tl[1]))
    row = {tl: len(tracks) - 1 - n for n, tl in enumerate(tracks)}
    plt = pyplot()
    lo = min(e["start_ms"] for e in chosen if e["track"] == "compute")
    hi = max(e["end_ms"] for e in chosen if e["track"] == "compute")
    fig, ax = plt.subplots(figsize=(13, 1.2 + 0.7 * len(tracks)))
    for i, e in enumerate(chosen):
        y = row[lanes[i]]
        ax.broken_barh(
            [(e["start_ms"], max(e["end_ms"] - e["start_ms"], 1e-6))],
            (y - 0.38, 0.76),
            facecolors=_COLORS.get(_category(e), "#777777"),
            edgecolors="white",
            linewidth=0.3,
        )
    # Flows: arrow from each prefetch copy to the slice that used it (only when readable).
    trace = chrome_trace(chosen)
    flows = [ev for ev in trace["traceEvents"] if ev["ph"] in ("s", "f")]
    # chrome_trace numbers tids in the same track order as ``tracks`` above.
    tid_to_row = {COMPUTE_TID + n: len(tracks) - 1 - n for n in range(len(tracks))}
    if len(flows) <= 400:
        by_id: dict[int, list[dict]] = {}
        for ev in flows:
            by_id.setdefault(ev["id"], []).append(ev)
        for pair in by_id.values():
            s = next(ev for ev in pair if ev["ph"] == "s")
            f = next(ev for ev in pair if ev["ph"] == "f")
            ax.annotate(
                "",
                xy=(f["ts"] / 1000.0, tid_to_row[f["tid"]] - 0.38),
                xytext=(s["ts"] / 1000.0, tid_to_row[s["tid"]] + 0.38),
                arrowprops={"arrowstyle": "->", "color": "#3f7fbf", "lw": 0.5, "alpha": 0.6},
            )
    # token boundaries
    order = _step_order(chosen)
    starts: dict[int, float] = {}
    for e in chosen:
        a = e["args"]
        if e["track"] == "compute" and "step" in a:
            i = order[(a.get("group", 0), a["step"])]
            starts[i] = min(starts.get(i, float("inf")), e["start_ms"])
    for n, (_, t) in enumerate(sorted(starts.items())):
        ax.axvline(t, color="black", lw=0.6, ls="--")
        ax.text(t, len(tracks) - 0.45, f" token {tokens.start + n}", fontsize=8, va="bottom")
    labels = []
    lane_count: dict[str, int] = {}
    for track, lane in tracks:
        lane_count[track] = max(lane_count.get(track, 0), lane + 1)
    for track, lane in tracks:
        label = _TRACK_LABEL.get(track, track)
        labels.append(label + (f" {lane}" if lane_count[track] > 1 else ""))
    ax.set_yticks(range(len(tracks) - 1, -1, -1))
    ax.set_yticklabels(labels)
    ax.set_ylim(-0.6, len(tracks) - 0.1)
    ax.set_xlim(lo, hi)
    ax.set_xlabel("simulated time (ms)")
    ax.set_title(
        title or f"decode steps {tokens.start}..{tokens.stop - 1}: GPU compute stream and host-to-GPU copies"
    )
    ax.legend(
        handles=[Patch(color=c, label=k) for k, c in _COLORS.items()],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.35 if len(tracks) < 3 else -0.2),
        ncol=5,
        fontsize=8,
        frameon=False,
    )
    path = Path(path)
    atomic_write_bytes(path, png_bytes(fig))
    return path
