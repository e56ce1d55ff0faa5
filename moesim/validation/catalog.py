"""The published-measurement catalog: ``moesim/validation/published/*.yaml`` as dataclasses.

Each file holds ``sources`` (a paper or repository, where in it, its common setup) and ``cases``
(one published figure each: the setup it was measured under, the figure with its unit, and the
scenario keys that reproduce the setup in moesim, or ``mapped: false`` with the reason). The loader
checks every field so a typo in the data fails loudly, naming the file and the case.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from moesim.errors import MoesimInputError

PACKAGE_DIR = "published"
FORMAT = "moesim-published"
# Units a decode figure may be published in, and the factor to ms per output token (TPOT).
UNITS = {"tokens/s": None, "ms/token": 1.0, "s/token": 1000.0}


@dataclass(frozen=True)
class PublishedSource:
    key: str
    title: str
    authors: str
    year: int
    url: str
    where: str
    setup: str
    code: str = ""
    # The runtime preset (``runtime.preset``) of the framework the source measured with: one per
    # source, never per row (docs/validation.md, "Presets").
    runtime_preset: str = ""
    mapping_notes: str = ""  # how the setup was checked and mapped, and what could not be
    read_via: str = ""
    not_stated_in_what_was_read: str = ""


@dataclass(frozen=True)
class CaseSetup:
    """The setup as the source states it; ``null`` (None) where the source does not say (every
    field must still be given, so "not stated" is a decision, not an omission)."""

    gpu: str
    host: str
    model: str
    attention_bits: int | None
    expert_bits: int | None
    cache_per_layer: int | None  # None: not a per-layer cache, or not stated
    lru_cache: bool
    speculative_prefetch: bool
    pcie_gen: int | None
    pcie_lanes: int | None
    batch: int


@dataclass(frozen=True)
class PublishedFigure:
    value: float
    unit: str

    @property
    def tpot_ms(self) -> float:
        """Milliseconds per output token."""
        factor = UNITS[self.unit]
        return 1000.0 / self.value if factor is None else self.value * factor


@dataclass(frozen=True)
class PublishedCase:
    id: str
    source: str
    table: str
    row: str
    column: str
    setup: CaseSetup
    published: PublishedFigure
    mapped: bool
    scenario: dict[str, Any] = field(default_factory=dict)
    unmapped_reason: str = ""
    note: str = ""
    file: str = ""


_SCALARS = {
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "int | None": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
}


def _fields(cls: type, raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise MoesimInputError(f"{where} must be a mapping")
    allowed = {f.name for f in fields(cls)} - {"key", "file"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise MoesimInputError(
            f"{where}: unknown field {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}"
        )
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    missing = sorted(required - set(raw) - {"key", "file"})
    if missing:
        raise MoesimInputError(f"{where}: missing field {missing[0]!r}")
    for f in fields(cls):
        if f.name in raw and f.type in _SCALARS and not _SCALARS[f.type](raw[f.name]):
            raise MoesimInputError(f"{where}.{f.name} must be of type {f.type} (got {raw[f.name]!r})")
    return dict(raw)


def _figure(raw: Any, where: str) -> PublishedFigure:
    kw = _fields(PublishedFigure, raw, f"{where}.published")
    v, unit = kw["value"], kw["unit"]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise MoesimInputError(f"{where}.published.value must be a positive number (got {v!r})")
    if unit not in UNITS:
        raise MoesimInputError(f"{where}.published.unit must be one of {', '.join(UNITS)} (got {unit!r})")
    return PublishedFigure(float(v), unit)


def _case(raw: Any, where: str, sources: dict[str, PublishedSource], file: str) -> PublishedCase:
    kw = _fields(PublishedCase, raw, where)
    where = f"{where} ({kw['id']})"
    if kw["source"] not in sources:
        raise MoesimInputError(f"{where}: source {kw['source']!r} is not under sources")
    kw["setup"] = CaseSetup(**_fields(CaseSetup, kw["setup"], f"{where}.setup"))
    kw["published"] = _figure(kw["published"], where)
    if not isinstance(kw["mapped"], bool):
        raise MoesimInputError(f"{where}.mapped must be true or false")
    if kw["mapped"] and not kw.get("scenario"):
        raise MoesimInputError(f"{where}: a mapped case needs scenario keys")
    if not kw["mapped"] and not kw.get("unmapped_reason"):
        raise MoesimInputError(f"{where}: an unmapped case needs unmapped_reason")
    return PublishedCase(**kw, file=file)


def parse_catalog(text: str, file: str) -> tuple[dict[str, PublishedSource], list[PublishedCase]]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:  # a malformed catalog file: one line naming it
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        raise MoesimInputError(f"{file}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise MoesimInputError(f"{file}: not a published-measurement catalog (format: {FORMAT})")
    sources = {
        k: PublishedSource(key=k, **_fields(PublishedSource, v, f"{file}: sources.{k}"))
        for k, v in (data.get("sources") or {}).items()
    }
    cases = [_case(c, f"{file}: cases[{i}]", sources, file) for i, c in enumerate(data.get("cases") or [])]
    ids = [c.id for c in cases]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise MoesimInputError(f"{file}: case id {dup[0]!r} appears twice")
    return sources, cases


def load_catalog(path: str | Path | None = None) -> tuple[dict[str, PublishedSource], list[PublishedCase]]:
    """Every source and case of the built-in catalog (or of one YAML file at ``path``)."""
    if path is not None:
        p = Path(path)
        return parse_catalog(p.read_text(encoding="utf-8"), str(p))
    sources: dict[str, PublishedSource] = {}
    cases: list[PublishedCase] = []
    root = resources.files("moesim.validation").joinpath(PACKAGE_DIR)
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yaml"):
            continue
        s, c = parse_catalog(
            entry.read_text(encoding="utf-8"), f"moesim/validation/{PACKAGE_DIR}/{entry.name}"
        )
        sources.update(s)
        cases.extend(c)
    return sources, cases
