"""``moesim calibrate`` end to end on the CPU: profile -> simulate -> live -> report."""

from __future__ import annotations

import argparse
import json

import pandas as pd
import pytest

from moesim.experiments.calibrate import CalibrateOptions, calibrate, expand, first_difference


@pytest.fixture(scope="module")
def report(small_scenario, tmp_path_factory):
    out = tmp_path_factory.mktemp("cal") / "report"
    opts = CalibrateOptions(
        device="cpu",
        grid=["predictor.name=none,oracle"],
        sets=["cache.capacity=6"],
        layers=2,
        repeats=2,
        profile_repeats=3,
    )
    res = calibrate([str(small_scenario)], out, opts)
    return out, res


def test_report_files_and_headline(report):
    out, res = report
    for name in (
        "report.md",
        "calibration.csv",
        "tpot.png",
        "tpot_error.png",
        "tpot_cdf.png",
        "profile.yaml",
        "summary.json",
    ):
        assert (out / name).is_file(), name
    df = pd.read_csv(out / "calibration.csv")
    assert len(df) == 2
    assert df["decisions_identical"].all()
    for col in (
        "sim_err_mean_pct",
        "sim_err_p50_pct",
        "sim_err_p90_pct",
        "sim_err_p99_pct",
        "simloop_err_mean_pct",
        "live_stall_ms",
        "sim_stall_ms",
        "live_bytes_h2d",
        "sim_bytes_h2d",
        "late_hit_step_agreement",
    ):
        assert col in df, col
    head = json.loads((out / "summary.json").read_text())["headline"]
    assert head["decisions_identical"] is True
    assert head["configs"] == 2 and head["sim_median_abs_err_mean_pct"] >= 0
    md = (out / "report.md").read_text()
    assert "Median |TPOT error|" in md and "identical" in md and "![TPOT](tpot.png)" in md
    prov = json.loads((out / "summary.json").read_text())["provenance"]
    assert prov["device_info"]["device"].startswith("cpu") and prov["layers"] == 2


def test_given_profile_is_used(report, small_scenario, tmp_path):
    out, _ = report
    res = calibrate(
        [str(small_scenario)],
        tmp_path / "again",
        CalibrateOptions(profile=str(out / "profile.yaml"), layers=2, repeats=1, sets=["cache.capacity=6"]),
    )
    assert res["headline"]["decisions_identical"]
    assert json.loads((tmp_path / "again" / "summary.json").read_text())["provenance"]["profile_given"]


def test_grid_and_errors(small_scenario):
    from moesim.errors import MoesimInputError

    cfgs = expand([str(small_scenario)], ["cache.capacity=6,8", "predictor.name=none,oracle,prev-token"])
    assert len(cfgs) == 6 and cfgs[0].overrides == ("cache.capacity=6", "predictor.name=none")
    with pytest.raises(MoesimInputError, match="--grid"):
        expand([str(small_scenario)], ["cache.capacity="])
    with pytest.raises(MoesimInputError, match="not found"):
        expand(["nope.yaml"], [])
    assert first_difference([("A", 0, 1, 1)], [("A", 0, 1, 0)]).startswith("record 0")
    assert first_difference([("a",)], [("a",)]) is None


def test_loop_cost_model_adds_the_measured_overheads(report, small_scenario):
    from moesim.hardware import load_profile
    from moesim.hardware.costs import CostModel
    from moesim.models import model_from_hf_config

    out, _ = report
    m = model_from_hf_config(small_scenario.parent / "config.json", name="live-small")
    prof = load_profile(str(out / "profile.yaml"), m)
    base, loop = CostModel(prof, m, loop_overhead=False), CostModel(prof, m)
    pre = prof.time_ms("layer_overhead_pre_gate", batch=1)
    post = prof.time_ms("layer_overhead_post_gate", batch=1)
    assert loop.pre_attention_ms(1) == pytest.approx(base.pre_attention_ms(1) + pre)
    assert loop.shared_ms(1) == pytest.approx(base.shared_ms(1) + post)
    assert loop.expert_ms(1) == base.expert_ms(1) and loop.h2d_ms == base.h2d_ms


def test_calibrate_cli(report, small_scenario, tmp_path, capsys):
    from moesim.cli import calibrate_cmd

    out, _ = report
    parser = argparse.ArgumentParser(prog="moesim")
    calibrate_cmd.register(parser.add_subparsers())
    args = parser.parse_args(
        [
            "calibrate",
            str(small_scenario),
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "c"),
            "--profile",
            str(out / "profile.yaml"),
            "--layers",
            "1",
            "--repeats",
            "1",
            "--set",
            "cache.capacity=6",
        ]
    )
    assert args.func(args) == 0
    assert "median |TPOT error|" in capsys.readouterr().out
