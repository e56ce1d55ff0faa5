"""Declared parameters of a plug-in (``predictor.params``, ``cache.params``).

A plug-in's ``params`` class attribute maps each accepted key to its default. Declaring it as a
``ParamSchema`` adds each key's type and range, so a scenario is checked against the schema before
anything loads, with one line naming the key. ``ParamSchema`` is a ``dict`` of defaults, so code that
reads ``cls.params[key]`` keeps working; a plain dict (e.g. from a third-party plug-in) still works,
each key's type then inferred from its default (None or a container: any value).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from moesim.errors import fail


@dataclass(frozen=True)
class Param:
    """One parameter: its default, kind (int, float, bool, str or any), range and choices."""

    default: Any
    kind: str = "any"
    lo: float | None = None
    hi: float | None = None
    choices: tuple[Any, ...] | None = None
    optional: bool = False  # None is accepted (besides the default being None)
    doc: str = ""

    def describe(self) -> str:
        text = self.kind
        if self.choices:
            text = " | ".join(map(str, self.choices))
        elif self.lo is not None or self.hi is not None:
            lo = "" if self.lo is None else f"{self.lo} <= "
            hi = "" if self.hi is None else f" <= {self.hi}"
            text = f"{lo}{self.kind}{hi}"
        return f"{text} (default {self.default!r})"


class ParamSchema(dict):
    """Defaults by key (a plain dict to readers) plus each key's ``Param`` in ``specs``."""

    def __init__(self, specs: Mapping[str, Param] | None = None, **kw: Param):
        merged = {**(specs or {}), **kw}
        super().__init__({k: p.default for k, p in merged.items()})
        self.specs: dict[str, Param] = merged

    def __or__(self, other: Mapping[str, Any]) -> ParamSchema:  # type: ignore[override]
        return ParamSchema({**specs_of(self), **specs_of(other)})

    def __ror__(self, other: Mapping[str, Any]) -> ParamSchema:  # type: ignore[override]
        return ParamSchema({**specs_of(other), **specs_of(self)})


def infer(default: Any) -> Param:
    """The ``Param`` a plain default implies."""
    if isinstance(default, bool):
        return Param(default, "bool")
    if isinstance(default, int):
        return Param(default, "int")
    if isinstance(default, float):
        return Param(default, "float")
    if isinstance(default, str):
        return Param(default, "str")
    return Param(default, "any")


def specs_of(params: Mapping[str, Any]) -> dict[str, Param]:
    declared = getattr(params, "specs", {})
    return {k: declared.get(k) or infer(v) for k, v in params.items()}


def _kind_error(kind: str, value: Any) -> str | None:
    if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        return "an integer"
    if kind == "float" and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return "a number"
    if kind == "bool" and not isinstance(value, bool):
        return "true or false"
    if kind == "str" and not isinstance(value, str):
        return "a string"
    return None


def check_value(key: str, owner: str, spec: Param, value: Any) -> Any:
    """``value`` checked against ``spec`` (ints stay ints, numbers become floats); one line on error."""
    if value is None and (spec.optional or spec.default is None):
        return None
    want = _kind_error(spec.kind, value)
    if want:
        fail(f"{key}: {owner} needs {want}, got {value!r}")
    if spec.choices is not None and value not in spec.choices:
        fail(f"{key}: {owner} takes one of {', '.join(map(str, spec.choices))}; got {value!r}")
    if spec.kind in ("int", "float"):
        if isinstance(value, float) and math.isnan(value):
            fail(f"{key}: {owner} needs a number, got nan")
        if (spec.lo is not None and value < spec.lo) or (spec.hi is not None and value > spec.hi):
            rng = " and ".join(
                t
                for t in (spec.lo is not None and f">= {spec.lo}", spec.hi is not None and f"<= {spec.hi}")
                if t
            )
            fail(f"{key}: {owner} needs {key.rsplit('.', 1)[-1]} {rng}, got {value!r}")
        if spec.kind == "float":
            return float(value)
    return value


def check_params(prefix: str, owner: str, params: Mapping[str, Any], given: Any) -> dict[str, Any]:
    """``given`` (a scenario's ``*.params``) checked against the plug-in's declared ``params``."""
    if not isinstance(given, Mapping):
        fail(f"{prefix}: must be a mapping of parameter: value, got {given!r}")
    specs = specs_of(params)
    out = {}
    for key, value in given.items():
        if key not in specs:
            fail(
                f"{prefix}: {owner} takes no parameter {key!r}; it takes: {', '.join(sorted(specs)) or 'none'}"
            )
        out[key] = check_value(f"{prefix}.{key}", owner, specs[key], value)
    return out


def describe(params: Mapping[str, Any]) -> list[str]:
    """``key: kind (default ...)`` lines, for ``moesim list`` and the docs."""
    return [f"{k}: {p.describe()}" for k, p in sorted(specs_of(params).items())]
