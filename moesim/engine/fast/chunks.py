"""A run's steps in chunks of whole groups, so the fast executor's memory is bounded by a chunk.

The passes (predictions, decisions, timing) run chunk after chunk, carrying the state that crosses
groups (``decide.DecideState``, ``timing.TimingState``); a chunk holds about ``CHUNK_ACCESSES``
routed accesses (a group larger than that is a chunk of its own). A run of at most
``KEEP_ACCESSES`` keeps its chunks' steps per trace or per groups list (``memo``), so a sweep's runs
over the same groups reuse them and the predictions made over them; a longer run builds each chunk
when it is reached.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

import numpy as np

from moesim.engine.fast.decide import NEVER, first_uses
from moesim.engine.fast.predictions import StepArrays, memo, step_arrays, trace_steps
from moesim.traces.replay import Group
from moesim.traces.trace import Trace

# A chunk's arrays (steps, predictions, decisions, copies) take ~50 bytes per access while it runs
# (measured: a 1M-token oracle run peaked 150 MB lower with 1M-access chunks than with 4M).
# Tests set it to a few accesses to cross many chunk boundaries.
CHUNK_ACCESSES = 1_000_000
# Runs of up to this many accesses keep their steps and predictions across runs (as a sweep reuses
# them): ~20 bytes per access for the steps, more for the predictions.
KEEP_ACCESSES = 16_000_000


@dataclass(frozen=True)
class Chunk:
    index: int  # its place in the run
    steps: StepArrays  # indexed from the chunk's start
    groups: list[Group] | None  # its Group objects, when it was built from them
    acc0: int  # the run's index of its first access
    tok0: int  # the run's decode step of its first token


def _bounds(sizes: Iterable[int]) -> list[int]:
    """Group indices where chunks start, then the end: whole groups, about CHUNK_ACCESSES each."""
    bounds, n, count = [0], 0, 0
    for a in sizes:
        if n > 0 and n + a > CHUNK_ACCESSES:
            bounds.append(count)
            n = 0
        n += a
        count += 1
    bounds.append(count)
    return bounds


def _accesses(g: Group) -> int:
    return sum(map(len, g.steps))


class RunSteps:
    """The run's flattened steps, chunk by chunk: from the trace's arrays at batch 1 (one group per
    sequence), else from the groups (a list, or a function returning them, called once per pass)."""

    def __init__(self, L: int, trace: Trace | None, groups: Iterable[Group] | Callable[[], Iterable[Group]]):
        self.L = L
        self.trace = trace
        if trace is None and not callable(groups) and not isinstance(groups, list):
            groups = list(groups)  # a one-shot iterable: held, as it must be read more than once
        self._groups = groups
        self._list = groups if isinstance(groups, list) and trace is None else None
        self._bounds: list[int] = []  # of the trace's sequences or of the groups list
        self._kept: list[StepArrays] | None = None
        if trace is not None:
            per_token = L * trace.meta.top_k
            sizes = (np.diff(np.asarray(trace.seq_offsets, np.int64)) * per_token).tolist()
        elif self._list is not None:
            sizes = list(map(_accesses, self._list))
        else:
            return  # read as the groups come
        self._bounds = _bounds(sizes)
        if sum(sizes) <= KEEP_ACCESSES:
            anchor = trace if trace is not None else self._list
            key = ("steps", id(anchor), L, CHUNK_ACCESSES)
            self._kept = memo(key, (anchor,), lambda: [s for s, _ in self._built()])

    @property
    def kept(self) -> list[StepArrays] | None:
        """The chunks' steps of a run kept across runs (the same object for every run over them:
        see ``KEEP_ACCESSES``), else None."""
        return self._kept

    def groups(self) -> Iterable[Group]:
        g = self._groups
        return g() if callable(g) else g

    def chunks(self) -> Iterator[Chunk]:
        acc0 = tok0 = 0
        for i, (steps, groups) in enumerate(self._parts()):
            yield Chunk(i, steps, groups, acc0, tok0)
            acc0 += len(steps.keys)
            tok0 += int(steps.grp_tok0[-1])

    def _parts(self) -> Iterator[tuple[StepArrays, list[Group] | None]]:
        if self._kept is None:
            yield from self._built()
            return
        gl, b = self._list, self._bounds
        for i, steps in enumerate(self._kept):
            yield steps, (gl[b[i] : b[i + 1]] if gl is not None else None)

    def _built(self) -> Iterator[tuple[StepArrays, list[Group] | None]]:
        b = self._bounds
        if self.trace is not None:
            for lo, hi in zip(b[:-1], b[1:]):
                yield trace_steps(self.trace, lo, hi), None
            return
        if self._list is not None:
            for lo, hi in zip(b[:-1], b[1:]):
                yield step_arrays(self._list[lo:hi], self.L), self._list[lo:hi]
            return
        part: list[Group] = []
        n = 0
        for g in self.groups():  # read as it comes: a generator is never held whole
            a = _accesses(g)
            if part and n + a > CHUNK_ACCESSES:
                yield step_arrays(part, self.L), part
                part, n = [], 0
            part.append(g)
            n += a
        if part or n == 0:
            yield step_arrays(part, self.L), part

    def group_lists(self) -> Callable[[Chunk], list[Group]]:
        """A function giving each chunk's Group objects, chunks asked for in order (for the
        prediction pass of a predictor the compiled pass does not cover)."""
        it: list[Iterator[Group]] = []

        def of(chunk: Chunk) -> list[Group]:
            if chunk.groups is not None:
                return chunk.groups
            if not it:
                it.append(iter(self.groups()))
            return list(islice(it[0], len(chunk.steps.grp_step0) - 1))

        return of

    def first_after(self, K: int) -> list[np.ndarray]:
        """Each key's first demand position in the run, then after each chunk (NEVER: none):
        Belady's lookahead past a chunk's end, from one pass over the chunks (K positions each)."""
        firsts = [first_uses(c.steps.keys, c.acc0, K) for c in self.chunks()]
        after = np.full(K, NEVER, np.int64)
        out = [after]
        for f in reversed(firsts):
            after = np.where(f != NEVER, f, after)
            out.append(after)
        out.reverse()
        return out
