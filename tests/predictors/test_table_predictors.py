"""Markov, ST-MoE, MoE-Infinity, FineMoE and the noisy oracle: they find the structure they model."""

from __future__ import annotations

import numpy as np
import pytest
from predictor_builders import chain_trace, teacher_trace

from moesim.evaluation.harness import build_predictor, evaluate
from moesim.hardware import estimate_profile
from moesim.policies.registries import PREDICTORS
from moesim.traces.trace import Trace, TraceMeta
from tests.helpers import make_model, prepared, simulate


def _recall(name, train, test, h=1, **params):
    pred = build_predictor(name, train, test, h, params, 0)
    return evaluate(pred, test, 2).acc.per_horizon()[h]["recall_at_k"]


@pytest.fixture(scope="module")
def chain():
    t = chain_trace(10, 60, noise=0.02, seed=2)  # enough tokens that FineMoE's store covers the pairs
    return t.select(range(8)), t.select([8, 9])


@pytest.mark.parametrize("name", ["markov", "st-moe", "finemoe"])
@pytest.mark.parametrize("h", [1, 3])
def test_cross_layer_tables_find_a_deterministic_chain(chain, name, h):
    train, test = chain
    assert _recall(name, train, test, h) > 0.8 > _recall("popularity", train, test, h) + 0.4


def test_st_moe_learns_online_without_warm_start():
    t = chain_trace(6, 30, noise=0.0, seed=4)
    pred = build_predictor("st-moe", None, t, 1, {"warm_start": False}, 0)
    acc = evaluate(pred, t, 2).acc  # requests replay in order: the table fills as it goes
    assert acc.per_horizon()[1]["recall_at_k"] > 0.8


def _requests_trace() -> Trace:
    """Two kinds of request using disjoint expert halves (E=8, k=2): a request-level matcher wins."""
    rng = np.random.default_rng(0)
    L, E, k, T = 2, 8, 2, 20
    rows, kinds = [], [0, 1, 0, 1, 0, 1]
    for kind in kinds:
        pool = np.arange(4) + 4 * kind
        rows.append(np.stack([[rng.choice(pool, k, replace=False) for _ in range(L)] for _ in range(T)]))
    ex = np.concatenate(rows).astype(np.int16)
    return Trace(
        TraceMeta("req", L, E, k),
        ex,
        np.arange(len(kinds) + 1, dtype=np.int64) * T,
        np.full(len(kinds), -1, np.int16),
    )


def test_moe_infinity_matches_the_request_kind():
    t = _requests_trace()
    train, test = t.select(range(4)), t.select([4, 5])
    # picking the right half of the experts: recall@2 of 4 candidates ~0.5, global popularity ~0.25
    assert _recall("moe-infinity", train, test) > 0.45 > _recall("popularity", train, test) + 0.15


def test_top_n_stable_matches_a_stable_argsort():
    from moesim.policies.predictors.finemoe import top_n_stable

    rng = np.random.default_rng(0)
    for _ in range(50):
        v = rng.integers(0, 5, size=40).astype(float)
        for n in (1, 3, 10, 40, 50):
            assert top_n_stable(v, n).tolist() == np.argsort(-v, kind="stable")[:n].tolist()


def test_finemoe_uses_router_weights(chain):
    train, test = chain
    pred = build_predictor("finemoe", train, test, 1, {"store": 50, "neighbours": 3}, 0)
    assert len(pred.maps) == 50
    from moesim.traces.replay import build_group

    pred.start(build_group(test, 0, (0,)))
    w = pred._weights(0, [0, 1])
    assert np.allclose(w, test.weights[0, 0])


@pytest.mark.parametrize("acc", [0.0, 0.5, 0.9, 1.0])
def test_noisy_oracle_hits_its_accuracy(acc):
    t = chain_trace(4, 60, L=4, E=32, k=4, noise=0.3, seed=5)
    r = _recall("noisy-oracle", t, t, 2, accuracy=acc)
    assert r == pytest.approx(acc, abs=0.04)


def test_noisy_oracle_is_seeded_and_independent_of_horizon():
    t = chain_trace(2, 20, L=4, E=16, k=2, seed=6)

    def ranking(seed, h):
        pred = build_predictor("noisy-oracle", t, t, h, {"accuracy": 0.5}, seed)
        from moesim.traces.replay import build_group

        pred.start(build_group(t, 0, (0,)))
        return [pred.scores(-1, x).tolist() for x in range(8, 12)]

    assert ranking(1, 1) == ranking(1, 3)  # the same mistakes for the same target
    assert ranking(1, 1) != ranking(2, 1)


@pytest.mark.parametrize("name", PREDICTORS.names())
def test_every_predictor_runs_batched(name):
    """Batch 2 (union layer-steps, sequences of unequal length) through the simulator."""
    trace = teacher_trace(3, 12, L=3, E=8, k=2, H=12, seed=1)
    trace = trace.select([0, 1, 2])
    trace.seq_offsets = np.array([0, 12, 20, 36], np.int64)  # unequal lengths
    model = make_model(3, 8, 2)
    p = prepared(
        trace, model, estimate_profile(model, "h100-pcie"), predictor=name, horizon=2, batch=2, capacity=8
    )
    a = simulate(p).summary
    assert a == simulate(p).summary
    assert a["counts"]["accesses"] > 0


def test_markov_counts_skip_distances_longer_than_a_sequence():
    """A sequence shorter than a transition distance has no pairs at that distance (hypothesis
    found the slice's negative stop counting from the end)."""
    from moesim.policies.predictors.markov import transition_counts
    from tests.helpers import random_trace

    trace = random_trace(np.random.default_rng(0), 2, [2, 5], 1, 4, 1)
    counts, pop = transition_counts(trace, (1, 3))
    assert counts[0].sum() == 1 + 4 and counts[1].sum() == 0 + 2  # pairs per sequence: n - d if positive
    assert pop.sum() == 7
