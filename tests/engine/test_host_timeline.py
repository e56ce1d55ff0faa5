"""Issue 13's timing model against hand-computed numbers: host and GPU timelines, the runtime
overheads and the whole token. Every profile here is a set of constant tables so each expected
figure can be added up by hand (the sums are written out next to each assertion)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from moesim.experiments.scenario import RuntimeConfig
from moesim.hardware.profile import LatencyProfile
from moesim.hardware.table import Table
from moesim.traces.trace import Trace, TraceMeta
from tests.helpers import make_model, prepared, simulate

GPU = {"norm": 0.1, "attention": 0.2, "gate": 0.1, "expert_ffn": 0.3, "shared_expert_ffn": 0.0}
H2D_MS = 10.0


def _const(op: str, ms: float) -> Table:
    return Table(op, (), (), ms, {"kind": "estimated", "formula": "hand-set test value", "inputs": {}})


def _profile(**extra: float) -> LatencyProfile:
    ms = {**GPU, "h2d_pinned": H2D_MS, **extra}
    return LatencyProfile("hand", "test", [_const(op, v) for op, v in ms.items()])


def _trace(rows: list[list[int]], E: int = 4) -> Trace:
    """One sequence; ``rows[t][layer]`` is the one expert (k=1) token t routes to in that layer."""
    ex = np.array(rows, dtype=np.int16)[:, :, None]
    n, L = ex.shape[:2]
    return Trace(TraceMeta("hand", L, E, 1), ex, np.array([0, n]), np.array([-1], np.int16))


def _run(rows, profile, model=None, **runtime):
    model = model or make_model(len(rows[0]), 4, 1)
    p = prepared(_trace(rows), model, profile, capacity=4)
    p.scenario.runtime = RuntimeConfig(**runtime)
    return simulate(p).tokens


HOST = {"host_norm": 0.5, "host_attention": 0.5, "host_gate": 0.5, "host_expert_ffn": 0.5}


def test_host_bound_step():
    # One MoE layer; token 0 misses expert 0, token 1 hits it.
    # Token 0: norm issued at 0.5 (ends 0.6), attention at 1.0 (1.2), gate at 1.5 (1.6); routing read
    # back at 1.6, the copy runs 1.6 -> 11.6; the expert is issued at 2.1, waits for its weights and
    # runs 11.6 -> 11.9. Token 1 starts at 11.9: the host issues each op 0.5 ms after the last, so
    # the GPU ends norm 12.5, attention 13.1, gate 13.5; the expert is issued at 14.0 and ends 14.3.
    tok = _run([[0], [0]], _profile(**HOST))
    assert tok["tpot_ms"].tolist() == pytest.approx([11.9, 2.4], abs=1e-12)
    assert tok["stall_ms"].tolist() == pytest.approx([9.5, 0.0], abs=1e-12)  # 11.6 - 2.1
    # host-bound: 2.4 ms against the 0.7 ms the GPU needs (0.1 + 0.2 + 0.1 + 0.3)
    gpu_only = _run([[0], [0]], _profile())
    assert gpu_only["tpot_ms"].tolist() == pytest.approx([10.7, 0.7], abs=1e-12)


def test_host_runs_ahead_during_a_copy_stall():
    # Two MoE layers. Token 0: both miss. Token 1: layer 0 misses (expert 2), layer 1 hits.
    # Token 0, L0: as above, the expert ends 11.9 (its copy 1.6 -> 11.6). L0's expert was issued at
    # 2.1, so the host issued L1's norm, attention and gate at 2.6, 3.1, 3.6 during the stall: on the
    # GPU they run back to back from 11.9 (ends 12.0, 12.2, 12.3). Routing read back at 12.3, copy
    # 12.3 -> 22.3, expert issued 12.8, runs 22.3 -> 22.6.
    # Token 1 starts at 22.6 (the host reads the token back): L0 norm/attention/gate issued at 23.1,
    # 23.6, 24.1 (GPU ends 23.2, 23.8, 24.2), copy 24.2 -> 34.2, expert issued 24.7, runs 34.2 -> 34.5.
    # L1's ops were issued at 25.2, 25.7, 26.2, long before: the GPU runs them 34.5 -> 34.9 with no
    # host gap; only the hit's launch, issued after the read-back at 34.9 + 0.5 = 35.4, waits; ends 35.7.
    tok = _run([[0, 1], [2, 1]], _profile(**HOST))
    assert tok["tpot_ms"].tolist() == pytest.approx([22.6, 13.1], abs=1e-12)
    assert tok["stall_ms"].tolist() == pytest.approx([9.5 + 9.5, 9.5], abs=1e-12)
    assert (tok["tpot_ms"] - tok["compute_ms"] - tok["stall_ms"]).abs().max() < 1e-9


def test_layer_and_token_overheads():
    # No host tables; 0.5 ms per token before its first kernel, 1.0 ms per layer after the gate.
    # Token 0: host at 0.5, GPU 0.5 -> 0.9 (norm, attention, gate); policy work until 1.9, then the
    # copy 1.9 -> 11.9 and the expert 11.9 -> 12.2. Token 1 (hit): 0.5 + 0.4 + 1.0 + 0.3 = 2.2.
    tok = _run([[0], [0]], _profile(), token_overhead_us=500.0, layer_overhead_us=1000.0)
    assert tok["tpot_ms"].tolist() == pytest.approx([12.2, 2.2], abs=1e-12)
    assert tok["stall_ms"].tolist() == pytest.approx([10.0, 0.0], abs=1e-12)


def test_launch_us_prices_each_kernel():
    # launch_us = 100: norm 1 kernel, GQA attention 5, gate 3, expert 3 (moesim.hardware.costs)
    # -> host 0.1, 0.5, 0.3, 0.3 ms. Hit token (token 1, starting at t):
    # norm issued t+0.1 ends t+0.2; attention issued t+0.6 ends t+0.8; gate issued t+0.9 ends t+1.0;
    # expert issued t+1.3, ends t+1.6.
    tok = _run([[0], [0]], _profile(), launch_us=100.0)
    assert tok["tpot_ms"].iloc[1] == pytest.approx(1.6, abs=1e-12)


def test_preset_values_and_explicit_keys_override():
    a = _run([[0], [0]], _profile(), preset="eager-pytorch")
    b = _run([[0], [0]], _profile(), layer_overhead_us=103.0)
    assert a["tpot_ms"].tolist() == b["tpot_ms"].tolist()
    assert a["tpot_ms"].iloc[1] == pytest.approx(0.7 + 0.103, abs=1e-12)
    c = _run([[0], [0]], _profile(), preset="eager-pytorch", layer_overhead_us=0.0)
    assert c["tpot_ms"].iloc[1] == pytest.approx(0.7, abs=1e-12)


WHOLE = {"embedding": 0.05, "dense_ffn": 0.4, "lm_head": 0.25, "sampling": 0.05}


def test_whole_token_adds_dense_layers_embedding_head_and_sampling():
    # 3 layers, only layer 1 routes: dense layer 0 before it, dense layer 2 after it.
    model = replace(
        make_model(1, 4, 1), num_layers=3, moe_layer_indices=(1,), extra={"dense_intermediate_size": 64}
    )
    prof = _profile(**WHOLE)
    # dense layer = norm 0.1 + attention 0.2 + norm 0.1 (no post_attention_norm table) + MLP 0.4 = 0.8
    # hit token: embedding 0.05 + dense 0.8 + MoE layer 0.7 + dense 0.8 + LM head 0.25 + sampling 0.05
    tok = _run([[0], [0]], prof, model=model, whole_token=True)
    assert tok["tpot_ms"].iloc[1] == pytest.approx(2.65, abs=1e-12)
    assert tok["stall_ms"].iloc[1] == 0.0
    # the miss token: the copy is issued at the MoE gate (0.05 + 0.8 + 0.4 = 1.25) and lands at 11.25;
    # expert 11.25 -> 11.55, then the tail 1.1: 12.65
    assert tok["tpot_ms"].iloc[0] == pytest.approx(12.65, abs=1e-12)
    off = _run([[0], [0]], prof, model=model)
    assert off["tpot_ms"].tolist() == pytest.approx([10.7, 0.7], abs=1e-12)


def test_whole_token_with_host_time():
    # host 0.5 per op as above plus embedding / dense MLP / LM head / sampling issue times; one MoE layer
    # and no dense layer. Hit token from t: embedding issued t+0.5 (ends t+0.55); norm t+1.0 (1.1);
    # attention t+1.5 (1.7); gate t+2.0 (2.1); read back 2.1; expert issued 2.6 (2.9); LM head and
    # sampling issued together at 2.6 + 0.2 + 0.1 = 2.9 -> GPU 2.9 + 0.3 = 3.2.
    prof = _profile(**HOST, **WHOLE, host_embedding=0.5, host_lm_head=0.2, host_sampling=0.1)
    model = replace(make_model(1, 4, 1), extra={})
    tok = _run([[0], [0]], prof, model=model, whole_token=True)
    assert tok["tpot_ms"].iloc[1] == pytest.approx(3.2, abs=1e-12)


def test_defaults_are_the_gpu_timeline_exactly():
    rng = np.random.default_rng(3)
    rows = rng.integers(0, 4, size=(12, 3)).tolist()
    base = _run(rows, _profile())
    zero = _run(rows, _profile(), preset="none", layer_overhead_us=0.0, token_overhead_us=0.0, launch_us=0.0)
    assert base.equals(zero)


def test_random_runs_keep_tpot_equal_compute_plus_stall():
    # with every part of the model on, over policies and predictors that move copies around
    from moesim.hardware import estimate_profile
    from moesim.hardware.runtime import with_token_ops

    rng = np.random.default_rng(11)
    model = make_model(3, 8, 2, shared=1)
    rows = [[list(rng.choice(8, 2, replace=False)) for _ in range(3)] for _ in range(20)]
    ex = np.array(rows, dtype=np.int16)
    trace = Trace(TraceMeta("hand", 3, 8, 2), ex, np.array([0, 9, 20]), np.array([-1, -1], np.int16))
    prof = with_token_ops(estimate_profile(model, "h100-pcie"), model, "estimated:h100-pcie")
    for predictor, policy in (("none", "lru"), ("oracle", "lfu"), ("prev-token", "lru")):
        p = prepared(trace, model, prof, predictor=predictor, policy=policy, capacity=6)
        p.scenario.runtime = RuntimeConfig(launch_us=20.0, token_overhead_us=50.0, whole_token=True)
        tok = simulate(p).tokens
        assert (tok["tpot_ms"] - tok["compute_ms"] - tok["stall_ms"]).abs().max() < 1e-9
        again = simulate(p).tokens
        assert tok.equals(again)
