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
