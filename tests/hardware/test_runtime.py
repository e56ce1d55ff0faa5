"""The ``runtime`` section's data side: presets with provenance, key resolution, the roofline's
whole-token tables (hand-computed), and how a profile gets them."""

from __future__ import annotations

from pathlib import Path

import pytest

from moesim.errors import MoesimInputError
from moesim.experiments.scenario import RuntimeConfig, load_scenario
from moesim.hardware import estimate_profile, get_device, load_profile
from moesim.hardware.costs import CostModel
from moesim.hardware.roofline import token_tables
from moesim.hardware.runtime import presets, runtime_costs, with_token_ops
from moesim.models import get_model

ROOT = Path(__file__).resolve().parents[2]


def test_every_preset_cites_its_numbers():
    for name, p in presets().items():
        values = [p["layer_overhead_us"], p["token_overhead_us"], p["launch_us"]]
        assert all(v >= 0 for v in values)
        if any(values):  # a non-zero value names where it comes from and how it was derived
            assert p["sources"], name
            for src in p["sources"]:
                assert {"url", "where", "figure", "derivation"} <= set(src), name
    assert not any(presets()["none"][k] for k in ("layer_overhead_us", "token_overhead_us", "launch_us"))


def test_derived_preset_values_follow_their_derivation():
    p = presets()
    assert p["eager-pytorch"]["layer_overhead_us"] == pytest.approx((8.4 - 5.1) / 32 * 1e3, abs=0.2)
    assert p["fused-moe"]["launch_us"] == pytest.approx((14.76 - 11.69) / 914 * 1e3, abs=0.005)
    assert p["moesim-live-cpu"]["layer_overhead_us"] == pytest.approx(102.232 + 48.854)
    # the own measurement is the shipped calibration profile's, not a copy that could drift
    prof = load_profile(ROOT / "moesim/data/profiles/calibration-cpu.yaml")
    own = prof.time_ms("layer_overhead_pre_gate", batch=1) + prof.time_ms("layer_overhead_post_gate", batch=1)
    assert p["moesim-live-cpu"]["layer_overhead_us"] == pytest.approx(own * 1e3)


def test_explicit_keys_win_over_the_preset():
    rt = runtime_costs("eager-pytorch", token_overhead_us=250.0)
    assert (rt.layer_overhead_ms, rt.token_overhead_ms, rt.launch_ms) == pytest.approx((0.103, 0.25, 0.0))
    assert not runtime_costs().host_time and runtime_costs("cuda-graphs").host_time
    with pytest.raises(MoesimInputError, match="runtime.preset: unknown preset 'x'"):
        runtime_costs("x")


def test_runtime_keys_are_validated_and_default_is_left_out_of_the_scenario_dict():
    sc = load_scenario(None)
    assert sc.runtime.is_default() and "runtime" not in sc.to_dict()
    sc = load_scenario(None, ["runtime.preset=cuda-graphs", "runtime.whole_token=true"])
    assert sc.to_dict()["runtime"]["preset"] == "cuda-graphs" and sc.runtime.whole_token
    with pytest.raises(MoesimInputError, match="runtime.preset: unknown preset"):
        load_scenario(None, ["runtime.preset=graphs"])
    with pytest.raises(MoesimInputError, match="runtime.layer_overhead_us: must be >= 0"):
        load_scenario(None, ["runtime.layer_overhead_us=-1"])
    with pytest.raises(MoesimInputError, match="runtime.overhead: unknown key"):
        load_scenario(None, ["runtime.overhead=1"])
    assert RuntimeConfig(whole_token=True) != RuntimeConfig()


def test_roofline_lm_head_and_dense_ffn_by_hand():
    m = get_model("deepseek-v2-lite")  # 27 layers, layer 0 dense (MLP 10944), vocab 102400, H 2048
    d = get_device("h100-pcie")
    tables = {t.op: t for t in token_tables(m, d)}
    flops_ms = d.bf16_dense_tflops * 1e9 * 0.7
    bytes_ms = d.memory_bandwidth_gbps * 1e6 * 0.8
    launch = d.launch_overhead_us / 1e3
    # LM head at 1 token: a memory-bound GEMV over 102400 x 2048 bf16 weights, + 2 kernels
    head_bytes = 102400 * 2048 * 2 + 2 * 2048 * 2 + 4 * 102400
    assert tables["lm_head"].ms[0] == pytest.approx(head_bytes / bytes_ms + 2 * launch, rel=1e-12)
    # the dense MLP: 3 x 2048 x 10944 bf16 weights
    ffn_bytes = 3 * 2048 * 10944 * 2 + (2 * 2048 + 6 * 10944) * 2
    assert tables["dense_ffn"].ms[0] == pytest.approx(
        max(6 * 2048 * 10944 / flops_ms, ffn_bytes / bytes_ms) + 3 * launch
    )
    cm = CostModel(load_profile("estimated:h100-pcie", m).with_tables(tables.values()), m)
    assert cm.dense_before[0] == 1 and sum(cm.dense_before) == 1 and cm.dense_after == 0


