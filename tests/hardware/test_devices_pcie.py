"""PCIe link bandwidth (moesim.hardware.pcie) and the devices that opt in to measured efficiencies."""

from __future__ import annotations

import pytest

from moesim.errors import MoesimInputError
from moesim.hardware import get_device
from moesim.hardware.devices import _resolve_measured
from moesim.hardware.pcie import MEASUREMENTS, link_gbps, measured_efficiency, theoretical_gbps

NEW_DEVICES = (
    "t4",
    "l4",
    "a10g",
    "rtx-a5000",
    "rtx-a6000",
    "quadro-rtx-6000",
    "rtx-3060",
    "rtx-3080-mobile",
    "rtx-3090",
    "rtx-4090d",
)


def test_theoretical_bandwidth_by_hand() -> None:
    # 8 GT/s x 128/130 / 8 bit = 0.984615 GB/s per lane; x16 = 15.7538 GB/s.
    assert theoretical_gbps(3, 16) == pytest.approx(15.753846, rel=1e-6)
    assert theoretical_gbps(4, 8) == pytest.approx(15.753846, rel=1e-6)  # twice the rate, half the lanes
    assert theoretical_gbps(5, 16) == pytest.approx(63.015385, rel=1e-6)
    assert theoretical_gbps(2, 16) == pytest.approx(8.0)  # 5 GT/s x 8/10 / 8 x 16


def test_measured_efficiencies_by_hand() -> None:
    # Gen4: median of the eight RTX 4090 copy-engine figures = (26.09 + 26.28) / 2 = 26.185 GB/s.
    assert MEASUREMENTS[4].gbps == pytest.approx(26.185)
    assert measured_efficiency(4) == pytest.approx(26.185 / 31.507692, rel=1e-6)  # 0.8311
    assert measured_efficiency(3) == pytest.approx(12.0 / 15.753846, rel=1e-6)  # 0.7617
    assert measured_efficiency(5) == pytest.approx(52.77 / 63.015385, rel=1e-6)  # 0.8374
    # The measured x16 figure comes back for an x16 link; narrower links scale linearly.
    assert link_gbps(4, 16) == pytest.approx(26.185)
    assert link_gbps(4, 8) == pytest.approx(13.0925)
    assert link_gbps(3, 16) == pytest.approx(12.0)
    assert link_gbps(5, 16) == pytest.approx(52.77)
    assert link_gbps(3, 16, memory="pageable") == pytest.approx(6.0)
    # Gen5 beats the flat 0.8 the older devices assume (50.41 GB/s).
    assert link_gbps(5, 16) > 0.8 * theoretical_gbps(5, 16)


@pytest.mark.parametrize(
    ("gen", "lanes", "memory", "needle"),
    [
        (6, 16, "pinned", "hardware.pcie_gen"),
        (True, 16, "pinned", "hardware.pcie_gen"),
        (4, 3, "pinned", "hardware.pcie_lanes"),
        (4, 16.0, "pinned", "hardware.pcie_lanes"),
        (4, 16, "mapped", "hardware.host_memory"),
        (2, 16, "pinned", "no published pinned-copy measurement for PCIe Gen2"),
    ],
)
def test_bad_link_inputs(gen, lanes, memory, needle) -> None:
    with pytest.raises(MoesimInputError, match=needle):
        link_gbps(gen, lanes, memory)


def test_new_devices_use_the_measured_efficiency() -> None:
    for key in NEW_DEVICES:
        d = get_device(key)
        assert d.pcie_effective_gbps == pytest.approx(link_gbps(d.pcie_gen, d.pcie_lanes)), key
        assert any("measured" in s for s in d.sources), key
    assert get_device("t4").pcie_effective_gbps == pytest.approx(12.0)
    assert get_device("rtx-3090").pcie_effective_gbps == pytest.approx(26.185)


def test_older_devices_keep_the_flat_efficiency() -> None:
    for key in ("h100-sxm", "h100-pcie", "h200", "a100-80gb-sxm", "l40s", "rtx-4090", "v100-32gb"):
        assert get_device(key).pcie_efficiency == 0.8, key
    assert get_device("a100-80gb-sxm").pcie_effective_gbps == pytest.approx(0.8 * 31.507692, rel=1e-6)


def test_device_specs_by_hand() -> None:
    # Figures derived as SMs x boost GHz x 512 bf16 FLOP/clk/SM (GeForce, fp32 accumulate).
    assert get_device("rtx-4090d").bf16_dense_tflops == pytest.approx(114 * 2.52 * 512 / 1000, abs=0.05)
    assert get_device("rtx-3060").bf16_dense_tflops == pytest.approx(28 * 1.777 * 512 / 1000, abs=0.05)
    assert get_device("rtx-3080-mobile").bf16_dense_tflops == pytest.approx(48 * 1.71 * 512 / 1000, abs=0.05)
    # Sparse datasheet peaks halved.
    assert get_device("rtx-a6000").bf16_dense_tflops == pytest.approx(309.7 / 2, abs=0.05)
    assert get_device("l4").bf16_dense_tflops == pytest.approx(242 / 2)
    # GDDR bandwidth = bus bits x Gbps / 8.
    assert get_device("rtx-3060").memory_bandwidth_gbps == 192 * 15 / 8
    assert get_device("rtx-3080-mobile").memory_bandwidth_gbps == 256 * 14 / 8
    assert get_device("rtx-3080-mobile").memory_gb == 16 and get_device("rtx-3060").memory_gb == 12
    assert (get_device("t4").pcie_gen, get_device("quadro-rtx-6000").pcie_gen) == (3, 3)


def test_measured_opt_in_needs_a_measured_generation() -> None:
    with pytest.raises(MoesimInputError, match="pcie_efficiency: measured needs pcie_gen"):
        _resolve_measured("x", {"pcie_gen": 2, "pcie_efficiency": "measured"})
    raw = {"pcie_gen": 3, "pcie_efficiency": 0.5}
    assert _resolve_measured("x", raw) is raw  # a number is left alone
