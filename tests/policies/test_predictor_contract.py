"""Every registered predictor through the same checks: well-formed, deterministic, and no peeking
at the future beyond what it declares."""

from __future__ import annotations

import numpy as np
import pytest

from moesim.policies.predictors.base import PRE_ATTENTION, PredictorSetup
from moesim.policies.registries import PREDICTORS
from moesim.traces.replay import iter_groups
from tests.helpers import cut_per_call, random_trace

L, E, K = 4, 10, 2


def _predictions(name: str, trace, fit, horizon: int):
    setup = PredictorSetup(L, E, K, 1, horizon, 0, fit_trace=fit, trace=trace)
    pred = PREDICTORS.get(name)(setup)
    out = []
    for group in iter_groups(trace, 1):
        out.append(("start", pred.start(group)))
        for s, keys in enumerate(group.steps):
            if pred.fires == PRE_ATTENTION:
                out.append((s, pred.predict(s)))
                pred.observe(s, keys)
            else:
                pred.observe(s, keys)
                out.append((s, pred.predict(s)))
    return out


@pytest.fixture(scope="module")
def traces():
    rng = np.random.default_rng(3)
    return random_trace(rng, 2, 20, L, E, K), rng


@pytest.mark.parametrize("name", PREDICTORS.names())
@pytest.mark.parametrize("horizon", [1, 3])
def test_well_formed_and_deterministic(traces, name, horizon):
    trace, _ = traces
    a = _predictions(name, trace, trace, horizon)
    assert a == _predictions(name, trace, trace, horizon)
    for s, preds in a:
        for target, keys, scores in preds:
            cur = -1 if s == "start" else s
            assert target > cur or (target == cur and PREDICTORS.get(name).fires == PRE_ATTENTION)
            layer = target % L
            assert all(layer * E <= k < (layer + 1) * E for k in keys), "keys outside the target layer"
            assert len(set(keys)) == len(keys)
            assert scores is None or len(scores) == len(keys)
    if not PREDICTORS.get(name).predicts:  # declared never to predict: sweeps share its runs
        assert all(not preds for _, preds in a)


@pytest.mark.parametrize("name", [n for n in PREDICTORS.names() if not PREDICTORS.get(n).lookahead])
def test_no_peeking_at_the_future(traces, name):
    """Scrambling the routing after a cut must not change any prediction made up to the cut."""
    trace, rng = traces
    cut_token = 9
    scrambled = trace.select([0, 1])
    for s in range(scrambled.num_sequences):
        rows = slice(int(scrambled.seq_offsets[s]) + cut_token + 1, int(scrambled.seq_offsets[s + 1]))
        n = rows.stop - rows.start
        scrambled.experts[rows] = np.stack(
            [[rng.choice(E, K, replace=False) for _ in range(L)] for _ in range(n)]
        )
        for side in (
            "weights",
            "hidden_states",
            "router_inputs",
            "router_probs",
        ):  # the future's side data too
            arr = getattr(scrambled, side)
            if arr is not None:
                arr[rows] = rng.permutation(arr[rows].reshape(-1)).reshape(arr[rows].shape)
    a = _predictions(name, trace, trace, 2)
    b = _predictions(name, scrambled, trace, 2)  # same training data; only the replay's future differs
    cut_step = (cut_token + 1) * L - 1

    def upto(preds):
        return [(s, p) for s, p in preds if s == "start" or s <= cut_step]

    # compare per sequence: each sequence's prefix up to the cut
    seq_len = len(trace.sequence(0)) * L
    a0, b0 = a[: 1 + seq_len], b[: 1 + seq_len]
    assert upto(a0) == upto(b0)


def test_oracle_declares_lookahead():
    assert PREDICTORS.get("oracle").lookahead


@pytest.mark.parametrize("name", PREDICTORS.names())
@pytest.mark.parametrize("n_pred,threshold", [(3, None), (E, 0.2)])
def test_a_whole_group_plan_is_the_cut_of_every_call(traces, name, n_pred, threshold):
    """``planned`` (optional: the fast path's prediction pass reads it instead of calling
    ``predict`` per step) must hand out exactly what the calls would, cut as the planner cuts."""
    trace, _ = traces
    calls = _predictions(name, trace, trace, 2)
    setup = PredictorSetup(L, E, K, 1, 2, 0, fit_trace=trace, trace=trace)
    pred = PREDICTORS.get(name)(setup)
    i = 0
    for group in iter_groups(trace, 1):
        pred.start(group)
        whole = pred.planned(n_pred, threshold)
        n = len(group.steps) + 1  # the start and one call per step
        assert whole is not None or name != "prophet"  # its batch inference offers one
        if whole is not None:
            want = [cut_per_call(preds, n_pred, threshold) for _, preds in calls[i : i + n]]
            sizes, keys = whole
            assert sizes.tolist() == [len(w) for w in want]
            assert keys.tolist() == [k for w in want for k in w]
        else:  # asked per step: keep its state as the calls left it
            for s, keys in enumerate(group.steps):
                pred.observe(s, keys)
                pred.predict(s)
        i += n
