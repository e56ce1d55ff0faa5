"""PCIe host<->device link bandwidth: theoretical per generation and lanes, and achievable from
public measurements of large pinned copies.

``link_gbps(gen, lanes, memory)`` is the function the scenario keys ``hardware.pcie_gen`` and
``hardware.pcie_lanes`` feed (``moesim.experiments.fidelity.apply_link``; docs/fidelity.md):

* ``pcie_gen`` picks the per-lane signalling rate and the measured efficiency of that generation;
* ``pcie_lanes`` scales the link linearly (x1 .. x16); the efficiency is the x16 one, because the
  measurements below are all x16 links (per-TLP overheads are the same per lane, so the fraction
  is assumed to carry over to narrower links);
* ``memory="pinned"`` is a page-locked host buffer (cudaMemcpyAsync DMA straight from it);
  ``"pageable"`` goes through the driver's staging buffer: the pinned rate times
  ``PAGEABLE_FACTOR`` (an assumption, not a measurement: ~half, as the roofline has always used).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from moesim.errors import MoesimInputError

# Usable bytes per lane per second after line coding (GB/s = 1e9 B/s). Gen1/2 use 8b/10b at
# 2.5/5 GT/s; Gen3-5 use 128b/130b at 8/16/32 GT/s (PCI-SIG base specifications).
PCIE_LANE_GBPS: dict[int, float] = {
    1: 2.5 * 8 / 10 / 8,
    2: 5.0 * 8 / 10 / 8,
    3: 8 * 128 / 130 / 8,
    4: 16 * 128 / 130 / 8,
    5: 32 * 128 / 130 / 8,
}
ALLOWED_LANES = (1, 2, 4, 8, 16)
PAGEABLE_FACTOR = 0.5  # same assumption as RooflineParams.pageable_factor
MEMORY_KINDS = ("pinned", "pageable")


@dataclass(frozen=True)
class LinkMeasurement:
    """Published large-copy bandwidths on one x16 link of a generation (GB/s)."""

    gen: int
    samples_gbps: tuple[float, ...]
    what: str  # the copy measured: direction, copy engine or SM, pinned
    source: str  # where it was published

    @property
    def gbps(self) -> float:
        return statistics.median(self.samples_gbps)

    @property
    def efficiency(self) -> float:
        """Measured median over the theoretical x16 one-direction bandwidth."""
        return self.gbps / (PCIE_LANE_GBPS[self.gen] * 16)


# Only generations with a public measurement are here; the others have no measured efficiency.
MEASUREMENTS: dict[int, LinkMeasurement] = {
    3: LinkMeasurement(
        gen=3,
        samples_gbps=(12.0,),
        what="host-to-device (GPU ingress) peak, Tesla V100 on PCIe Gen3 x16",
        source=(
            "BaM maintainers, github.com/ZaidQureshi/bam issue #54 (2025-02): 'V100 ingress "
            "bandwidth is 12GBps' on Gen3 x16 (16 GB/s nominal), stated to be measured peak"
        ),
    ),
    4: LinkMeasurement(
        gen=4,
        samples_gbps=(25.50, 24.26, 23.90, 26.30, 26.28, 26.38, 26.09, 26.31),
        what="host_to_device_memcpy_ce (copy engine, pinned), 8 x GeForce RTX 4090, one per row",
        source=(
            "NVIDIA/nvbandwidth issue #15 (2024-01), nvbandwidth v0.2 output on 8 x RTX 4090 "
            "(Gen4 x16). Consistent with NVIDIA/nvbandwidth #42 (A100-SXM4-40GB "
            "host_to_device_memcpy_sm 25.13 GB/s at 512 MiB) and BaM #54 (A100 Gen4 measured 25 GB/s)"
        ),
    ),
    5: LinkMeasurement(
        gen=5,
        samples_gbps=(52.77, 52.77, 52.77, 52.78, 52.76, 52.77, 52.78, 52.77),
        what=(
            "device_to_host_memcpy_sm on 8 x H100 (Gen5 x16); NOTE direction: the same report "
            "measured host_to_device_memcpy_sm at only ~35.2 GB/s and flags the asymmetry as "
            "unexplained. No public Gen5 host-to-device copy-engine figure was found"
        ),
        source="NVIDIA/nvbandwidth issue #24 (2024-09), H100 cluster",
    ),
}


def _check(gen: int, lanes: int, memory: str = "pinned") -> None:
    if isinstance(gen, bool) or not isinstance(gen, int) or gen not in PCIE_LANE_GBPS:
        raise MoesimInputError(f"hardware.pcie_gen must be one of {sorted(PCIE_LANE_GBPS)} (got {gen!r})")
    if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes not in ALLOWED_LANES:
        raise MoesimInputError(f"hardware.pcie_lanes must be one of {list(ALLOWED_LANES)} (got {lanes!r})")
    if memory not in MEMORY_KINDS:
        raise MoesimInputError(f"hardware.host_memory must be one of {list(MEMORY_KINDS)} (got {memory!r})")


def theoretical_gbps(gen: int, lanes: int) -> float:
    """One-direction link bandwidth after line coding (GB/s)."""
    _check(gen, lanes)
    return PCIE_LANE_GBPS[gen] * lanes


def measured_efficiency(gen: int) -> float:
    """Achievable fraction of the link for large pinned copies, from ``MEASUREMENTS``."""
    m = MEASUREMENTS.get(gen)
    if m is None:
        raise MoesimInputError(
            f"no published pinned-copy measurement for PCIe Gen{gen}; known: "
            f"{', '.join(f'Gen{g}' for g in sorted(MEASUREMENTS))}. Set hardware.h2d_gbps instead"
        )
    return m.efficiency


def link_gbps(gen: int, lanes: int, memory: str = "pinned") -> float:
    """Achievable host-to-device bandwidth (GB/s) of a Gen ``gen`` x``lanes`` link."""
    _check(gen, lanes, memory)
    gbps = theoretical_gbps(gen, lanes) * measured_efficiency(gen)
    return gbps * PAGEABLE_FACTOR if memory == "pageable" else gbps
