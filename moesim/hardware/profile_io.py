"""Profile <-> plain dict <-> YAML (safe loader only: no pickles, no Python tags)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from moesim.errors import MoesimInputError
from moesim.hardware.profile import LatencyProfile
from moesim.hardware.table import Table
from moesim.yamlio import loads

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


def _check_header(data: Any, source: str) -> None:
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


def _table(op: Any, raw: Any, source: str) -> Table:
    where = f"{source}: table {op}"
    if not isinstance(raw, dict):
        raise MoesimInputError(f"{where}: must be a mapping with axes, grid, ms, provenance")
    bad = sorted(set(raw) - _TABLE_KEYS)
    if bad:
        raise MoesimInputError(f"{where}: unknown key {bad[0]!r}; allowed: {', '.join(sorted(_TABLE_KEYS))}")
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
    return Table(op=str(op), axes=tuple(axes), grid=grid, ms=raw["ms"], provenance=raw["provenance"])


def profile_from_dict(data: Any, source: str) -> LatencyProfile:
    _check_header(data, source)
    raw_tables = data.get("tables")
    if not isinstance(raw_tables, dict) or not raw_tables:
        raise MoesimInputError(f"{source}: tables must be a mapping of op name -> table")
    tables = [_table(op, raw, source) for op, raw in raw_tables.items()]
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


def profile_from_yaml(text: str, source: str = "<yaml>") -> LatencyProfile:
    return profile_from_dict(loads(text, source), source)


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
