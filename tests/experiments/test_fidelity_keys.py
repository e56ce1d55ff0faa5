"""Issue 13 scenario keys wired into prepare: expert_dtype, the PCIe / host-memory keys, the GPU
memory check, and the added devices (docs/fidelity.md). Hand-computed numbers."""

from __future__ import annotations

import dataclasses

import pytest

from moesim.errors import MoesimInputError
from moesim.experiments.fidelity import apply_expert_format, apply_link, profile_device
from moesim.experiments.run import cost_model, prepare
from moesim.experiments.scenario import Scenario, load_scenario
from moesim.hardware import estimate_profile
from moesim.hardware.devices import get_device
from moesim.hardware.pcie import MEASUREMENTS, PCIE_LANE_GBPS
from moesim.hardware.roofline import RooflineParams
from moesim.models import get_model
from tests.helpers import make_model, prepared, random_trace, simulate

NEW_DEVICES = [
    "t4", "l4", "a10g", "rtx-a5000", "rtx-a6000", "quadro-rtx-6000",
    "rtx-3060", "rtx-3080-mobile", "rtx-3090", "rtx-4090d",
]  # fmt: skip
GB = 1e9  # bytes queried below


def _h2d(profile, nbytes: float = GB) -> float:
    return profile.time_ms("h2d_pinned", bytes=nbytes)


def _sc(**hardware) -> Scenario:
    return Scenario(hardware=dataclasses.replace(Scenario().hardware, **hardware))


def _eff(gen: int) -> float:
    m = MEASUREMENTS[gen]
    return m.gbps / (PCIE_LANE_GBPS[gen] * 16)


# -- PCIe and host memory ----------------------------------------------------------------------
@pytest.mark.parametrize("device", NEW_DEVICES)
def test_new_devices_load_and_take_each_link_key(device):
    model = make_model(2, 8, 2)
    d = get_device(device)
    base = estimate_profile(model, device)
    assert profile_device(base) == d
    oh = d.copy_overhead_us / 1e3
    # the device's own link: Gen x16 at the generation's measured efficiency (devices.yaml: measured)
    assert _h2d(base) == pytest.approx(oh + GB / (PCIE_LANE_GBPS[d.pcie_gen] * 16 * _eff(d.pcie_gen) * 1e6))
    gen3 = apply_link(_sc(pcie_gen=3), base, d)
    assert _h2d(gen3) == pytest.approx(oh + GB / (8 * 128 / 130 / 8 * 16 * _eff(3) * 1e6), rel=1e-12)
    x4 = apply_link(_sc(pcie_lanes=4), base, d)
    assert _h2d(x4) == pytest.approx(oh + GB / (PCIE_LANE_GBPS[d.pcie_gen] * 4 * _eff(d.pcie_gen) * 1e6))
    pageable = apply_link(_sc(host_memory="pageable"), base, d)
    assert _h2d(pageable) == pytest.approx(oh + 2 * (_h2d(base) - oh), rel=1e-12)
    both = apply_link(_sc(pcie_gen=4, pcie_lanes=8, host_memory="pageable"), base, d)
    assert _h2d(both) == pytest.approx(oh + GB / (31.5077 * 0.5 * _eff(4) * 0.5 * 1e6), rel=1e-4)


def test_h2d_gbps_wins_and_pinned_alone_changes_nothing():
    model = make_model(2, 8, 2)
    base = estimate_profile(model, "t4")
    d = get_device("t4")
    assert apply_link(_sc(host_memory="pinned"), base, d) is base
    assert apply_link(_sc(), base, d) is base
    assert apply_link(_sc(pcie_gen=5, h2d_gbps=1.0), base, d) is base  # prepare applied h2d_gbps already


def test_unmeasured_generation_is_refused_naming_h2d_gbps():
    model = make_model(2, 8, 2)
    with pytest.raises(MoesimInputError, match="hardware.h2d_gbps"):
        apply_link(_sc(pcie_gen=2), estimate_profile(model, "t4"), get_device("t4"))


@pytest.mark.parametrize(
    ("key", "value", "msg"),
    [
        ("hardware.pcie_gen", 6, "hardware.pcie_gen: must be one of"),
        ("hardware.pcie_lanes", 3, "hardware.pcie_lanes: must be one of"),
        ("hardware.host_memory", "swap", "hardware.host_memory: unknown value"),
        ("hardware.lane_sharing", "dynamic", "hardware.lane_sharing: unknown value"),
        ("hardware.memory_gb", 0, "hardware.memory_gb: must be > 0"),
        ("hardware.copy_issue_us", -1, "hardware.copy_issue_us: must be >= 0"),
        ("model.expert_dtype", "int3", "model.expert_dtype: unknown format"),
        ("model.dense_dtype", "q8", "model.dense_dtype: unknown format"),
    ],
)
def test_bad_values_name_the_key(key, value, msg):
    with pytest.raises(MoesimInputError, match=msg):
        load_scenario(values={key: value})


