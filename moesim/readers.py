"""Safe readers for files a user hands back to moesim (result directories, JSON documents).

Every failure is one ``MoesimInputError`` line naming the file: a corrupt, truncated, binary or
hostile file (deeply nested JSON, numbers with thousands of digits) never escapes as a traceback.
This module sits at the bottom of the dependency graph, so traces, models and reports may use it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from moesim.errors import fail

# Deeper than any document moesim writes or reads; the JSON parser recurses once per level.
MAX_JSON_DEPTH = 64


def _depth_ok(text: str, limit: int) -> bool:
    """True when brackets never nest deeper than ``limit`` (strings skipped), checked before parsing
    so a hostile document cannot exhaust the parser's recursion."""
    depth, in_str, esc = 0, False, False
    if text.count("[") + text.count("{") <= limit:
        return True
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def parse_json_text(text: str, where: str, fix: str = "", *, line: bool = True) -> Any:
    """Parse JSON text; ``where`` names its origin in the one-line error (``line=False`` when it
    already names the line, as for one record of a JSON-lines file)."""
    tail = f"; {fix}" if fix else ""
    if not _depth_ok(text, MAX_JSON_DEPTH):
        fail(f"{where}: JSON nested deeper than {MAX_JSON_DEPTH} levels{tail}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        at = f" line {exc.lineno}:" if line else ""
        fail(f"{where}:{at} invalid JSON ({exc.msg}){tail}")
    except (ValueError, RecursionError) as exc:  # e.g. an integer with more digits than Python parses
        fail(f"{where}: invalid JSON ({str(exc).splitlines()[0][:100]}){tail}")
    raise AssertionError  # unreachable: fail() raises


def read_text_file(path: Path, what: str = "file") -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        fail(f"{path}: not UTF-8 text (byte {exc.start}); is this a binary {what}?")
    except OSError as exc:
        fail(f"{path}: cannot read {what} ({exc.strerror or exc})")
    raise AssertionError


def read_json_file(path: Path, what: str = "JSON file", fix: str = "") -> Any:
    """Read and parse a JSON file; one line naming the file on any failure."""
    return parse_json_text(read_text_file(path, what), str(path), fix)


def read_json_object(path: Path, what: str = "JSON file", fix: str = "") -> dict[str, Any]:
    doc = read_json_file(path, what, fix)
    if not isinstance(doc, dict):
        fail(
            f"{path}: top level is a JSON {type(doc).__name__}, expected an object{'; ' + fix if fix else ''}"
        )
    return doc


def read_result_table(path: Path) -> Any:
    """A result table (``.parquet`` or ``.csv``) written by moesim, as a pandas DataFrame."""
    import pandas as pd

    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except MemoryError:
        fail(f"{path}: the table is too large to read (corrupt metadata?); re-create the result")
    except Exception as exc:  # pyarrow/pandas raise many types (ArrowInvalid, ParserError, OSError...)
        msg = str(exc).splitlines()[0][:120] if str(exc) else ""
        fail(f"{path}: cannot read result table ({type(exc).__name__}: {msg}); re-create the result")
    raise AssertionError


def require_fields(doc: dict[str, Any], path: Path, spec: dict[str, type | tuple[type, ...]]) -> None:
    """Check that ``doc`` holds each dotted field of ``spec`` with the given type(s)."""
    for dotted, types in spec.items():
        node: Any = doc
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                fail(f"{path}: field {dotted!r} is missing; re-create the result")
            node = node[part]
        if isinstance(node, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            fail(f"{path}: field {dotted!r} is a boolean, expected {_names(types)}")
        if not isinstance(node, types):
            fail(f"{path}: field {dotted!r} is {type(node).__name__}, expected {_names(types)}")


def _names(types: type | tuple[type, ...]) -> str:
    ts = types if isinstance(types, tuple) else (types,)
    return " or ".join(t.__name__ for t in ts)


# What `moesim report` reads from a run directory. Numbers it computes with must be numbers; the
# ones it only prints may also be null or a string (non-finite values are written as strings).
_NUM = (int, float)
_SHOWN = (int, float, str, type(None))
RUN_SUMMARY_FIELDS: dict[str, type | tuple[type, ...]] = {
    "counts.tokens": int,
    "counts.hit_rate": _SHOWN,
    "counts.late_hits": _SHOWN,
    "counts.misses": _SHOWN,
    "latency.tpot_ms.mean": _SHOWN,
    "latency.tpot_ms.p50": _SHOWN,
    "latency.tpot_ms.p90": _SHOWN,
    "latency.tpot_ms.p99": _SHOWN,
    "latency.compute_only_tpot_ms": _SHOWN,
    "latency.stall_ms_total": _SHOWN,
    "traffic.bytes_h2d": _SHOWN,
    "traffic.bytes_demand": _NUM,
    "traffic.bytes_prefetch": _NUM,
    "traffic.bytes_prefetch_wasted": _NUM,
    "traffic.bytes_on_demand_baseline": _NUM,
    "traffic.ratio_bytes_vs_on_demand": _SHOWN,
    "prefetch.issued": _NUM,
    "prefetch.useful": _NUM,
    "prefetch.late": _NUM,
    "prefetch.wasted": _NUM,
    "prefetch.cancelled": _NUM,
    "prefetch.lead_time_ms_mean": _SHOWN,
    "prefetch.slack_ms_mean": _SHOWN,
    "cache.evictions": _SHOWN,
    "cache.churn": _SHOWN,
    "cache.refetches": _SHOWN,
}
RUN_TABLE_COLUMNS = {
    "tokens": ("batch", "tpot_ms", "stall_ms", "misses", "late_hits", "bytes_h2d"),
    "layers": (
        "layer",
        "accesses",
        "misses",
        "late_hits",
        "hit_rate",
        "stall_ms",
        "bytes_demand",
        "bytes_prefetch",
        "bytes_prefetch_wasted",
    ),
    "run_extras": ("lead_ms", "slack_ms"),
}


def check_run_summary(summary: dict[str, Any], path: Path) -> None:
    require_fields(summary, path, RUN_SUMMARY_FIELDS)
    for key in ("provenance", "provenance.scenario"):
        node: Any = summary
        for part in key.split("."):
            node = node.get(part, {}) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            fail(f"{path}: field {key!r} must be an object; re-create the result")


def check_table_columns(table: Any, path: Path, columns: tuple[str, ...]) -> None:
    """Each named column is present and numeric (what the report computes with)."""
    import pandas as pd

    for col in columns:
        if col not in table.columns:
            fail(f"{path}: column {col!r} is missing; re-create the result")
        s = table[col]
        if not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            fail(f"{path}: column {col!r} has dtype {s.dtype}, expected numbers; re-create the result")


def check_point_index(table: Any, path: Path, n_points: int) -> None:
    """A sweep table's ``point`` column holds integers in [0, n_points)."""
    import pandas as pd

    if "point" not in table.columns or not pd.api.types.is_integer_dtype(table["point"]):
        fail(f"{path}: column 'point' is missing or not integer; re-create the result")
    p = table["point"].to_numpy()
    if len(p) and (p.min() < 0 or p.max() >= n_points):
        fail(
            f"{path}: column 'point' holds {int(p.max())} but there are {n_points} points; re-create the result"
        )


def require_columns(table: Any, path: Path, columns: tuple[str, ...]) -> None:
    """Each named column is present (any type)."""
    for col in columns:
        if col not in table.columns:
            fail(f"{path}: column {col!r} is missing; re-create the result")
