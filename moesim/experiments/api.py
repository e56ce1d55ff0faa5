"""The Python API, mirroring the command line.

    import moesim
    r = moesim.run(cache__capacity=128, predictor__name="oracle")     # -> RunResult
    r = moesim.run("scenarios/default.yaml", {"predictor.params.accuracy": 0.9})
    df = moesim.sweep(None, {"cache.capacity": [128, 256], "predictor.horizon": [1, 2]})  # -> DataFrame

Overrides are dotted scenario keys, given as a dict or as keyword arguments with ``__`` for the dots.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from moesim.metrics.result import RunResult


def run(
    scenario: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    out: str | Path | None = None,
    timeline: bool = False,
    **kwargs: Any,
) -> RunResult:
    """One simulated run (``moesim run``). ``out`` also writes the run directory; ``timeline`` fills
    ``RunResult.timeline`` for ``moesim.reports.timeline``."""
    from moesim.experiments.overrides import normalise, resolve_scenario
    from moesim.experiments.pipeline import run_scenario

    sc = resolve_scenario(scenario, None, normalise(overrides, **kwargs))
    result = run_scenario(sc, timeline=timeline)
    if out is not None:
        result.write(out)
    return result


def sweep(
    scenario: str | Path | None,
    grid: Mapping[str, Sequence[Any]],
    backend: str = "local",
    jobs: int | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    ray_address: str | None = None,
) -> pd.DataFrame:
    """Run ``scenario`` at every combination of ``grid`` (dotted key -> values); the results table
    (one row per point, sorted by point index). With ``out`` the sweep directory is kept (and can be
    resumed); without it the work happens in a temporary directory."""
    from moesim.experiments.overrides import normalise, value_text
    from moesim.experiments.sweep import SweepPlan, run_sweep

    base = [f"{k}={value_text(v)}" for k, v in normalise(overrides).items()]
    plan = SweepPlan.from_grid(scenario, {k.replace("__", "."): list(v) for k, v in grid.items()}, base)
    if out is not None:
        return run_sweep(plan, out, backend=backend, jobs=jobs, resume=resume, ray_address=ray_address).table
    with tempfile.TemporaryDirectory(prefix="moesim-sweep-") as tmp:
        return run_sweep(plan, Path(tmp) / "sweep", backend=backend, jobs=jobs, ray_address=ray_address).table


def compare(
    scenario: str | Path | None,
    predictors: Sequence[str],
    caches: Sequence[str],
    capacities: Sequence[int] | None = None,
    *,
    out: str | Path,
    overrides: Mapping[str, Any] | None = None,
    bounds: bool = True,
    backend: str = "local",
    jobs: int | None = None,
) -> pd.DataFrame:
    """``moesim compare``: the comparison table (and ``out/comparison.html``)."""
    from moesim.experiments.compare import CompareSpec, run_compare
    from moesim.experiments.overrides import normalise, value_text
    from moesim.reports.compare_report import build_compare_report

    base = [f"{k}={value_text(v)}" for k, v in normalise(overrides).items()]
    spec = CompareSpec(list(predictors), list(caches), list(capacities) if capacities else None, bounds)
    _, comp = run_compare(scenario, spec, out, base, backend=backend, jobs=jobs)
    build_compare_report(comp, Path(out), f"scenario {scenario or 'default'}")
    return comp
