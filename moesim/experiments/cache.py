"""What runs in one process share: loaded traces, their replay groups, on-demand baselines.

A ``RunCache`` belongs to whoever runs many points (a sweep worker keeps one per process, a notebook
may keep its own) and travels with each ``Prepared`` run, so a run reads and fills its caller's
cache, not a hidden module global. Entries are keyed by the identity of their inputs (the trace
files' paths, sizes and modification times; the resolved scenario and input hashes for baselines),
so a changed file is never served stale; every consumer treats cached traces and groups as
read-only.

``PROCESS_CACHE`` serves callers that pass none (``moesim run``, the Python API, tests): a run
never sees another process's entries, and a result never depends on what is cached.
"""

from __future__ import annotations

from typing import Any


def remember(cache: dict, key: Any, value: Any, size: int) -> None:
    """Put ``key`` into ``cache``, dropping the oldest entries beyond ``size``."""
    while len(cache) >= size:
        cache.pop(next(iter(cache)))
    cache[key] = value


class RunCache:
    """Loaded traces (the last ``max_traces``), replay groups (the last ``max_group_sets``, as
    ``PackedGroup`` arrays: 20-40 bytes per layer-step, so any trace's fit), on-demand baselines
    (demand misses) and the loaded traces' digests.

    Groups of at most ``view_steps`` layer-steps are also kept as the ``Group`` objects handed to
    runs, whose lists (about 320 bytes a layer-step once read) then serve every later run; larger
    traces get fresh ``Group``s per run, built from the arrays when read."""

    def __init__(
        self,
        max_traces: int = 2,
        max_group_sets: int = 1,
        max_baselines: int = 256,
        view_steps: int = 600_000,
    ) -> None:
        self.max_traces = max_traces
        self.max_group_sets = max_group_sets
        self.max_baselines = max_baselines
        self.view_steps = view_steps
        self.traces: dict[tuple, Any] = {}
        self.groups: dict[tuple, list] = {}  # (trace key, batch, prefill) -> [PackedGroup]
        self.views: dict[tuple, list] = {}  # the same key -> [Group] (small traces only)
        self.baselines: dict[str, int] = {}
        self.digests: dict[tuple, str] = {}  # trace identity -> sha256 (provenance, baseline keys)

    def keep_trace(self, key: tuple, trace: Any) -> None:
        remember(self.traces, key, trace, self.max_traces)

    def keep_groups(self, key: tuple, groups: list) -> None:
        remember(self.groups, key, groups, self.max_group_sets)
        for old in [k for k in self.views if k not in self.groups]:
            del self.views[old]

    def keep_views(self, key: tuple, views: list) -> None:
        if key in self.groups:
            self.views[key] = views

    def keep_baseline(self, key: str, misses: int) -> None:
        remember(self.baselines, key, misses, self.max_baselines)

    def keep_digest(self, key: tuple, digest: str) -> None:
        remember(self.digests, key, digest, self.max_baselines)

    def clear(self) -> None:
        self.digests.clear()
        self.traces.clear()
        self.groups.clear()
        self.views.clear()
        self.baselines.clear()


PROCESS_CACHE = RunCache()
