"""Sweeps: grid parsing, deterministic tables, failure isolation, resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from moesim.cli.main import main
from moesim.errors import MoesimInputError
from moesim.experiments.sweep import (
    SweepPlan,
    expand_grid,
    load_records,
    parse_grid,
    point_path,
    resolve_metric,
    run_sweep,
    shared_runs,
)


def test_parse_grid_values_are_yaml_and_lists_may_hold_commas():
    grid = parse_grid(
        ["cache.capacity=64,128", "predictor.name=oracle,none", "predictor.params=[{a: 1, b: 2}, {}]"]
    )
    assert grid == {
        "cache.capacity": [64, 128],
        "predictor.name": ["oracle", "none"],
        "predictor.params": [{"a": 1, "b": 2}, {}],
    }
    for bad in ("cache.capacity", "cache.capacity=64,,128", "cache.capacity="):
        with pytest.raises(MoesimInputError):
            parse_grid([bad])
    with pytest.raises(MoesimInputError, match="given twice"):
        parse_grid(["batch=1", "batch=2"])


def test_expand_grid_last_key_fastest():
    pts = expand_grid({"a": [1, 2], "b": ["x", "y", "z"]})
    assert pts[:4] == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 1, "b": "z"}, {"a": 2, "b": "x"}]
    assert len(pts) == 6


def test_unknown_key_fails_before_running(tiny_scenario, tmp_path):
    with pytest.raises(MoesimInputError, match="cache.capacityy"):
        SweepPlan.from_grid(tiny_scenario, {"cache.capacityy": [1]})
    with pytest.raises(MoesimInputError, match="not a mapping"):
        SweepPlan.from_grid(tiny_scenario, {"cache.capacity.x": [1]})
    assert not (tmp_path / "out").exists()


GRID = {"cache.capacity": [64, 256], "predictor.name": ["none", "oracle"], "predictor.horizon": [1, 2]}


def test_table_is_identical_across_worker_counts(tiny_scenario, tmp_path):
    plan = SweepPlan.from_grid(tiny_scenario, GRID)
    a = run_sweep(plan, tmp_path / "a", jobs=1)
    b = run_sweep(plan, tmp_path / "b", jobs=2)
    assert a.ok and b.ok and len(a.table) == 8
    for name in ("results.csv", "results.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    t = a.table
    assert list(t["point"]) == list(range(8))
    assert list(t["param.cache.capacity"]) == [64] * 4 + [256] * 4
    # every summary field is flattened, and the resolved parameters are there
    for col in (
        "counts.hit_rate",
        "latency.tpot_ms.p99",
        "traffic.bytes_h2d",
        "prefetch.useful",
        "cache.churn",
    ):
        assert col in t.columns
    assert (t["provenance.scenario.cache.capacity"] == t["param.cache.capacity"]).all()
    assert t["provenance.scenario.trace.max_sequences"].eq(1).all()
    # a point equals the same run made directly
    import moesim

    r = moesim.run(tiny_scenario, {"cache.capacity": 256, "predictor.name": "oracle", "predictor.horizon": 2})
    row = t[
        (t["param.cache.capacity"] == 256)
        & (t["param.predictor.name"] == "oracle")
        & (t["param.predictor.horizon"] == 2)
    ]
    assert row["counts.hits"].item() == r.summary["counts"]["hits"]
    assert row["latency.tpot_ms.mean"].item() == r.summary["latency"]["tpot_ms"]["mean"]
    assert resolve_metric(t, "hit_rate") == "counts.hit_rate"


def test_points_with_the_same_run_run_once_and_match_running_each(tiny_scenario, tmp_path):
    """ "none" never predicts, so its horizons are one run: simulated once, recorded for each point
    with its own scenario, and the table equals the one from running every point (keep_runs)."""
    plan = SweepPlan.from_grid(tiny_scenario, GRID)
    shared = shared_runs(plan, range(len(plan.points)))
    assert {j: lead for j, (lead, _) in shared.items()} == {1: 0, 5: 4}  # none at horizon 2 -> horizon 1
    once = run_sweep(plan, tmp_path / "once", jobs=1)
    each = run_sweep(plan, tmp_path / "each", jobs=1, keep_runs=True)
    assert (once.ran, once.shared, each.ran, each.shared) == (8, 2, 8, 0)
    assert (tmp_path / "once" / "results.csv").read_bytes() == (
        tmp_path / "each" / "results.csv"
    ).read_bytes()
    rec = json.loads(point_path(tmp_path / "once", 5).read_text())
    assert rec["same_run_as"] == 4 and rec["summary"]["provenance"]["scenario"]["predictor"]["horizon"] == 2


def test_failing_point_is_recorded_and_exit_is_nonzero_at_the_end(tiny_scenario, tmp_path, capsys):
    out = tmp_path / "s"
    # capacity 4 < k=8: that point fails in prepare; the others must still run
    rc = main(
        [
            "sweep",
            str(tiny_scenario),
            "--grid",
            "cache.capacity=4,64,128",
            "--out",
            str(out),
            "-j",
            "2",
            "--quiet",
        ]
    )
    assert rc == 1
    captured = capsys.readouterr()
    assert "3 points: 2 ok, 1 failed" in captured.out
    assert "point 0 failed: cache.capacity" in captured.err
    t = pd.read_parquet(out / "results.parquet")
    assert list(t["status"]) == ["error", "ok", "ok"]
    assert "cache.capacity" in t["error"][0] and "\n" not in t["error"][0]
    assert t["counts.hit_rate"][1:].notna().all()
    csv = pd.read_csv(out / "results.csv")
    assert list(csv["status"]) == ["error", "ok", "ok"]


def test_resume_runs_only_missing_points(tiny_scenario, tmp_path):
    plan = SweepPlan.from_grid(tiny_scenario, {"cache.capacity": [64, 128, 256, 512]})
    out = tmp_path / "s"
    full = run_sweep(plan, out, jobs=1)
    # Simulate a sweep killed after points 0 and 2: drop the others and mark the survivors so a
    # rerun of them would be visible.
    for i in (1, 3):
        point_path(out, i).unlink()
    for i in (0, 2):
        rec = json.loads(point_path(out, i).read_text())
        rec["summary"]["counts"]["tokens"] = -7
        point_path(out, i).write_text(json.dumps(rec))
    (out / "points" / ".00001.json.tmp").write_text("{half a fi")  # an interrupted write
    with pytest.raises(MoesimInputError, match="--resume"):
        run_sweep(plan, out, jobs=1)
    again = run_sweep(plan, out, jobs=2, resume=True)
    assert again.ran == 2 and again.skipped == 2 and again.ok
    t = again.table
    assert list(t["counts.tokens"]) == [-7, 128, -7, 128]
    cols = [c for c in t.columns if c != "counts.tokens"]
    pd.testing.assert_frame_equal(t[cols], full.table[cols])
    # a different grid in the same directory is refused
    other = SweepPlan.from_grid(tiny_scenario, {"cache.capacity": [64, 96]})
    with pytest.raises(MoesimInputError, match="different sweep"):
        run_sweep(other, out, resume=True)


def test_resume_retries_failed_points(tiny_scenario, tmp_path):
    plan = SweepPlan.from_grid(tiny_scenario, {"cache.capacity": [64, 128]})
    out = tmp_path / "s"
    run_sweep(plan, out, jobs=1)
    rec = json.loads(point_path(out, 1).read_text())
    rec.update(status="error", error="boom", summary=None)
    point_path(out, 1).write_text(json.dumps(rec))
    again = run_sweep(plan, out, jobs=1, resume=True)
    assert again.ran == 1 and again.ok
    assert load_records(out, plan)[1]["status"] == "ok"


def test_interrupted_cli_sweep_resumes(tiny_scenario, tmp_path):
    """Kill a real sweep process mid-way, then --resume: the finished points are kept."""
    import signal
    import time

    out = tmp_path / "k"
    args = [
        sys.executable,
        "-m",
        "moesim.cli.main",
        "sweep",
        str(tiny_scenario),
        "--grid",
        "cache.capacity=64,72,80,88,96,104,112,120,128,136,144,152",
        "--out",
        str(out),
        "-j",
        "1",
        "--quiet",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and len(list((out / "points").glob("*.json"))) < 2:
        time.sleep(0.05)
    os_kill = __import__("os").killpg
    os_kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p.name for p in (out / "points").glob("*.json")}
    assert len(done) >= 2
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "points").glob("*.json")}
    rc = main(
        [
            "sweep",
            str(tiny_scenario),
            "--grid",
            "cache.capacity=64,72,80,88,96,104,112,120,128,136,144,152",
            "--out",
            str(out),
            "-j",
            "2",
            "--quiet",
            "--resume",
        ]
    )
    assert rc == 0
    t = pd.read_parquet(out / "results.parquet")
    assert len(t) == 12 and (t["status"] == "ok").all()
    for name, m in mtimes.items():
        assert (out / "points" / name).stat().st_mtime_ns == m  # not rerun


def test_heatmap_and_keep_runs(tiny_scenario, tmp_path):
    out = tmp_path / "h"
    rc = main(
        [
            "sweep",
            str(tiny_scenario),
            "--grid",
            "cache.capacity=64,128",
            "--grid",
            "predictor.horizon=1,2",
            "--out",
            str(out),
            "-j",
            "1",
            "--quiet",
            "--heatmap",
            "hit_rate",
            "--keep-runs",
        ]
    )
    assert rc == 0
    png = out / "heatmap_counts.hit_rate.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert (out / "runs" / "00003" / "summary.json").is_file()
    with pytest.raises(SystemExit):
        main(["sweep", str(tiny_scenario), "--out", str(tmp_path / "x")])  # --grid is required


def test_cli_bad_key_is_one_line_exit_2(tiny_scenario, tmp_path, capsys):
    rc = main(["sweep", str(tiny_scenario), "--grid", "cache.nope=1,2", "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cache.nope" in err[0]
    assert not (tmp_path / "o").exists()


def test_deep_params_key(tiny_scenario, tmp_path):
    plan = SweepPlan.from_grid(tiny_scenario, {"predictor.params.bogus": [1]})
    res = run_sweep(plan, tmp_path / "d", jobs=1)
    # the predictor rejects the unknown parameter: proves the value reached predictor.params
    assert not res.ok and "bogus" in res.failed[0][1]


def test_paths_in_records_are_relative_to_cwd(tiny_scenario, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = run_sweep(SweepPlan.from_grid(tiny_scenario.name, {"batch": [1]}), Path("rel"), jobs=1)
    assert res.ok and (tmp_path / "rel" / "results.csv").is_file()


@pytest.mark.parametrize("cached", [True, False])
def test_the_parent_warms_the_kernels_only_when_the_cache_is_cold(
    tiny_scenario, tmp_path, monkeypatch, cached
):
    from moesim.engine.fast import jit

    warmed = []
    monkeypatch.setattr(jit, "kernels_cached", lambda: cached)
    monkeypatch.setattr(jit, "warm_kernels", lambda: warmed.append(1))
    plan = SweepPlan.from_grid(tiny_scenario, {"cache.capacity": [64, 256]})
    assert run_sweep(plan, tmp_path / "s", jobs=2).ok  # the workers load the kernels themselves
    assert warmed == ([] if cached else [1])
