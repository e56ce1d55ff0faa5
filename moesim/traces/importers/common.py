"""Helpers shared by the importers."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO

import numpy as np

from moesim.errors import fail
from moesim.readers import parse_json_text


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
    n = 0
    try:
        with path.open(encoding="utf-8") as fh:
            for n, text in enumerate(fh, start=1):
                if not text.strip():
                    continue
                rec = parse_json_text(text, f"{path} line {n}", line=False)
                if not isinstance(rec, dict):
                    fail(f"{path} line {n}: expected a JSON object per line, got {type(rec).__name__}")
                yield n, rec
    except UnicodeDecodeError:
        fail(f"{path} line {n + 1}: not UTF-8 text; is this a binary file?")
    except OSError as exc:
        fail(f"{path}: cannot read ({exc.strerror or exc})")


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


# -- strict values: refuse what would otherwise be altered (never coerce) ----------------------------
# Expert ids, layers and positions are stored as int32 at most; anything larger is a typo.
ID_MAX = int(np.iinfo(np.int32).max)


def strict_int(value: object, where: str, lo: int = 0, hi: int = ID_MAX) -> int:
    """``value`` as an int in [lo, hi]; a bool, float, string or out-of-range number is refused."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        fail(f"{where} is {_show(value)}, expected an integer")
    v = int(value)  # type: ignore[arg-type]
    if not lo <= v <= hi:
        fail(f"{where} is {_show(value)}, outside [{lo}, {hi}]")
    return v


def strict_int_list(value: object, where: str, lo: int = 0, hi: int = ID_MAX) -> list[int]:
    if not isinstance(value, list):
        fail(f"{where} is {_show(value)}, expected a list of integers")
    return [strict_int(v, f"{where}[{i}]", lo, hi) for i, v in enumerate(value)]  # type: ignore[union-attr]


def strict_float_list(value: object, where: str) -> list[float]:
    """A list of finite numbers (ints allowed); strings, booleans, NaN and infinities are refused."""
    if not isinstance(value, list):
        fail(f"{where} is {_show(value)}, expected a list of numbers")
    out = []
    for i, v in enumerate(value):  # type: ignore[arg-type]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            fail(f"{where}[{i}] is {_show(v)}, expected a number")
        try:
            f = float(v)
        except OverflowError:
            fail(f"{where}[{i}] is {_show(v)}, too large for a float")
        if not np.isfinite(f):
            fail(f"{where}[{i}] is {v!r}, expected a finite number")
        out.append(f)
    return out


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def npy_header(fh: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from an open ``.npy`` stream's header, without reading the data."""
    major, _ = np.lib.format.read_magic(fh)
    if major == 1:
        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
    elif major == 2:
        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise ValueError(f".npy format version {major} is not supported")
    return tuple(int(n) for n in shape), np.dtype(dtype)