def test_prepare_applies_the_link_keys():
    p = prepare(load_scenario(values={"hardware.profile": "estimated:rtx-3060", "hardware.pcie_gen": 3}))
    d = get_device("rtx-3060")
    want = d.copy_overhead_us / 1e3 + p.model.expert_bytes / (8 * 128 / 130 / 8 * 16 * _eff(3) * 1e6)
    assert cost_model(p).h2d_ms == pytest.approx(want, rel=1e-12)


# -- expert formats ----------------------------------------------------------------------------
def test_native_format_is_a_no_op():
    model = make_model(2, 8, 2)
    prof = estimate_profile(model, "a100-80gb-sxm")
    for key in (None, "bf16", "fp16"):
        sc = Scenario()
        sc.model.expert_dtype = key
        m, p = apply_expert_format(sc, model, prof, get_device("a100-80gb-sxm"))
        assert m is model and p is prof


def test_hqq2_mixtral_bytes_and_fused_kernel_cost():
    model = get_model("mixtral-8x7b")
    d = get_device("a100-80gb-sxm")
    prof = estimate_profile(model, d)
    sc = Scenario()
    sc.model.expert_dtype = "hqq2"
    m, p = apply_expert_format(sc, model, prof, d)
    assert m.expert_bytes == 66_404_364  # docs/fidelity.md: 3.016 bits per weight
    # one token is memory-bound both ways: the FFN reads 66,404,364 instead of 352,321,536 weight
    # bytes, and pays 6 more launches (two per matrix: HQQ's 8-bit scale and zero dequantised first)
    bw = d.memory_bandwidth_gbps * 1e6 * RooflineParams().memory_efficiency
    want = (66_404_364 - model.expert_bytes) / bw + 6 * d.launch_overhead_us / 1e3
    got = p.time_ms("expert_ffn", tokens=1) - prof.time_ms("expert_ffn", tokens=1)
    assert got == pytest.approx(want, rel=1e-9)
    assert p.tables["expert_ffn"].provenance["inputs"]["expert_dtype"] == "hqq2"


def test_int8_experts_halve_every_copied_byte():
    model = make_model(2, 8, 2)
    trace = random_trace(__import__("numpy").random.default_rng(0), 2, 8, 2, 8, 2)
    prof = estimate_profile(model, "h100-pcie")
    sc = Scenario()
    sc.model.expert_dtype = "int8"
    m, p = apply_expert_format(sc, model, prof, get_device("h100-pcie"))
    assert m.expert_bytes == 3 * 1024 * 512  # 1 byte per weight, half of bf16
    q = simulate(prepared(trace, m, p, capacity=6)).summary
    n = simulate(prepared(trace, model, prof, capacity=6)).summary
    assert q["counts"]["misses"] == n["counts"]["misses"]
    assert q["traffic"]["bytes_demand"] * 2 == n["traffic"]["bytes_demand"]
    assert q["traffic"]["bytes_demand"] == q["counts"]["misses"] * 3 * 1024 * 512


def test_expert_dtype_needs_a_known_device():
    model = make_model(2, 8, 2)
    sc = Scenario()
    sc.model.expert_dtype = "int4"
    with pytest.raises(MoesimInputError, match="model.expert_dtype"):
        apply_expert_format(sc, model, estimate_profile(model, "h100-pcie"), None)


# -- the GPU memory check ----------------------------------------------------------------------
def test_memory_check_refuses_and_memory_gb_overrides():
    # OLMoE: 16 layers x 64 experts x 12,582,912 bytes = 12 GiB of experts, more than a 12 GB RTX 3060
    vals = {"hardware.profile": "estimated:rtx-3060", "cache.capacity": 1024}
    with pytest.raises(MoesimInputError, match=r"does not fit rtx-3060.*hardware\.memory_gb"):
        prepare(load_scenario(values=vals))
    prepare(load_scenario(values={**vals, "hardware.memory_gb": 40}))
    prepare(load_scenario(values={**vals, "model.expert_dtype": "int4"}))  # a quarter of the bytes fits


def test_memory_check_counts_per_layer_slots():
    vals = {"hardware.profile": "estimated:rtx-3060", "cache.scope": "per-layer", "cache.capacity": 64}
    with pytest.raises(MoesimInputError, match="1024 expert slots"):
        prepare(load_scenario(values=vals))
    prepare(load_scenario(values={**vals, "cache.capacity": 32}))


@pytest.mark.parametrize("device", NEW_DEVICES)
def test_default_scenario_runs_on_each_new_device(device):
    p = prepare(load_scenario(values={"hardware.profile": f"estimated:{device}"}))
    assert profile_device(p.profile).key == device


def test_a_profile_without_a_catalog_device_is_checked_only_against_memory_gb():
    sc = load_scenario("calibration-cpu-small")
    p = prepare(sc)
    assert profile_device(p.profile) is None  # measured on a CPU: no device memory to check against
    with pytest.raises(MoesimInputError, match=r"does not fit memory_gb.*hardware\.memory_gb"):
        prepare(load_scenario("calibration-cpu-small", values={"hardware.memory_gb": 0.01}))
