"""The differential contract: the simulator and the live executor (CPU) make the same decisions.

Both drive the same ``PolicyCore``; residency changes when a copy is issued, so the present/miss,
prefetch-issue and eviction records of the core's log cannot depend on time. Every registered
predictor and cache policy is checked, plus the executor paths the common case does not take
(batches, scopes, bypass, reset per sequence, miss handlers, the SSD tier, copy lanes, prefill).
"""

from __future__ import annotations

import numpy as np
import pytest

from moesim.engine.live_executor import LiveOptions
from moesim.experiments.live import run_live
from moesim.experiments.run import run_prepared
from moesim.policies.registries import CACHES, PREDICTORS
from tests.helpers import random_trace
from tests.live.conftest import E, K, L, live_prepared, tiny_model

# keep_awake off: decisions do not depend on timing, and the spinner processes cost start-up time
OPTS = LiveOptions(device="cpu", keep_awake=False)

# trained predictors: the smallest training that still exercises them
FAST_PARAMS = {
    "prophet": {"epochs": 1, "d_model": 16, "ff": 32, "layers": 1, "attn_heads": 2, "context": 2, "heads": 2},
    "pre-attention": {"epochs": 1, "hidden": 16},
}


def _assert_same(p, live_opts=OPTS):
    sim = run_prepared(p, record=True)
    live = run_live(p, live_opts, record=True).result
    assert sim.decisions is not None and live.decisions is not None
    assert len(sim.decisions) > 0
    assert live.decisions == sim.decisions
    # the timing-independent counters agree too
    for section, key in [
        ("counts", "accesses"),
        ("counts", "misses"),
        ("prefetch", "issued"),
        ("prefetch", "useful"),
        ("cache", "evictions"),
    ]:
        assert live.summary[section][key] == sim.summary[section][key], (section, key)
    assert live.summary["counts"]["hits"] + live.summary["counts"]["late_hits"] == (
        sim.summary["counts"]["hits"] + sim.summary["counts"]["late_hits"]
    )
    # every prefetch ends up useful, wasted or cancelled in both
    for res in (sim, live):
        pf = res.summary["prefetch"]
        assert pf["useful"] + pf["wasted"] + pf["cancelled"] <= pf["issued"]
    assert len(live.tokens) == len(sim.tokens)
    assert (live.tokens["tpot_ms"] > 0).all()
    return sim, live


@pytest.mark.parametrize("cache", CACHES.names())
@pytest.mark.parametrize("predictor", PREDICTORS.names())
def test_every_predictor_and_cache(trace, model, predictor, cache):
    p = live_prepared(trace, model, predictor=predictor, policy=cache, params=FAST_PARAMS.get(predictor))
    _assert_same(p)


@pytest.mark.parametrize(
    "kw",
    [
        {"batch": 2, "capacity": 8},
        {"scope": "per-layer", "capacity": 3},
        {"capacity": 1, "bypass": True, "predictor": "none"},
        {"reset": True},
        {"predictor": "oracle", "horizon": 3, "capacity": 5},
        {"miss": "cpu", "predictor": "none"},
        {"miss": "skip", "predictor": "none"},
        {"miss": "substitute", "predictor": "none"},
        {"copy_engines": 2, "predictor": "oracle"},
        {"policy": "pin-hot", "capacity": 6},
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()),
)
def test_executor_paths(trace, model, kw):
    _assert_same(live_prepared(trace, model, **kw))


def test_ssd_tier(trace, model, tmp_path):
    """A host tier smaller than the model: reads from the SSD file precede those copies."""
    dram_gb = 5 * model.expert_bytes / 1e9  # five experts fit in host memory
    p = live_prepared(trace, model, predictor="oracle", dram_gb=dram_gb)
    sim, live = _assert_same(p, LiveOptions(device="cpu", keep_awake=False, ssd_dir=str(tmp_path)))
    assert live.summary["traffic"]["bytes_ssd_read"] > 0
    assert not list(tmp_path.iterdir()), "the SSD tier's file is removed after the run"


def test_prefill_pass(model):
    rng = np.random.default_rng(3)
    tr = random_trace(rng, 2, 5, L, E, K)
    pre = random_trace(rng, 2, 6, L, E, K)
    tr.prefill_experts = pre.experts
    tr.prefill_offsets = pre.seq_offsets
    p = live_prepared(tr, model, prefill=True, batch=2, capacity=8)
    sim, live = _assert_same(p)
    assert len(live.summary["latency"]["ttft_ms"] or []) or live.summary["latency"]["ttft_ms"] is not None


def test_shared_experts_and_gqa(trace):
    m = tiny_model(shared=1, name="live-tiny-shared")
    _assert_same(live_prepared(trace, m))
