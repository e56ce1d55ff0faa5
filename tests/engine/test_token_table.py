"""The per-step rows (tokens table) add up to the run's totals, including the churn columns."""

from __future__ import annotations

import numpy as np
import pytest

from moesim.hardware import estimate_profile
from tests.helpers import make_model, prepared, random_trace, simulate

L, E, K = 4, 16, 2


@pytest.mark.parametrize(
    "predictor,horizon", [("none", 1), ("oracle", 2), ("popularity", 1), ("prev-token", 4)]
)
@pytest.mark.parametrize("batch", [1, 2])
def test_token_rows_add_up_to_the_summary(predictor, horizon, batch):
    model = make_model(L, E, K)
    trace = random_trace(np.random.default_rng(5), 5, [12, 7, 20, 9, 15], L, E, K)
    p = prepared(
        trace, model, estimate_profile(model, "h100-pcie"), predictor, horizon, capacity=10, batch=batch
    )
    r = simulate(p)
    tok, c, ca, tr = r.tokens, r.summary["counts"], r.summary["cache"], r.summary["traffic"]
    assert len(tok) == sum(len(g.active) for g in p.groups())
    assert ca["evictions"] > 0 and ca["refetches"] > 0  # a cache this small churns
    assert int(tok["evictions"].sum()) == ca["evictions"]
    assert int(tok["refetches"].sum()) == ca["refetches"]
    assert int(tok["bytes_h2d"].sum()) == tr["bytes_h2d"]
    assert int((tok["hits"] + tok["late_hits"] + tok["misses"]).sum()) == c["accesses"]


@pytest.mark.parametrize(
    "predictor,horizon,capacity", [("oracle", 2, 8), ("popularity", 1, 12), ("none", 1, 6)]
)
def test_recording_a_timeline_changes_no_number(predictor, horizon, capacity):
    """Batch-1 runs without a timeline take the executor's short path (ready times only); with a
    timeline they take the general one. Both must give the same run."""
    from moesim.experiments.run import run_prepared

    model = make_model(L, E, K)
    trace = random_trace(np.random.default_rng(9), 4, [15, 9, 22, 11], L, E, K)
    p = prepared(trace, model, estimate_profile(model, "h100-pcie"), predictor, horizon, capacity=capacity)
    p.scenario.executor = "sim"  # this pins the simulation executor's two paths to each other
    short, general = run_prepared(p), run_prepared(p, timeline=True)
    assert general.timeline and short.summary == general.summary
    assert short.tokens.equals(general.tokens) and short.layers.equals(general.layers)
    assert short.summary["prefetch"]["late"] > 0 or predictor == "none"  # the link does back up here
