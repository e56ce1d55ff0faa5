"""Popularity at batch > 1 plans per sequence: every sequence gets the same ranking, so handing the
planner k x batch experts per layer-step prefetched whole layers and flushed the cache."""

from __future__ import annotations

import numpy as np
import pytest

from moesim.errors import MoesimInputError
from moesim.experiments.run import prepare, run_prepared
from moesim.experiments.scenario import load_scenario
from moesim.policies.predictors.base import PredictorSetup
from moesim.policies.registries import PREDICTORS
from moesim.traces.replay import iter_groups
from tests.helpers import random_trace

L, E, K = 4, 16, 2


def _first(batch: int, params: dict | None = None) -> list[int]:
    tr = random_trace(np.random.default_rng(0), 4, 6, L, E, K)
    pred = PREDICTORS.get("popularity")(PredictorSetup(L, E, K, batch, 1, 0, tr, params or {}))
    group = next(iter(iter_groups(tr, batch, False)))
    (_, keys, scores) = pred.start(group)[0]
    assert scores is not None and len(scores) == len(keys)
    return keys


def test_batch_one_hands_the_planner_the_whole_ranking():
    assert len(_first(1)) == E


def test_batch_plans_one_sequence_top_k():
    keys = _first(4)
    assert len(keys) == K
    assert keys == _first(1)[:K]  # the same most popular experts, in the same order
    assert len(_first(4, {"per_sequence": False})) == E


def test_per_sequence_must_be_a_bool():
    with pytest.raises(MoesimInputError, match="per_sequence"):
        _first(4, {"per_sequence": "no"})


def _run(*sets: str) -> dict:
    base = ["trace.max_sequences=16", "batch=8", "cache.capacity=800", "predictor.name=popularity"]
    return run_prepared(prepare(load_scenario(None, [*base, *sets]))).summary


def test_batch_eight_no_longer_flushes_the_cache():
    """OLMoE (E = 64 = k x 8): the k x batch plan is every expert of the next layer, 1,024 per decode
    step for an 800-slot cache that holds the batch's working set."""
    old = _run("predictor.params={per_sequence: false}")
    new = _run()
    none = _run("predictor.name=none")
    assert old["counts"]["hits"] == 0 and none["counts"]["hit_rate"] > 0.5
    assert new["counts"]["hit_rate"] >= none["counts"]["hit_rate"]
    assert new["latency"]["tpot_ms"]["mean"] < 0.5 * old["latency"]["tpot_ms"]["mean"]
    notes = " ".join(old["provenance"]["notes"])
    assert "plan cannot fit the cache: 1,024 experts" in notes and "800 slots" in notes
    assert not any("cannot fit" in n for n in new["provenance"]["notes"])


def test_a_larger_top_n_at_batch_is_reported_not_ignored():
    from moesim.experiments.holdout import plan_notes

    sc = load_scenario(None, ["batch=8", "predictor.top_n=32"])
    notes = plan_notes(sc, 32, 64, 64, 8)
    assert any("popularity plans per sequence: 8 experts" in n and "= 32" in n for n in notes)
    assert plan_notes(load_scenario(None, ["batch=8"]), 64, 64, 64, 8) == []  # the default top_n
    assert plan_notes(load_scenario(None, ["predictor.top_n=32"]), 32, 8, 64, 8) == []  # batch 1: ranked
