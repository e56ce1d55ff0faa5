"""The results table of a sweep: one row per point, the point's summary flattened into columns.

Built from point records alone (plain dicts: index, status, error, overrides, summary), so any
backend and any completion order give the same bytes. Lives in metrics so that reports can read a
sweep's table without importing the experiment runner.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from moesim.errors import fail
from moesim.io import atomic_write_text, atomic_write_with

SECTION_ORDER = ("counts", "latency", "traffic", "prefetch", "cache", "provenance")
LEAD_COLUMNS = ("point", "status", "error")
PARAM_PREFIX = "param."


def _flatten(prefix: str, obj: Any, out: dict[str, Any]) -> None:
    if isinstance(obj, dict) and obj:
        for k in sorted(obj):
            _flatten(f"{prefix}.{k}" if prefix else str(k), obj[k], out)
    elif isinstance(obj, (dict, list, tuple)):
        out[prefix] = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    else:
        out[prefix] = obj


def _param_cell(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


def record_row(record: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    row: dict[str, Any] = {"point": record["index"], "status": record["status"], "error": record["error"]}
    for key in keys:
        row[PARAM_PREFIX + key] = _param_cell(record["overrides"].get(key))
    if record.get("summary"):
        _flatten("", record["summary"], row)
    return row


def _column_order(columns: Iterable[str], keys: Sequence[str]) -> list[str]:
    lead = list(LEAD_COLUMNS) + [PARAM_PREFIX + k for k in keys]
    rest = sorted(set(columns) - set(lead))

    def rank(c: str) -> tuple[int, str]:
        sec = c.split(".", 1)[0]
        return (SECTION_ORDER.index(sec) if sec in SECTION_ORDER else len(SECTION_ORDER), c)

    return lead + sorted(rest, key=rank)


def _uniform(series: pd.Series) -> pd.Series:
    # Parquet needs one type per column; a key swept over mixed types (e.g. 64 and "auto") becomes text.
    vals = series.dropna()
    kinds = {type(v) for v in vals}
    if len(kinds) <= 1 or kinds <= {int, float}:
        return series
    return series.map(lambda v: None if v is None or (isinstance(v, float) and v != v) else json.dumps(v))


def build_table(records: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> pd.DataFrame:
    rows = [record_row(r, keys) for r in sorted(records, key=lambda r: r["index"])]
    cols = _column_order({c for r in rows for c in r}, keys)
    df = pd.DataFrame(rows, columns=cols)
    for c in df.columns:
        if df[c].dtype == object:
            df[c] = _uniform(df[c])
    return df.reset_index(drop=True)


def write_table(out: Path, df: pd.DataFrame) -> None:
    atomic_write_with(out / "results.parquet", lambda p: df.to_parquet(p, index=False))
    atomic_write_text(out / "results.csv", df.to_csv(index=False, lineterminator="\n"))


def read_table(out: str | Path) -> pd.DataFrame:
    return pd.read_parquet(Path(out) / "results.parquet")


def resolve_metric(table: pd.DataFrame, name: str) -> str:
    """A column by its full name (``latency.tpot_ms.p99``) or a unique suffix (``tpot_ms.p99``)."""
    if name in table.columns:
        return name
    matches = [c for c in table.columns if c.endswith("." + name)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        fail(f"metric {name!r}: no such column; e.g. counts.hit_rate, latency.tpot_ms.p99, traffic.bytes_h2d")
    fail(f"metric {name!r}: ambiguous, matches {', '.join(matches)}")
    raise AssertionError  # unreachable
