"""Profile <-> plain dict <-> YAML (safe loader only: no pickles, no Python tags)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml

from moesim.errors import MoesimInputError
from moesim.hardware.profile import LatencyProfile
from moesim.hardware.table import Table

FORMAT = "moesim-latency-profile"
VERSION = 1
_TOP_KEYS = {"format", "version", "name", "device", "model", "extrapolation", "provenance", "tables"}
_TABLE_KEYS = {"axes", "grid", "ms", "provenance"}


def _plain(x: Any) -> Any:
    """Tuples -> lists, non-finite floats -> strings, so YAML and canonical JSON both accept it."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x


def profile_to_dict(p: LatencyProfile) -> dict[str, Any]:
    tables = {}
    for op, t in p.tables.items():
        tables[op] = {
            "axes": list(t.axes),
            "grid": {a: list(g) for a, g in zip(t.axes, t.grid)},
            "ms": _plain(t.ms),
            "provenance": _plain(t.provenance),
        }
    return {
        "format": FORMAT,
        "version": VERSION,
        "name": p.name,
        "device": p.device,
        "model": p.model,
        "extrapolation": p.extrapolation,
        "provenance": _plain(p.provenance),
        "tables": tables,
    }


def profile_to_yaml(p: LatencyProfile) -> str:
    return yaml.safe_dump(profile_to_dict(p), sort_keys=False, default_flow_style=None, width=100)


def profile_from_dict(data: Any, source: str) -> LatencyProfile:
    if not isinstance(data, dict):
        raise MoesimInputError(f"{source}: a latency profile must be a YAML mapping (see docs/profiles.md)")
    if data.get("format") != FORMAT:
        raise MoesimInputError(f"{source}: format must be '{FORMAT}' (got {data.get('format')!r})")
    if data.get("version") != VERSION:
        raise MoesimInputError(
            f"{source}: version {data.get('version')!r} is not supported; this moesim reads version {VERSION}"
        )
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise MoesimInputError(
            f"{source}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(_TOP_KEYS))}"
        )
    for key in ("name", "device"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise MoesimInputError(f"{source}: {key} must be a non-empty string")
    for key in ("model", "extrapolation"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise MoesimInputError(f"{source}: {key} must be a string, got {type(data[key]).__name__}")
    raw_tables = data.get("tables")
    if not isinstance(raw_tables, dict) or not raw_tables:
        raise MoesimInputError(f"{source}: tables must be a mapping of op name -> table")
    tables = []
    for op, raw in raw_tables.items():
        where = f"{source}: table {op}"
        if not isinstance(raw, dict):
            raise MoesimInputError(f"{where}: must be a mapping with axes, grid, ms, provenance")
        bad = sorted(set(raw) - _TABLE_KEYS)
        if bad:
            raise MoesimInputError(
                f"{where}: unknown key {bad[0]!r}; allowed: {', '.join(sorted(_TABLE_KEYS))}"
            )
        missing = sorted(k for k in _TABLE_KEYS if k not in raw)
        if missing:
            raise MoesimInputError(f"{where}: missing {missing[0]!r}")
        axes = raw["axes"] or []
        grid_map = raw["grid"] or {}
        if not isinstance(axes, list) or not isinstance(grid_map, dict):
            raise MoesimInputError(f"{where}: axes must be a list and grid a mapping axis -> points")
        if not all(isinstance(a, str) for a in [*axes, *grid_map]):
            raise MoesimInputError(f"{where}: axis names must be strings, got axes {axes!r}")
        if sorted(grid_map) != sorted(axes):
            raise MoesimInputError(f"{where}: grid has axes {sorted(grid_map)} but axes lists {axes}")
        grid = tuple(grid_map[a] for a in axes)
        tables.append(
            Table(op=str(op), axes=tuple(axes), grid=grid, ms=raw["ms"], provenance=raw["provenance"])
        )
    prov = data.get("provenance") or {}
    if not isinstance(prov, dict):
        raise MoesimInputError(f"{source}: provenance must be a mapping")
    return LatencyProfile(
        data["name"],
        data["device"],
        tables,
        model=data.get("model"),
        provenance=prov,
        extrapolation=data.get("extrapolation", "flag"),
        source=source,
    )


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and aliases (a profile's provenance is copied into
    every result, so an alias would be expanded there) and reads ``1e3`` / ``.inf`` as numbers."""

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None, None, f"alias *{event.anchor} is not allowed; write the value out", event.start_mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (list, dict)):
                continue  # the base class reports unhashable keys
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}; each key may appear once", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def strict_yaml_load(text: str, source: str) -> Any:
    """Parse YAML strictly (see ``_StrictLoader``); every failure is one line naming ``source``."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise MoesimInputError(f"{source}: not valid YAML{at}: {problem}") from None
    except RecursionError:
        raise MoesimInputError(f"{source}: YAML nested too deeply; flatten it") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise MoesimInputError(f"{source}: bad YAML value ({str(exc)[:100]})") from None


def profile_from_yaml(text: str, source: str = "<yaml>") -> LatencyProfile:
    return profile_from_dict(strict_yaml_load(text, source), source)


def read_profile(path: str | Path) -> LatencyProfile:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise MoesimInputError(
            f"{path}: not UTF-8 text (byte {exc.start}); is this a latency profile?"
        ) from None
    except OSError as exc:
        raise MoesimInputError(f"{path}: cannot read latency profile ({exc.strerror})") from None
    return profile_from_yaml(text, str(path))
