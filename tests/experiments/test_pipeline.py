"""The one run pipeline: every entry point gives the same result, caches belong to their caller,
sweep workers resolve paths without changing directory, and a written run reads back whole."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moesim.errors import MoesimInputError
from moesim.experiments import pipeline
from moesim.experiments.cache import PROCESS_CACHE, RunCache
from moesim.experiments.overrides import resolve_scenario
from moesim.experiments.run import provenance, run_prepared, run_scenario
from moesim.experiments.sweep import SweepPlan, run_point
from moesim.hardware.costs import CostModel
from moesim.io import dumps_json
from moesim.metrics.result import RunResult
from moesim.traces.native import save_trace
from tests.helpers import random_trace

L, E, K = 16, 64, 8  # olmoe-1b-7b's shape


def _scenario(path, **over):
    base = {"model.name": "olmoe-1b-7b", "trace.path": str(path), "hardware.profile": "estimated:h100-pcie"}
    return resolve_scenario(None, None, {**base, **over})


@pytest.fixture
def trace_path(tmp_path):
    path = tmp_path / "t.moetrace"
    save_trace(random_trace(np.random.default_rng(5), 3, 7, L, E, K), path)
    return path


def test_entry_points_agree_byte_for_byte(trace_path):
    sc = {"predictor.name": "oracle", "cache.capacity": 96}
    old = run_scenario(_scenario(trace_path, **sc))
    new = pipeline.run_scenario(_scenario(trace_path, **sc), RunCache())
    again = run_prepared(pipeline.load(_scenario(trace_path, **sc), RunCache()))
    assert dumps_json(old.summary) == dumps_json(new.summary) == dumps_json(again.summary)
    pd.testing.assert_frame_equal(old.tokens, new.tokens)
    pd.testing.assert_frame_equal(old.layers, new.layers)
    assert new.summary["traffic"]["bytes_on_demand_baseline"] > 0


def test_a_run_uses_its_callers_cache_only(trace_path):
    mine, other = RunCache(), RunCache()
    p = pipeline.load(_scenario(trace_path, **{"predictor.name": "oracle", "cache.capacity": 96}), mine)
    assert p.cache is mine and len(mine.traces) == 1 and not other.traces
    assert pipeline.load(_scenario(trace_path), mine).trace is p.trace  # reused within the cache
    assert pipeline.load(_scenario(trace_path), other).trace is not p.trace  # never across caches
    before = dict(PROCESS_CACHE.baselines)
    pipeline.simulate(p)
    assert len(mine.baselines) == 1 and PROCESS_CACHE.baselines == before


def test_own_baseline_equals_the_replayed_one(trace_path):
    """A run whose predictor never predicts is its own baseline: equal to the replayed baseline."""
    none = pipeline.run_scenario(_scenario(trace_path, **{"predictor.name": "none"}), RunCache())
    p = pipeline.load(_scenario(trace_path, **{"predictor.name": "oracle"}), RunCache())
    prov = provenance(p, "sim", "x")
    assert pipeline.on_demand_misses(p, prov) == none.summary["counts"]["misses"]


def test_calibration_simulation_is_the_pipeline_with_static_batches(trace_path):
    from moesim.experiments.calibrate import simulate

    p = pipeline.load(_scenario(trace_path, **{"predictor.name": "oracle"}), RunCache())
    costs = CostModel(p.profile, p.model, 1, loop_overhead=False)
    a = simulate(p, costs)
    b = pipeline.simulate(p, costs=costs, executor_name="sim (op tables only)", record=True)
    assert dumps_json(a.summary) == dumps_json(b.summary) and a.decisions == b.decisions
    assert a.summary["provenance"]["executor"] == "sim (op tables only)"


def test_sweep_point_resolves_paths_from_the_sweeps_directory(trace_path, tmp_path, monkeypatch):
    """A worker in another directory (a Ray node) finds relative override paths and writes its
    run directory where the sweep's caller meant, without changing its own directory."""
    start = tmp_path / "start"
    start.mkdir()
    (shutil.copytree if trace_path.is_dir() else shutil.copy)(trace_path, start / "rel.moetrace")
    monkeypatch.chdir(start)
    plan = SweepPlan.from_points(None, [{"trace.path": "rel.moetrace", "model.name": "olmoe-1b-7b"}])
    task = plan.task(0, Path("runs") / "00000", Path("baselines"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    rec = run_point(task, RunCache())
    assert rec["status"] == "ok", rec["error"]
    assert Path.cwd() == elsewhere
    assert (start / "runs" / "00000" / "summary.json").is_file() and any((start / "baselines").iterdir())
    assert rec["summary"]["provenance"]["scenario"]["trace"]["path"] == "rel.moetrace"
    assert not (elsewhere / "runs").exists()


def test_run_result_reads_back_what_it_wrote(trace_path, tmp_path):
    res = pipeline.run_scenario(_scenario(trace_path, **{"predictor.name": "oracle"}), RunCache())
    res.write(tmp_path / "run")
    back = RunResult.read(tmp_path / "run")
    assert dumps_json(back.summary) == (tmp_path / "run" / "summary.json").read_text(encoding="utf-8")
    pd.testing.assert_frame_equal(back.tokens, res.tokens)
    pd.testing.assert_frame_equal(back.layers, res.layers)
    pd.testing.assert_frame_equal(back.extras, res.extras)
    assert back.wallclock == json.loads((tmp_path / "run" / "wallclock.json").read_text())
    (tmp_path / "run" / "tokens.parquet").unlink()  # the CSV serves when the parquet is gone
    assert len(RunResult.read(tmp_path / "run").tokens) == len(res.tokens)


def test_run_result_read_errors_name_the_file(trace_path, tmp_path):
    with pytest.raises(MoesimInputError, match="no summary.json"):
        RunResult.read(tmp_path)
    (tmp_path / "summary.json").write_text("{nope", encoding="utf-8")
    with pytest.raises(MoesimInputError, match="summary.json: line 1: invalid JSON"):
        RunResult.read(tmp_path)
    (tmp_path / "summary.json").write_text("{}", encoding="utf-8")
    with pytest.raises(MoesimInputError, match="summary.json: field 'counts.tokens' is missing"):
        RunResult.read(tmp_path)
    run = tmp_path / "run"
    pipeline.run_scenario(_scenario(trace_path), RunCache()).write(run)
    for name in ("tokens.parquet", "tokens.csv"):
        (run / name).unlink()
    with pytest.raises(MoesimInputError, match="tokens and layers tables"):
        RunResult.read(run)
