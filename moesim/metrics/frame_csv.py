"""A run's tables as CSV: the bytes ``DataFrame.to_csv`` writes, about 3x sooner.

pandas formats cell by cell through several layers of Python; here each row is one ``%`` of a
format string over the row's values. Only integer, bool and float64 columns with plain names take
this path (every table a run writes); anything else goes to pandas. tests/metrics/test_frame_csv.py
holds the two to the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

ROWS_PER_BLOCK = 65_536  # rows formatted at a time: a million-token table is never held as text


def _plain(name: object) -> bool:
    return isinstance(name, str) and not any(c in name for c in ',"\n\r')


def _fast_ok(df: pd.DataFrame) -> bool:
    if len(df.columns) == 0 or not all(_plain(c) for c in df.columns):
        return False
    return all(dt.kind in "iub" or dt == np.float64 for dt in df.dtypes)


def write_frame_csv(df: pd.DataFrame, path: Path, float_format: str = "%.6f") -> None:
    """``df.to_csv(path, index=False, float_format=float_format, lineterminator="\\n")``."""
    if not _fast_ok(df):
        df.to_csv(path, index=False, float_format=float_format, lineterminator="\n")
        return
    arrays = [df[c].to_numpy() for c in df.columns]
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(",".join(df.columns) + "\n")
        for lo in range(0, len(df), ROWS_PER_BLOCK):
            fh.write(_block([a[lo : lo + ROWS_PER_BLOCK] for a in arrays], float_format))


def _block(arrays: list[np.ndarray], float_format: str) -> str:
    fmts, cols = [], []
    for a in arrays:
        if a.dtype.kind in "iu":
            fmts.append("%d")
            cols.append(a.tolist())
        elif a.dtype.kind == "b":
            fmts.append("%s")  # True / False, as pandas writes them
            cols.append(a.tolist())
        elif np.isnan(a).any():  # pandas writes NaN as an empty cell
            fmts.append("%s")
            cols.append(["" if x != x else float_format % x for x in a.tolist()])
        else:
            fmts.append(float_format)
            cols.append(a.tolist())
    row = ",".join(fmts) + "\n"
    return "".join(map(row.__mod__, zip(*cols)))
