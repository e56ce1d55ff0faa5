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
    printed = capsys.readouterr().out
    assert "median |TPOT error|" in printed and "noise: unmeasured (0 of 1 configurations)" in printed


# -- one repeat at a time, and the noise it ran under ----------------------------------------------
def test_each_repeat_releases_the_previous_store(report, small_scenario, tmp_path, monkeypatch):
    """A repeat's expert store (pinned host memory on CUDA) is gone before the next one starts."""
    import gc
    import weakref

    import moesim.experiments.live as live

    out, _ = report
    real, stores, alive_at_start = live.run_live, [], []

    def tracked(*a, **kw):
        gc.collect()  # only what calibrate itself still references survives this
        alive_at_start.append([ref() is not None for ref in stores])
        lr = real(*a, **kw)
        stores.append(weakref.ref(lr.executor.store))
        return lr

    monkeypatch.setattr(live, "run_live", tracked)
    calibrate(
        [str(small_scenario)],
        tmp_path / "r",
        CalibrateOptions(profile=str(out / "profile.yaml"), layers=1, repeats=3, sets=["cache.capacity=6"]),
    )
    assert alive_at_start == [[], [False], [False, False]]


def test_noise_is_recorded_per_config_and_in_the_headline(report):
    out, _ = report
    df = pd.read_csv(out / "calibration.csv")
    for col in ("load1_before", "load1_after", "other_cpu_s", "other_cpu_pct", "compute_thread_wait_ms"):
        assert col in df and (df[col] >= 0).all(), col
    assert (df["live_repeat_spread_pct"] > 0).all()  # two repeats never time identically
    noisy = df["live_repeat_spread_pct"] > df["reported_abs_err_pct"]
    assert (df["noise_verdict"] == noisy.map({True: "noisy", False: "ok"})).all()
    assert (df["reported_abs_err_pct"] == df["simloop_err_mean_pct"].abs()).all()
    head = json.loads((out / "summary.json").read_text())["headline"]
    assert head["noisy_configs"] == int(noisy.sum())
    assert head["noise_verdict"] in ("ok", "noisy") and head["other_cpu_pct"] >= 0
    want = "noisy" if head["median_repeat_spread_pct"] > head["simloop_median_abs_err_mean_pct"] else "ok"
    assert head["noise_verdict"] == want
    md = (out / "report.md").read_text()
    assert f"Noise verdict: {want}" in md and "other CPU %" in md


def test_max_noise_refuses_and_writes_nothing(report, small_scenario, tmp_path):
    from moesim.errors import MoesimInputError

    out, _ = report
    opts = CalibrateOptions(
        profile=str(out / "profile.yaml"), layers=1, repeats=2, sets=["cache.capacity=6"], max_noise=0.0
    )
    with pytest.raises(MoesimInputError, match=r"--max-noise 0: 1 of 1 configurations.*nothing written"):
        calibrate([str(small_scenario)], tmp_path / "refused", opts)
    assert not (tmp_path / "refused").exists()
    opts.repeats = 1
    with pytest.raises(MoesimInputError, match="--repeats >= 2"):
        calibrate([str(small_scenario)], tmp_path / "refused", opts)


