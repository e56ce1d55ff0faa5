"""Executor events for timelines: one plain dict per slice, in a stable order.

Each event: ``{"track": "compute" | "h2d", "name", "start_ms", "end_ms", "args": {...}}``. Copies
carry ``args.kind`` ("demand" or "prefetch"), ``args.key`` and ``args.issue_ms``; an expert compute
slice carries ``args.key`` so a viewer can draw a flow from the copy that brought that expert in.
Exporters (Chrome/Perfetto JSON, Gantt PNG) read this list; executors only fill it.
"""

from __future__ import annotations

# The state code of a copy that was cancelled before it started: the value of
# ``moesim.engine.copy_engine.CANCELLED`` (tests/test_architecture.py pins them equal), written
# here because metrics sits below the executors and imports none of them.
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
