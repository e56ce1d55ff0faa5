"""``LatencyProfile``: the service times the simulator's streams and links run on.

A profile is a set of ``Table``s (one per op) plus who/what it describes. ``time_ms(op, **axes)``
interpolates piecewise-linearly (bilinear on 2-D grids). Out-of-range queries either raise
(``extrapolation: error``) or extrapolate linearly from the nearest segment and leave one line per
(table, axis, direction) in ``extrapolations`` (``flag``, the default) for the run's provenance.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, cast

from moesim.errors import MoesimInputError
from moesim.hardware import _interp
from moesim.hardware.ops import EXTRAPOLATION_POLICIES, OP_AXES
from moesim.hardware.table import Table, normalise_table


class LatencyProfile:
    """Immutable tables + a per-instance record of extrapolated queries.

    Derived profiles (``with_link``, ``with_extrapolation``, ``with_tables``, ``filled_from``) are
    new objects with an empty extrapolation record.
    """

    def __init__(
        self,
        name: str,
        device: str,
        tables: Mapping[str, Table] | Iterable[Table],
        *,
        model: str | None = None,
        provenance: Mapping[str, Any] | None = None,
        extrapolation: str = "flag",
        source: str | None = None,
    ) -> None:
        where = source or f"profile {name}"
        if not isinstance(name, str) or not name:
            raise MoesimInputError(f"{where}: name must be a non-empty string")
        if extrapolation not in EXTRAPOLATION_POLICIES:
            raise MoesimInputError(
                f"{where}: extrapolation is {extrapolation!r}; use one of {', '.join(EXTRAPOLATION_POLICIES)}"
            )
        if model is not None and not isinstance(model, str):
            raise MoesimInputError(f"{where}: model must be a catalog name such as deepseek-v2-lite, or null")
        items = list(tables.values()) if isinstance(tables, Mapping) else list(tables)
        checked: dict[str, Table] = {}
        for t in items:
            if t.op in checked:
                raise MoesimInputError(f"{where}: table {t.op} appears twice; keep one")
            checked[t.op] = normalise_table(t, f"{where}: table {t.op}")
        self._name = name
        self._device = str(device)
        self._model = model
        self._provenance = dict(provenance or {})
        self._policy = extrapolation
        self._source = source
        self._tables = dict(sorted(checked.items()))
        self._record: _interp.ExtrapolationRecord = {}
        self._evals = {op: self._compile(t) for op, t in self._tables.items()}

    def _compile(self, t: Table) -> Any:
        kw = dict(
            op=t.op,
            profile=self._name,
            policy=self._policy,
            record=self._record,
            allowed=frozenset(OP_AXES.get(t.op, t.axes)),
        )
        # a table's ms nests one level per axis (Table checks it), hence the casts
        if not t.axes:
            return _interp.Const(cast(float, t.ms), **kw)
        if len(t.axes) == 1:
            return _interp.Linear1(t.grid[0], cast(Sequence[float], t.ms), axes=t.axes, **kw)
        grid = cast(tuple[Sequence[float], Sequence[float]], t.grid)
        return _interp.Bilinear2(grid, cast(Sequence[Sequence[float]], t.ms), axes=t.axes, **kw)

    # --- queries -------------------------------------------------------------------------------

    def time_ms(self, op: str, **axes: float) -> float:
        """Milliseconds of ``op`` at ``axes`` (e.g. ``time_ms("attention", batch=1, context=4096)``).

        Axes a table does not depend on are accepted and ignored; unknown axes raise.
        """
        ev = self._evals.get(op)
        if ev is None:
            raise self._missing(op)
        return ev(axes)

    def has(self, op: str) -> bool:
        return op in self._evals

    def require(self, *ops: str) -> None:
        """One error line naming the first of ``ops`` this profile has no table for."""
        for op in ops:
            if op not in self._evals:
                raise self._missing(op)

    def _missing(self, op: str) -> MoesimInputError:
        have = ", ".join(self._tables) or "none"
        where = self._source or f"profile {self._name}"
        return MoesimInputError(
            f"{where}: no table for {op} (it has: {have}); add a {op} table to the profile, or use "
            f"an estimated profile (estimated:<device>, or '<paper ref>+estimated' to fill the gaps)"
        )

    @property
    def extrapolations(self) -> list[str]:
        """One sorted line per (table, axis, direction) queried outside its grid so far."""
        out = []
        for (op, axis, direction), far in self._record.items():
            out.append(self._evals[op].describe(axis, direction, far))
        return sorted(out)

    def reset_extrapolations(self) -> None:
        self._record.clear()

    # --- attributes ----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def device(self) -> str:
        return self._device

    @property
    def model(self) -> str | None:
        return self._model

    @property
    def provenance(self) -> dict[str, Any]:
        return dict(self._provenance)

    @property
    def extrapolation(self) -> str:
        return self._policy

    @property
    def source(self) -> str | None:
        return self._source

    @property
    def tables(self) -> Mapping[str, Table]:
        return MappingProxyType(self._tables)

    def table_kinds(self) -> dict[str, str]:
        """op -> measured | paper | estimated, for a run's provenance."""
        return {op: t.kind for op, t in self._tables.items()}

    def __repr__(self) -> str:
        return (
            f"LatencyProfile(name={self._name!r}, device={self._device!r}, model={self._model!r}, "
            f"tables={list(self._tables)}, extrapolation={self._policy!r})"
        )

    # --- derived profiles ----------------------------------------------------------------------

    def _derive(
        self,
        tables: Mapping[str, Table],
        *,
        name: str | None = None,
        provenance: Mapping[str, Any] | None = None,
        extrapolation: str | None = None,
    ) -> LatencyProfile:
        return LatencyProfile(
            name or self._name,
            self._device,
            tables,
            model=self._model,
            provenance=self._provenance if provenance is None else provenance,
            extrapolation=extrapolation or self._policy,
            # A renamed built-in profile (e.g. "paper:x+estimated") is its own source in messages.
            source=name if name and self._source == self._name else self._source,
        )

    def with_extrapolation(self, policy: str) -> LatencyProfile:
        return self._derive(self._tables, extrapolation=policy)

    def with_tables(self, tables: Iterable[Table], *, name: str | None = None) -> LatencyProfile:
        """A copy with ``tables`` added or replacing same-op tables."""
        merged = dict(self._tables)
        for t in tables:
            merged[t.op] = t
        return self._derive(merged, name=name)

    def filled_from(self, other: LatencyProfile, *, name: str | None = None) -> LatencyProfile:
        """A copy with ``other``'s tables for every op this profile lacks (each keeps its provenance)."""
        merged = dict(self._tables)
        filled = sorted(op for op in other.tables if op not in merged)
        for op in filled:
            merged[op] = other.tables[op]
        prov = dict(self._provenance)
        prov["filled_from"] = {"profile": other.name, "ops": filled}
        return self._derive(merged, name=name, provenance=prov)

    def with_link(
        self,
        h2d_gbps: float | None = None,
        overhead_us: float | None = None,
        ssd_gbps: float | None = None,
        ssd_overhead_us: float | None = None,
    ) -> LatencyProfile:
        """Replace ``h2d_pinned`` / ``ssd_read`` by ``overhead + bytes / bandwidth`` (GB/s = 1e9 B/s).

        ``float('inf')`` bandwidth means zero transfer time (only the overhead is left). An overhead
        of None keeps the replaced table's fixed cost (its value extrapolated to 0 bytes), so
        changing only the bandwidth does not silently drop launch overhead; an overhead without a
        bandwidth keeps the table's bandwidth curve and replaces only its fixed cost.
        """
        from moesim.hardware.link import link_tables

        new = link_tables(self, h2d_gbps, overhead_us, ssd_gbps, ssd_overhead_us)
        if not new:
            return self._derive(self._tables)
        prov = dict(self._provenance)
        prov["link_override"] = {t.op: t.provenance["inputs"] for t in new}
        merged = dict(self._tables)
        for t in new:
            merged[t.op] = t
        return self._derive(merged, provenance=prov)

    # --- serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        from moesim.hardware.profile_io import profile_to_dict

        return profile_to_dict(self)

    def to_yaml(self) -> str:
        from moesim.hardware.profile_io import profile_to_yaml

        return profile_to_yaml(self)

    def save(self, path: str | os.PathLike) -> None:
        from moesim.io import atomic_write_text

        atomic_write_text(path, self.to_yaml())

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON form: the profile's identity in a run's input hashes."""
        from moesim.io import dumps_json

        return hashlib.sha256(dumps_json(self.to_dict()).encode("utf-8")).hexdigest()

    @classmethod
    def from_dict(cls, data: Any, source: str) -> LatencyProfile:
        from moesim.hardware.profile_io import profile_from_dict

        return profile_from_dict(data, source)

    @classmethod
    def from_yaml(cls, text: str, source: str = "<yaml>") -> LatencyProfile:
        from moesim.hardware.profile_io import profile_from_yaml

        return profile_from_yaml(text, source)


def host_tables(profile: LatencyProfile) -> list[Table]:
    """The profile's host (issue) time tables: each explicit ``host_<op>`` table, and for an op
    without one whose measured table carries the host's times in its provenance (``moesim
    profile`` on CUDA writes ``host_median_ms`` beside the GPU times), a table built from them.
    Empty for CPU-measured, paper and estimated profiles: they time one timeline only."""
    from moesim.hardware.ops import HOST_OPS, host_op

    out = []
    for op in HOST_OPS:
        name = host_op(op)
        if profile.has(name):
            out.append(profile.tables[name])
            continue
        t = profile.tables.get(op)
        host = t.provenance.get("host_median_ms") if t is not None else None
        if t is None or host is None:
            continue
        prov = {k: t.provenance.get(k) for k in ("device", "driver", "torch", "date")}
        prov.update(kind="measured", method=f"host issue time: provenance host_median_ms of table {op}")
        ms = host if t.axes else host[0] if isinstance(host, list) else host
        out.append(normalise_table(Table(name, t.axes, t.grid, ms, prov), f"profile {profile.name}: {name}"))
    return out