def test_profiles_get_whole_token_tables_only_when_estimated():
    m = get_model("olmoe-1b-7b")
    est = load_profile("estimated:h100-pcie", m)
    assert not est.has("lm_head")  # estimated profiles are unchanged unless whole_token asks
    filled = with_token_ops(est, m, "estimated:h100-pcie")
    assert all(filled.has(op) for op in ("embedding", "dense_ffn", "lm_head", "sampling"))
    assert filled.time_ms("dense_ffn", tokens=1) == 0.0  # OLMoE: every layer routes, no dense MLP
    measured = load_profile(ROOT / "moesim/data/profiles/calibration-cpu.yaml")
    with pytest.raises(MoesimInputError, match="runtime.whole_token: profile .* has no embedding"):
        with_token_ops(measured, m, "moesim/data/profiles/calibration-cpu.yaml")


def test_a_model_with_dense_layers_needs_their_width():
    from dataclasses import replace

    m = replace(get_model("deepseek-v2-lite"), extra={})
    with pytest.raises(MoesimInputError, match="dense_intermediate_size"):
        token_tables(m, "h100-pcie")


def test_estimated_profiles_unchanged():
    # whole-token tables are not in the roofline profile: its fingerprint is the one runs recorded
    m = get_model("olmoe-1b-7b")
    ops = set(estimate_profile(m, "h100-pcie").tables)
    assert not ops & {"embedding", "dense_ffn", "lm_head", "sampling"}
    assert not any(op.startswith("host_") for op in ops)


def test_measured_cuda_tables_give_their_host_times():
    from moesim.hardware.profile import LatencyProfile
    from moesim.hardware.table import Table

    m = get_model("olmoe-1b-7b")
    meas = {"kind": "measured", "device": "gpu", "driver": "1", "torch": "2", "date": "d"}
    g = (1.0, 2.0)
    tables = [
        Table("expert_ffn", ("tokens",), (g,), (0.02, 0.03), dict(meas, host_median_ms=[0.011, 0.012])),
        Table("norm", ("tokens",), (g,), (0.005, 0.005), dict(meas)),  # CPU-style: no host times
        Table("host_gate", (), (), 0.04, dict(meas)),  # an explicit host table
        Table("h2d_pinned", (), (), 1.0, dict(meas)),
    ]
    cm = CostModel(LatencyProfile("p", "gpu", tables), m)
    assert cm.host_timeline
    assert cm.host_ms("expert_ffn", tokens=2) == pytest.approx(0.012)
    assert cm.host_ms("expert_ffn", tokens=1.5) == pytest.approx(0.0115)
    assert cm.host_ms("gate", tokens=1) == pytest.approx(0.04)
    assert cm.host_ms("norm", tokens=1) == 0.0  # no host time known, no launch_us
    assert not CostModel(LatencyProfile("q", "gpu", tables[1::2]), m).host_timeline


@pytest.mark.parametrize(
    "override, needle",
    [
        ("runtime.preset=eager", "runtime.preset: unknown preset 'eager'"),
        ("runtime.token_overhead_us=-5", "runtime.token_overhead_us: must be >= 0"),
        ("runtime.whole_token=yes", "runtime.whole_token must be true or false"),
    ],
)
def test_cli_refuses_bad_runtime_keys_in_one_line(tmp_path, capsys, override, needle):
    from moesim.cli.main import main

    out = tmp_path / "out"
    code = main(["run", "--set", override, "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and needle in err, err
    assert not out.exists()


def test_whole_token_on_a_measured_profile_is_one_line(tmp_path, capsys):
    from moesim.cli.main import main

    out = tmp_path / "out"
    code = main(
        [
            "run",
            str(ROOT / "scenarios/calibration-cpu-small.yaml"),
            "--set",
            "runtime.whole_token=true",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "runtime.whole_token: profile" in err, err


def test_dense_layers_sit_where_the_spec_puts_them():
    v3 = CostModel(load_profile("estimated:h100-pcie", get_model("deepseek-v3")), get_model("deepseek-v3"))
    assert v3.dense_before[:2] == [3, 0] and v3.dense_after == 0  # layers 0-2 dense, 3-60 MoE
    mav = get_model("llama-4-maverick")  # even layers dense, odd layers route
    cm = CostModel(load_profile("estimated:h100-pcie", mav), mav)
    assert cm.dense_before == [1] * 24 and cm.dense_after == 0
    assert mav.dense_layer_indices == tuple(range(0, 48, 2))


def test_run_records_the_runtime_section_and_costs_more(tmp_path):
    import json

    from moesim.cli.main import main

    def tpot(*sets: str) -> tuple[float, dict]:
        out = tmp_path / str(len(sets))
        args = ["run", "--set", "trace.max_sequences=1", "--out", str(out), "--quiet"]
        for s in sets:
            args += ["--set", s]
        assert main(args) == 0
        summary = json.loads((out / "summary.json").read_text())
        return summary["latency"]["tpot_ms"]["mean"], summary["provenance"]["scenario"]

    base, sc0 = tpot()
    more, sc1 = tpot("runtime.whole_token=true", "runtime.preset=eager-pytorch")
    assert "runtime" not in sc0 and sc1["runtime"]["preset"] == "eager-pytorch"
    # OLMoE's 16 MoE layers x 0.103 ms bound the added host time from above (part hides behind copies)
    assert base < more < base + 16 * 0.103 + 1.0