def test_noise_verdict_and_cpu_accounting():
    from moesim.experiments.calibrate import noise_verdict
    from moesim.experiments.noise import CpuSample, between, busy_seconds, combine

    assert noise_verdict(12.0, 10.0) == "noisy" and noise_verdict(8.0, 10.0) == "ok"
    assert noise_verdict(float("nan"), 10.0) == "unmeasured"
    stat = (
        "cpu  900 0 900 900 9 9 9 9 0 0\n"
        "cpu0 100 5 20 700 50 1 2 3 40 0\n"  # busy: 100+5+20+1+2+3 (iowait and guest left out)
        "cpu1 200 0 10 500 0 0 0 0 0 0\n"
        "cpu2 999 0 0 0 0 0 0 0 0 0\n"  # not one of our cores
        "intr 123 4 5\n"
    )
    assert busy_seconds(stat, {0, 1}, 100.0) == pytest.approx((131 + 210) / 100)
    a = CpuSample(wall_s=10.0, busy_s=50.0, own_s=20.0, wait_s=1.0, load1=0.5, cores=2)
    b = CpuSample(wall_s=12.0, busy_s=53.6, own_s=23.0, wait_s=1.25, load1=1.5, cores=2)
    n = between(a, b)  # 3.6 s busy, 3.0 s ours: 0.6 s of 2 cores x 2 s taken by others
    assert n.other_cpu_s == pytest.approx(0.6) and n.other_cpu_pct == pytest.approx(15.0)
    assert n.compute_wait_ms == pytest.approx(250.0) and (n.load1_before, n.load1_after) == (0.5, 1.5)
    assert between(a, CpuSample(12.0, 52.0, 23.0, 1.0, 1.0, 2)).other_cpu_s == 0.0  # jiffy rounding
    both = combine([n, between(a, CpuSample(12.0, 51.0, 21.0, 1.0, 2.5, 2))])
    assert both.other_cpu_s == pytest.approx(0.6) and both.other_cpu_pct == pytest.approx(7.5)
    assert (both.load1_before, both.load1_after) == (0.5, 2.5)


def _step(group, step, misses=0, idle=True):
    from moesim.engine.live_executor import StepRecord

    return StepRecord(group, step, step % 2, 1, 8, [1, 1], 0.0, 0.0, 0.0, 0.0, 0.0, misses, idle)


class _FlatProfile:
    """norm 0.1, attention 0.2, gate 0.05 ms; expert_ffn 0.3 ms a call; no shared expert."""

    def has(self, op):
        return op != "shared_expert_ffn"

    def time_ms(self, op, **axes):
        return {"norm": 0.1, "attention": 0.2, "gate": 0.05, "expert_ffn": 0.3}[op]


def test_cuda_diagnostics_use_device_times():
    """CUDA: copies from their events, the loop from the token latencies (event marks); the host's
    step timestamps (all 0 here) are not read."""
    from types import SimpleNamespace

    from moesim.experiments.calibrate import _diagnostics, token_loop_residuals

    class Evt:
        def __init__(self, t):
            self.t = t

        def elapsed_time(self, other):
            return other.t - self.t

    # group 0: 2 prompt-pass records, then 3 tokens x 2 layers; token 2 has a miss
    steps = [_step(0, s, misses=int(s == 6)) for s in range(8)]
    # group 1: 2 tokens x 2 layers; token 1 ran with a copy in flight
    steps += [_step(1, s, idle=s < 2) for s in range(4)]
    tokens = pd.DataFrame(
        {"group": [0, 0, 0, 1, 1], "step": [0, 1, 2, 0, 1], "tpot_ms": [9.0, 3.0, 9.0, 9.0, 9.0]}
    )
    # a layer-step's kernels: 0.1 + 0.2 + 0.05 + 2 x 0.3 = 0.95 ms; token 1 of group 0 only is used
    assert token_loop_residuals(steps, tokens, _FlatProfile(), 2) == pytest.approx([(3.0 - 2 * 0.95) / 2])
    trs = [
        SimpleNamespace(issue=1.0, start=0.0, end=0.0, start_evt=Evt(1.5), end_evt=Evt(3.5)),
        SimpleNamespace(issue=2.0, start=0.0, end=0.0, start_evt=Evt(4.0), end_evt=Evt(5.0)),
        SimpleNamespace(issue=3.0, start=0.0, end=0.0, start_evt=None, end_evt=None),  # never issued
    ]
    ex = SimpleNamespace(
        dev=SimpleNamespace(is_cuda=True),
        transfers=trs,
        steps=steps,
        model=SimpleNamespace(num_moe_layers=2),
        _marks=SimpleNamespace(value=lambda e: 10.0 + e.t),
    )
    d = _diagnostics(ex, _FlatProfile(), tokens)
    assert d["live_copy_ms_median"] == pytest.approx(1.5)  # median of 2.0 and 1.0
    assert d["live_copy_wait_ms_median"] == pytest.approx(((11.5 - 1.0) + (14.0 - 2.0)) / 2)
    assert d["live_loop_step_ms_median"] == pytest.approx(0.55) and d["all_hit_tokens"] == 1
    assert not any(k.startswith("live_loop_pre") or k.startswith("live_post") for k in d)
