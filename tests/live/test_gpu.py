"""The CUDA path: pinned host memory, copy streams with events, the compute stream waiting on them.

Skipped cleanly without a GPU (CI); run on a GPU machine with ``pytest -m gpu tests/live``.
"""

from __future__ import annotations

import pytest
import torch

from moesim.engine.live_executor import LiveOptions
from moesim.experiments.live import run_live
from moesim.experiments.run import run_prepared
from tests.live.conftest import live_prepared, tiny_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("predictor", ["none", "prev-token", "oracle"])
@pytest.mark.parametrize("lanes", [1, 2])
def test_cuda_decisions_match_the_simulator(trace, predictor, lanes):
    m = tiny_model()
    p = live_prepared(trace, m, predictor=predictor, copy_engines=lanes, capacity=5)
    sim = run_prepared(p, record=True)
    live = run_live(p, LiveOptions(device="cuda"), record=True).result
    assert live.decisions == sim.decisions
    assert (live.tokens["tpot_ms"] > 0).all()
    assert live.summary["provenance"]["live"]["device_info"]["cuda"]


def test_cuda_bf16_and_ssd_tier(trace, tmp_path):
    from dataclasses import replace

    m = replace(tiny_model(), dtype="bf16", expert_bytes=3 * 64 * 128 * 2)
    p = live_prepared(trace, m, predictor="oracle", dram_gb=5 * m.expert_bytes / 1e9)
    live = run_live(p, LiveOptions(device="cuda", ssd_dir=str(tmp_path)), record=True).result
    assert live.decisions == run_prepared(p, record=True).decisions
    assert live.summary["traffic"]["bytes_ssd_read"] > 0


def test_cuda_profile(tmp_path):
    from moesim.hardware import ENGINE_OPS, load_profile
    from moesim.profiling.profiler import Profiler, ProfileSettings

    m = tiny_model()
    s = ProfileSettings(
        batches=(1, 2),
        contexts=(8, 32),
        tokens=(1, 2),
        sizes=(4096, 98304),
        repeats=3,
        warmup=1,
        overhead_tokens=6,
    )
    profile = Profiler(m, "cuda", s).run()
    profile.save(tmp_path / "p.yaml")
    back = load_profile(str(tmp_path / "p.yaml"), m)
    assert all(back.has(op) for op in ENGINE_OPS)
    assert back.tables["h2d_pinned"].provenance["cuda"]
