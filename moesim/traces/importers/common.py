"""Helpers shared by the importers."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from moesim.errors import fail


def expand_sources(paths: Sequence[Path], patterns: Sequence[str], fmt: str) -> list[Path]:
    """Files named directly, plus files under named folders matching ``patterns`` (sorted, recursive)."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted({f for pat in patterns for f in p.rglob(pat) if f.is_file()})
            if not found:
                fail(f"{p}: no {' / '.join(patterns)} files found for format {fmt!r}")
            out.extend(found)
        else:
            out.append(p)
    seen: set[Path] = set()
    unique = []
    for f in out:  # a file named twice (folder + file) is imported once
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def jsonl_objects(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, record) for each non-blank line of a JSON-lines file; one line naming the
    line on invalid JSON or a line that is not an object."""
    with path.open(encoding="utf-8") as fh:
        for n, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                rec = json.loads(text)
            except json.JSONDecodeError as exc:
                fail(f"{path} line {n}: invalid JSON ({exc.msg})")
            if not isinstance(rec, dict):
                fail(f"{path} line {n}: expected a JSON object per line, got {type(rec).__name__}")
            yield n, rec


def describe_sources(paths: Sequence[Path], limit: int = 6) -> str:
    """Short, machine-independent description of the source files (names only, no absolute paths)."""
    names = [p.name for p in paths]
    shown = ", ".join(names[:limit])
    if len(names) > limit:
        shown += f", ... ({len(names)} files)"
    return shown


def ordered_unique(values: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for v in values:
        seen.setdefault(v, None)
    return list(seen)


def offsets_from_lengths(lengths: Sequence[int] | np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.asarray(lengths, dtype=np.int64))]).astype(np.int64)


def neighbour_rows(present: np.ndarray) -> np.ndarray:
    """For a (T, L) presence mask, the row each cell takes its value from.

    A present cell keeps its own row; a missing one copies the nearest earlier token at the same
    layer, or the nearest later one at the start of the sequence. -1 where a layer has no row at all.
    """
    T = present.shape[0]
    rows = np.arange(T)[:, None]
    prev = np.maximum.accumulate(np.where(present, rows, -1), axis=0)
    nxt = np.minimum.accumulate(np.where(present, rows, T)[::-1], axis=0)[::-1]
    return np.where(prev >= 0, prev, np.where(nxt < T, nxt, -1))


def rank_by_weight(experts: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Reorder each row by descending weight (stable, so ties keep their listed order).

    Returns the reordered arrays and how many rows changed order.
    """
    order = np.argsort(-weights, axis=-1, kind="stable")
    new_e = np.take_along_axis(experts, order, axis=-1)
    new_w = np.take_along_axis(weights, order, axis=-1)
    changed = int((order != np.arange(experts.shape[-1])).any(-1).sum())
    return new_e, new_w, changed
