"""The one dotted-override parser, shared by ``moesim run --set``, ``moesim sweep --set/--grid`` and
the Python API.

An override is a dotted key and a value: ``--set`` text is ``key=value`` with the value read as
strict YAML (``moesim.yamlio``: ``1e3`` and ``.inf`` are numbers), the API and sweep workers hold
real Python values. Keys are ``name`` (top level), ``section.name`` or deeper into a mapping-valued
key, e.g. ``predictor.params.accuracy``. Overrides are merged into the raw scenario mapping before
it is built and validated, so every value takes the same checks whichever way it came in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from moesim.errors import fail
from moesim.yamlio import scalar

if TYPE_CHECKING:
    from moesim.experiments.scenario import Scenario


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` text into ``(key, value)``; the value is strict YAML flow text."""
    if "=" not in text:
        fail(f"--set {text!r}: expected key=value, e.g. --set cache.capacity=128")
    key, _, value = text.partition("=")
    key = key.strip()
    return key, scalar(value, f"--set {key}")


def value_text(value: Any) -> str:
    """YAML flow text that ``parse_override`` reads back as ``value`` (strings stay strings)."""
    if isinstance(value, str):
        # A string that YAML would read as something else ("1e3", "true", "null") is quoted.
        try:
            if scalar(value, "") == value:
                return value
        except Exception:  # noqa: BLE001 - any parse problem means: quote it
            pass
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=True, width=1 << 30)
    # A scalar document ends with an explicit "..." end marker line; drop it.
    return "\n".join(line for line in text.splitlines() if line.strip() != "...").strip()


def _defaults() -> dict[str, Any]:
    from moesim.experiments.scenario import Scenario

    out = {}
    for f in fields(Scenario):
        if f.metadata.get("internal"):
            continue
        out[f.name] = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
    return out


def check_key(key: str, origin: str = "--grid") -> None:
    """Fail with one line when ``key`` names no scenario key (before any point runs)."""
    parts = key.split(".")
    if not all(parts):
        fail(f"{origin} {key!r}: keys are dotted names such as cache.capacity")
    top = _defaults()
    if parts[0] not in top:
        fail(f"{origin} {key}: unknown key {parts[0]!r}; valid: {', '.join(top)}")
    node = top[parts[0]]
    if len(parts) == 1:
        return
    if not is_dataclass(node):
        fail(f"{origin} {key}: {parts[0]} has no sub-keys")
    names = [f.name for f in fields(node)]
    if parts[1] not in names:
        fail(f"{origin} {key}: unknown key; valid keys under {parts[0]}: {', '.join(names)}")
    if len(parts) > 2 and not isinstance(getattr(node, parts[1]), dict):
        fail(f"{origin} {key}: {parts[0]}.{parts[1]} is not a mapping, so it has no sub-keys")


def _copy(raw: Any) -> Any:
    return {k: _copy(v) for k, v in raw.items()} if isinstance(raw, dict) else raw


def apply_overrides(raw: Mapping[str, Any], pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """A copy of the raw scenario mapping with each ``(dotted key, value)`` set in order."""
    out: dict[str, Any] = _copy(dict(raw))
    for key, value in pairs:
        check_key(key, "--set")
        parts = key.split(".")
        node = out
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node.get(part), dict):
                if node.get(part) is not None and i > 0:
                    fail(f"--set {key}: {'.'.join(parts[: i + 1])} is not a mapping, so it has no sub-keys")
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return out


def normalise(overrides: Mapping[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    """Merge a dict of dotted keys and ``section__name`` keyword arguments into dotted keys."""
    out: dict[str, Any] = dict(overrides or {})
    for k, v in kwargs.items():
        out[k.replace("__", ".")] = v
    return out


def resolve_scenario(
    scenario: str | Path | None, base: list[str] | None = None, overrides: Mapping[str, Any] | None = None
) -> Scenario:
    """The scenario with ``--set`` texts ``base`` and then the valued ``overrides`` applied (later
    keys win), validated."""
    from moesim.experiments.scenario import load_scenario

    return load_scenario(scenario, base, overrides)
