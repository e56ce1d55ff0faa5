"""Prophet's batch inference (whole groups up front in batched torch) gives exactly the per-step
path's predictions: targets, keys in order and scores, bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from moesim.policies.predictors import _prophet_batch  # noqa: E402
from moesim.policies.predictors._nets import ProphetNet  # noqa: E402
from moesim.policies.predictors._prophet_batch import BLOCK, QUANTUM  # noqa: E402
from moesim.policies.predictors.base import PredictorSetup  # noqa: E402
from moesim.policies.predictors.prophet import Prophet, ProphetModel, _build_net  # noqa: E402
from moesim.traces.replay import Group, iter_groups  # noqa: E402
from tests.helpers import cut_per_call, random_trace  # noqa: E402


def _model(
    L: int, E: int, k: int, d: int = 128, ff: int = 256, heads: int = 3, seed: int = 0
) -> ProphetModel:
    """An untrained Prophet with non-trivial weights (equality, not accuracy, is under test)."""
    cfg = {"L": L, "E": E, "k": k, "threads": 1, "context": 3, "heads": heads, "d_model": d}
    cfg |= {"layers": 2, "attn_heads": 4, "ff": ff, "dropout": 0.1}
    torch.manual_seed(seed)
    net = _build_net(cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    net.eval()
    return ProphetModel(cfg, net, [0.9, 1.3, 1.1, 0.7][:heads])


def _predictor(trace, model, batch, horizon, batched, **params) -> Prophet:
    m = trace.meta
    setup = PredictorSetup(m.num_layers, m.num_experts, m.top_k, batch, horizon, 0, trace=trace)
    setup.params = {"model": model, "batch_inference": batched, **params}
    return Prophet(setup)


def _replay(pred: Prophet, groups) -> list:
    """Every call's predictions, in the policy core's order (start, then observe + predict)."""
    out = []
    for g in groups:
        out.append(("start", g.index, pred.start(g)))
        for s, keys in enumerate(g.steps):
            pred.observe(s, keys)
            out.append((s, g.index, pred.predict(s)))
    return out


@pytest.fixture(scope="module")
def olmoe_like():
    rng = np.random.default_rng(7)
    trace = random_trace(rng, 7, [9, 5, 12, 3, 8, 1, 6], 16, 64, 8)
    return trace, _model(16, 64, 8)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("horizon", [1, 2, 3])
def test_batched_equals_per_step(olmoe_like, batch, horizon):
    trace, model = olmoe_like
    ref = _replay(_predictor(trace, model, batch, horizon, False), iter_groups(trace, batch))
    fast = _predictor(trace, model, batch, horizon, True)
    got = _replay(fast, iter_groups(trace, batch))
    assert fast._pre is not None  # the batched path did run
    assert got == ref  # targets, keys in order, scores: identical
    groups = list(iter_groups(trace, batch))
    assert len(groups) >= 3
    # the end of every group is predicted (the last target is the group's last step)
    for g in groups:
        n = len(g.steps)
        ts = [t for s, gi, preds in ref if gi == g.index for t, _, _ in preds]
        assert ts and max(ts) == n - 1 and len(ts) == n
    # scores are real rankings: descending, and not all tied
    some = [sc for _, _, preds in ref for _, _, sc in preds][5]
    assert some == sorted(some, reverse=True) and some[0] > some[-1]


def test_per_layer_horizons_and_tiny_groups():
    """Per-layer horizons (a firing with zero or several targets, firings out of target order) and
    groups shorter than the horizon, on an odd-sized model (rows not a multiple of the SIMD width)."""
    rng = np.random.default_rng(3)
    trace = random_trace(rng, 5, [4, 1, 7, 2, 5], 4, 10, 2)
    model = _model(4, 10, 2, d=24, ff=40, heads=4)
    hpl = {"horizon_per_layer": [1, 4, 2, 3]}
    for batch in (1, 2):
        ref = _replay(_predictor(trace, model, batch, 1, False, **hpl), iter_groups(trace, batch))
        got = _replay(_predictor(trace, model, batch, 1, True, **hpl), iter_groups(trace, batch))
        assert got == ref
        assert any(len(p) > 1 for _, _, p in ref) and any(s != "start" and not p for s, _, p in ref)


def test_many_blocks_and_bucket_padding(monkeypatch):
    """A group longer than one network block, at batch 4 (set widths vary: several buckets). The
    block is shrunk so a small trace spans several (the default block's rows are checked below)."""
    monkeypatch.setattr(_prophet_batch, "BLOCK", 64)
    rng = np.random.default_rng(11)
    trace = random_trace(rng, 4, [40, 33, 38, 21], 8, 16, 2)
    model = _model(8, 16, 2, d=32, ff=64)
    assert _prophet_batch.BLOCK < 40 * 8  # several network blocks per group
    for batch in (1, 4):
        ref = _replay(_predictor(trace, model, batch, 2, False), iter_groups(trace, batch))
        got = _replay(_predictor(trace, model, batch, 2, True), iter_groups(trace, batch))
        assert got == ref


def _dynamic_replay(pred: Prophet, trace, blocks: int) -> list:
    """A continuous-batching group: steps arrive one token-block (L layer-steps) at a time while
    the predictor runs, as ``moesim.engine.batching`` appends them."""
    L = trace.meta.num_layers
    keys = (
        np.asarray(trace.sequence(0), np.int64) + (np.arange(L) * trace.meta.num_experts)[None, :, None]
    ).reshape(-1, trace.meta.top_k)
    g = Group(0, (0,), [], [], [], L, dynamic=True)
    g.steps.extend(keys[:L].tolist())
    out = [("start", pred.start(g))]
    for s in range(blocks * L):
        if s == len(g.steps):
            g.steps.extend(keys[s : s + L].tolist())
        pred.observe(s, g.steps[s])
        out.append((s, pred.predict(s)))
    return out


def test_dynamic_groups_fall_back_to_per_step(olmoe_like):
    trace, model = olmoe_like
    for h in (1, 3):
        fast = _predictor(trace, model, 1, h, True)
        got = _dynamic_replay(fast, trace, 4)
        assert fast._pre is None  # a group still forming is predicted step by step
        assert got == _dynamic_replay(_predictor(trace, model, 1, h, False), trace, 4)
        assert any(p for _, p in got)


def test_other_observed_keys_switch_to_per_step(olmoe_like):
    """Observing routing other than the group's (a caller feeding its own keys) leaves the
    precomputed predictions for the per-step path, which reads what was observed."""
    trace, model = olmoe_like
    g = next(iter_groups(trace, 1))
    alt = [list(k) for k in g.steps]
    alt[5] = [k + 1 if (k + 1) % 64 else k - 1 for k in alt[5]]

    def run(batched):
        pred = _predictor(trace, model, 1, 1, batched)
        out = [pred.start(g)]
        for s, keys in enumerate(alt):
            pred.observe(s, keys)
            out.append(pred.predict(s))
        return out, pred

    got, fast = run(True)
    ref, _ = run(False)
    assert fast._pre is None and got == ref
    fresh = _predictor(trace, model, 1, 1, True)
    assert _replay(fresh, [g])[7][2] != got[7]  # the altered step does change step 6's prediction


def test_network_rows_do_not_depend_on_the_batch():
    """The GEMM property the equality rests on, for the default shapes: a sample's logits are the
    same whether it is evaluated in a padded block of QUANTUM samples or anywhere in a full block."""
    model = _model(16, 64, 8)
    rng = np.random.default_rng(0)
    ids = torch.from_numpy(rng.integers(0, 16 * 64, size=(BLOCK, 6, 8)))
    ids[:, 1:3, 5:] = 16 * 64
    layers = torch.from_numpy(rng.integers(0, 16, size=(BLOCK, 6)))
    with torch.no_grad():
        for heads in ((1,), (2, 3), (1, 2, 3)):
            full = model.net.infer(ids, layers, heads)
            for off in (0, QUANTUM, 5 * QUANTUM, BLOCK - QUANTUM):
                part = model.net.infer(ids[off : off + QUANTUM], layers[off : off + QUANTUM], heads)
                assert torch.equal(part, full[off : off + QUANTUM])


def test_infer_is_the_training_forward():
    """``infer`` (inference only) is ``forward``'s function: same logits up to float rounding."""
    model = _model(16, 64, 8)
    rng = np.random.default_rng(1)
    ids = torch.from_numpy(rng.integers(0, 16 * 64 + 1, size=(64, 6, 8)))
    layers = torch.from_numpy(rng.integers(0, 16, size=(64, 6)))
    assert isinstance(model.net, ProphetNet)
    with torch.no_grad():
        full = model.net(ids, layers)
        for heads in ((1,), (3,), (1, 2, 3)):
            part = model.net.infer(ids, layers, heads)
            assert torch.allclose(part, full[:, [d - 1 for d in heads]], atol=1e-4, rtol=1e-4)


def test_batch_inference_param(olmoe_like):
    from moesim.errors import MoesimInputError

    trace, model = olmoe_like
    with pytest.raises(MoesimInputError, match="batch_inference"):
        _predictor(trace, model, 1, 1, "yes")
    assert "batch_inference" in Prophet.params


@pytest.mark.parametrize("batch", [1, 2])
def test_whole_runs_identical(olmoe_like, batch):
    """A simulated run (policy core + timing model) with batch inference on and off: the same
    summary, token and layer tables and decision log."""
    from moesim.experiments.run import Prepared, run_prepared
    from moesim.experiments.scenario import CacheConfig, PredictorConfig, Scenario
    from moesim.hardware import load_profile
    from moesim.models import get_model

    trace, model = olmoe_like
    spec = get_model("olmoe-1b-7b")
    profile = load_profile("estimated:h100-pcie", spec)

    def run(batched: bool):
        params = {"model": model, "batch_inference": batched}
        sc = Scenario(
            name="t",
            predictor=PredictorConfig(name="prophet", horizon=2, overprovision=2, params=params),
            cache=CacheConfig(policy="lru", capacity=40),
            batch=batch,
        )
        p = Prepared(sc, spec, trace, trace.path or Path("<memory>"), profile, 64, 8 * batch, 8 * batch)
        return run_prepared(p, record=True)

    a, b = run(True), run(False)
    assert a.summary["prefetch"]["issued"] > 0
    drop = ("provenance",)
    assert {k: v for k, v in a.summary.items() if k not in drop} == {
        k: v for k, v in b.summary.items() if k not in drop
    }
    assert a.tokens.equals(b.tokens) and a.layers.equals(b.layers)
    assert a.decisions == b.decisions and a.decisions


@pytest.mark.parametrize("batch,horizon", [(1, 1), (1, 3), (3, 2)])
@pytest.mark.parametrize("n_pred,threshold", [(8, None), (3, None), (64, 0.5), (10, 0.45), (1, 0.99)])
def test_group_cut_equals_the_cut_of_each_call(olmoe_like, batch, horizon, n_pred, threshold):
    """``Prophet.planned`` (the fast path's whole-group plan) is the planner's cut of every call."""
    trace, model = olmoe_like
    pred = _predictor(trace, model, batch, horizon, True)
    kept = 0
    for g in iter_groups(trace, batch):
        first = pred.start(g)
        planned = pred.planned(n_pred, threshold)
        assert planned is not None
        sizes, keys = planned
        calls = [first] + [pred.predict(s) for s in range(len(g.steps))]
        want = [cut_per_call(c, n_pred, threshold) for c in calls]
        assert sizes.tolist() == [len(w) for w in want]
        assert keys.tolist() == [k for w in want for k in w]
        kept += len(keys)
    assert kept > 0


def test_group_cut_is_none_on_the_per_step_path(olmoe_like):
    trace, model = olmoe_like
    pred = _predictor(trace, model, 1, 1, False)
    pred.start(next(iter(iter_groups(trace, 1))))
    assert pred.planned(8, None) is None


def test_blocks_on_several_threads_give_the_same_probabilities(monkeypatch):
    """head_probs evaluates its blocks on one thread per core: each block must come out exactly as
    on one thread (the default-size model, a ragged last block)."""
    model = _model(16, 64, 8)
    rng = np.random.default_rng(2)
    n = 5 * BLOCK + 37
    ids = rng.integers(0, 16 * 64 + 1, size=(n, 6, 8))
    layers = rng.integers(0, 16, size=(n, 6))
    threads: set[str] = set()
    infer = model.net.infer

    def spy(*args):
        import threading

        threads.add(threading.current_thread().name)
        return infer(*args)

    monkeypatch.setattr(model.net, "infer", spy)
    runs = {}
    for count in ("1", "3"):
        monkeypatch.setenv(_prophet_batch.THREADS_ENV, count)
        threads.clear()
        runs[count] = _prophet_batch.head_probs(model, ids, layers, (1, 2, 3))
        assert len(threads) == 1 if count == "1" else len(threads) >= 2
    assert runs["1"].tobytes() == runs["3"].tobytes()
