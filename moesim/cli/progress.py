"""Progress of long work, on stderr: a rich bar on a terminal, else (logs, CI, notebooks, pipes) a
plain line every ``LINE_INTERVAL_S`` seconds of wall time and one when work that printed any ends.
Off when the caller says so (``--quiet``). Only stderr: results and stdout never change."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

LINE_INTERVAL_S = 5.0


class _Lines:
    """Plain progress lines for a stream that is not a terminal (no cursor control, no redraws)."""

    def __init__(self, total: int, label: str, unit: str, stream=None):
        self.total, self.label, self.unit = total, label, unit
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.fields: dict[str, object] = {}
        self.t0 = self.last = time.monotonic()
        self.printed = 0

    def advance(self, n: int) -> None:
        self.update(self.done + n)

    def update(self, completed: int, **fields) -> None:
        self.done = completed
        self.fields.update(fields)
        now = time.monotonic()
        if now - self.last >= LINE_INTERVAL_S:
            self.last = now
            self._line(now)

    def close(self) -> None:
        if self.printed:  # short work stays silent; long work says it finished
            self._line(time.monotonic(), final=True)

    def _line(self, now: float, final: bool = False) -> None:
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        unit = self.unit.format(task=_Task(self.fields))
        secs = now - self.t0
        tail = f"done in {secs:.0f} s" if final else f"{secs:.0f} s elapsed"
        print(
            f"{self.label}: {self.done:,}/{self.total:,} {unit}{pct}, {tail}",
            file=self.stream,
            flush=True,
        )
        self.printed += 1


class _Task:
    """What ``unit`` format strings read (``{task.fields[failed]}``), as with rich's tasks."""

    def __init__(self, fields: dict):
        self.fields = fields


class _Rich:
    def __init__(self, prog, task):
        self.prog, self.task = prog, task

    def advance(self, n: int) -> None:
        self.prog.advance(self.task, n)

    def update(self, completed: int, **fields) -> None:
        self.prog.update(self.task, completed=completed, **fields)


@contextmanager
def _bar(
    total: int, label: str, unit: str, enabled: bool | None, elapsed: bool = False, **fields
) -> Iterator[_Lines | _Rich | None]:
    """A reporter with ``advance(n)`` and ``update(completed, **fields)``, or None when disabled;
    ``unit`` may use the task's fields. ``enabled`` None or True: shown, as a bar on a terminal."""
    if enabled is False:
        yield None
        return
    if not sys.stderr.isatty():
        lines = _Lines(total, label, unit)
        lines.fields.update(fields)
        ok = False
        try:
            yield lines
            ok = True
        finally:
            if ok:
                lines.close()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn() if elapsed else TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as prog:
        yield _Rich(prog, prog.add_task(label, total=total, **fields))


@contextmanager
def token_progress(
    total: int, label: str, enabled: bool | None = None
) -> Iterator[Callable[[int], None] | None]:
    with _bar(total, label, "tokens", enabled) as bar:
        yield None if bar is None else bar.advance


@contextmanager
def point_progress(total: int, label: str, enabled: bool | None = None) -> Iterator[Callable | None]:
    """Sweep points: ``update(done, failed, todo)`` after each finished point."""
    with _bar(total, label, "points, {task.fields[failed]} failed", enabled, elapsed=True, failed=0) as bar:
        if bar is None:
            yield None
            return

        def update(done: int, failed: int, todo: int) -> None:
            bar.update(total - todo + done, failed=failed)

        yield update
