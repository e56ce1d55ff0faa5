"""The seed claims' fidelity variants (``seed-claims/<claim>/fidelity.yaml``, issue 13) differ from
the claim's copy-and-cache scenario only by the fidelity keys, so the READMEs' before/after
comparisons change one thing: what a real runtime pays. Each resolves from any directory and
passes ``prepare`` (link, expert format, whole-token tables, GPU memory check)."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from moesim.experiments.run import prepare
from moesim.experiments.scenario import RuntimeConfig, load_scenario

CLAIMS = (
    "mixtral-pcie4-overlap",
    "prophet-effective-hit-rate",
    "seed002-accuracy",
    "seed002-overprovision",
    "st-moe-accuracy",
)
# the keys a fidelity variant may add (docs/fidelity.md); everything else must equal scenario.yaml
FIDELITY_KEYS = {("model", "expert_dtype"), ("hardware", "pcie_gen"), ("hardware", "pcie_lanes")}


@pytest.mark.parametrize("claim", CLAIMS)
def test_fidelity_variant_changes_only_the_fidelity_keys(claim, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # shipped names, not the working directory
    base = load_scenario(f"seed-claims/{claim}")
    fid = load_scenario(f"seed-claims/{claim}/fidelity")
    assert fid.name == f"{base.name}-fidelity"
    assert base.runtime.is_default() and not fid.runtime.is_default()
    assert fid.runtime.whole_token  # a paper's TPOT is a whole token
    b, f = asdict(base), asdict(fid)
    for section in ("model", "trace", "hardware", "predictor", "cache", "tiers", "miss", "arrivals"):
        for key in b[section]:
            if (section, key) not in FIDELITY_KEYS:
                assert f[section][key] == b[section][key], (claim, section, key)
    for key in ("batch", "prefill", "prompt_tokens", "refetch_window", "seed"):
        assert f[key] == b[key], (claim, key)
    assert fid.model.expert_dtype == "bf16"  # every seed paper's experts are bf16
    assert fid.runtime.preset == "eager-pytorch" and fid.runtime != RuntimeConfig(preset="eager-pytorch")


@pytest.mark.parametrize("claim", CLAIMS)
def test_fidelity_variant_prepares(claim, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prepare(load_scenario(f"seed-claims/{claim}/fidelity").validate())  # memory check, token tables


def test_mixtral_fidelity_link_is_the_measured_gen4_rate(tmp_path, monkeypatch):
    """The README's before/after for the copy-bound Mixtral claim rests on this: one 336 MiB bf16
    expert takes 0.01 ms setup + 352,321,536 B / 26.185 GB/s (Gen4 x16 measured, docs/fidelity.md)
    = 13.465 ms, against 0.01 + 352,321,536 / (31.508 x 0.8) = 13.988 ms on the flat 80%."""
    monkeypatch.chdir(tmp_path)
    base = prepare(load_scenario("seed-claims/mixtral-pcie4-overlap"))
    fid = prepare(load_scenario("seed-claims/mixtral-pcie4-overlap/fidelity"))
    assert base.model.expert_bytes == fid.model.expert_bytes == 352_321_536
    gen4_x16 = 16 * 16 * 128 / 130 / 8  # GB/s: 16 lanes x 16 GT/s, 128b/130b, 8 bits a byte
    assert base.profile.time_ms("h2d_pinned", bytes=352_321_536) == pytest.approx(
        0.01 + 352_321_536 / (gen4_x16 * 0.8 * 1e6), rel=1e-3
    )
    assert fid.profile.time_ms("h2d_pinned", bytes=352_321_536) == pytest.approx(
        0.01 + 352_321_536 / (26.185 * 1e6), rel=1e-6
    )
