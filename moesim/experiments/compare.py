"""Policy comparison: predictors x caches x capacities on one scenario, plus the bounds.

Every run uses the same scenario (trace, model, hardware profile), so the only differences are the
policies; ``comparison_table`` checks that the trace and profile hashes agree across rows. The runs
go through the sweep machinery (parallel, resumable, one table).

Bounds, added unless ``bounds=False``:

- ``belady``: no prefetching with the Belady (OPT) cache: the best hit rate any demand-only cache
  can reach at that capacity;
- ``oracle``: the oracle predictor (the true experts, same horizon) with each compared cache: what
  perfect prediction would give that cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from moesim.errors import fail
from moesim.experiments.sweep import SweepOutcome, SweepPlan, run_sweep
from moesim.io import atomic_write_json
from moesim.metrics.comparison import (  # noqa: F401  (re-exported for callers)
    CACHE,
    CAP,
    PRED,
    ROLE,
    check_identical_inputs,
    comparison_table,
)


@dataclass
class CompareSpec:
    predictors: list[str]
    caches: list[str]
    capacities: list[int] | None = None  # None: the scenario's own capacity
    bounds: bool = True

    def __post_init__(self) -> None:
        if not self.predictors:
            fail("--predictors: give at least one predictor, e.g. --predictors none,oracle,popularity")
        if not self.caches:
            fail("--caches: give at least one cache policy, e.g. --caches lru,lfu")
        for name, vals in (("--predictors", self.predictors), ("--caches", self.caches)):
            if len(set(vals)) != len(vals):
                fail(f"{name}: a name is given twice")
        if self.capacities is not None:
            if not self.capacities:
                fail("--capacities: give at least one capacity")
            if any(not isinstance(c, int) or isinstance(c, bool) or c < 1 for c in self.capacities):
                fail(f"--capacities: expert slots must be positive integers, got {self.capacities}")

    def points(self) -> tuple[list[dict[str, Any]], list[str]]:
        """The points (dotted overrides) and each point's role: policy, bound:belady, bound:oracle."""
        import moesim.policies.caches
        import moesim.policies.predictors  # noqa: F401  (the plug-ins register on import)
        from moesim.policies.registries import CACHES, PREDICTORS

        for p in self.predictors:
            PREDICTORS.get(p)
        for c in self.caches:
            CACHES.get(c)
        caps: list[Any] = list(self.capacities) if self.capacities else [None]
        combos: list[tuple[str, str, str]] = [(p, c, "policy") for p in self.predictors for c in self.caches]
        if self.bounds:
            have = {(p, c) for p, c, _ in combos}
            if ("none", "belady") not in have:
                combos.append(("none", "belady", "bound:belady"))
            for c in self.caches:
                if ("oracle", c) not in have:
                    combos.append(("oracle", c, "bound:oracle"))
        points, roles = [], []
        for p, c, role in combos:
            for cap in caps:
                pt: dict[str, Any] = {PRED: p, CACHE: c}
                if cap is not None:
                    pt[CAP] = cap
                points.append(pt)
                roles.append(role)
        return points, roles


def run_compare(
    scenario: str | Path | None,
    spec: CompareSpec,
    out: str | Path,
    base: Sequence[str] = (),
    **sweep_kwargs: Any,
) -> tuple[SweepOutcome, pd.DataFrame]:
    """Run the comparison into ``out``; returns the sweep outcome and the comparison table."""
    points, roles = spec.points()
    keys = [PRED, CACHE] + ([CAP] if spec.capacities else [])
    plan = SweepPlan.from_points(scenario, points, keys, base)
    out = Path(out)
    outcome = run_sweep(plan, out, **sweep_kwargs)
    write_meta(out, spec, roles)
    return outcome, comparison_table(outcome.table, roles)


def write_meta(out: Path, spec: CompareSpec, roles: Sequence[str]) -> None:
    """``compare.json``: what the comparison asked for and each point's role (for ``moesim report``)."""
    atomic_write_json(
        Path(out) / "compare.json",
        {
            "predictors": spec.predictors,
            "caches": spec.caches,
            "capacities": spec.capacities,
            "bounds": spec.bounds,
            "roles": list(roles),
        },
    )
