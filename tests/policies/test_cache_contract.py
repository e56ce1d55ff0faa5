"""Every registered cache policy, under every registered predictor, through the same invariants."""

from __future__ import annotations

import numpy as np
import pytest

from moesim.experiments.run import build_core
from moesim.hardware import estimate_profile
from moesim.policies.registries import CACHES, PREDICTORS
from tests.helpers import make_model, prepared, random_trace, simulate

L, E, K = 3, 12, 2


@pytest.fixture(scope="module")
def setting():
    rng = np.random.default_rng(11)
    model = make_model(L, E, K)
    return random_trace(rng, 3, [30, 18, 25], L, E, K), model, estimate_profile(model, "h100-pcie")


def _drive_checked(core, groups, capacity: int, scope: str):
    def check_capacity():
        for pool in core.pool._pools:
            assert len(pool) <= capacity

    accesses = hits = misses = 0
    for group in groups:
        core.start_group(group)
        check_capacity()
        for s, keys in enumerate(group.steps):
            if core.pre_attention_fires:
                core.pre_attention(s)
                check_capacity()
            core.gate(s)
            accesses += len(keys)
            hits += len(core.out.hit_keys)
            misses += len(core.out.miss_keys)
            assert not set(core.out.evicted) & set(keys), "evicted an expert of the current layer-step"
            assert all(k in core.pool for k in keys), "a demanded expert is not resident at its gate"
            core.after_gate(s)
            assert not set(core.out.evicted) & set(keys), (
                "a prefetch evicted an expert of the current layer-step"
            )
            check_capacity()
            core.end_step(s)
        core.end_group()
    core.finish()
    # the counters agree with the calls' outputs (every miss is fetched under the default handler)
    assert (core.accesses, core.present, core.misses) == (accesses, hits, misses)
    assert core.prefetch_issued == core.prefetch_useful + core.prefetch_unused


@pytest.mark.parametrize("policy", CACHES.names())
@pytest.mark.parametrize("predictor", PREDICTORS.names())
@pytest.mark.parametrize("scope,capacity", [("global", 2), ("global", 9), ("per-layer", 2), ("per-layer", 5)])
def test_cache_invariants(setting, policy, predictor, scope, capacity):
    trace, model, profile = setting
    p = prepared(
        trace, model, profile, predictor=predictor, horizon=2, policy=policy, capacity=capacity, scope=scope
    )
    _drive_checked(build_core(p), p.groups(), capacity, scope)


@pytest.mark.parametrize("policy", CACHES.names())
@pytest.mark.parametrize("predictor", PREDICTORS.names())
def test_run_accounting_and_determinism(setting, policy, predictor):
    trace, model, profile = setting
    p = prepared(trace, model, profile, predictor=predictor, horizon=2, policy=policy, capacity=8)
    a = simulate(p, record=True)
    b = simulate(p, record=True)
    assert a.summary == b.summary and a.decisions == b.decisions
    tr, pf, c = a.summary["traffic"], a.summary["prefetch"], a.summary["counts"]
    assert tr["bytes_h2d"] == tr["bytes_demand"] + tr["bytes_prefetch"]
    assert tr["bytes_demand"] == c["misses"] * model.expert_bytes
    assert pf["issued"] == pf["useful"] + pf["wasted"] + pf["cancelled"]
    assert pf["late"] == c["late_hits"] <= pf["useful"]
    assert tr["bytes_prefetch"] == (pf["issued"] - pf["cancelled"]) * model.expert_bytes
    assert c["hits"] + c["late_hits"] + c["misses"] == c["accesses"]


@pytest.mark.parametrize("policy", CACHES.names())
def test_capacity_below_k_is_an_error(setting, policy):
    from moesim.errors import MoesimInputError
    from moesim.policies.caches.base import CacheContext
    from moesim.policies.pool import ExpertPool

    with pytest.raises(MoesimInputError, match="cache.capacity"):
        ExpertPool(CACHES.get(policy), K - 1, "global", CacheContext(L, E, lambda k, p: 0), K)


def test_belady_bounds_every_policy(setting):
    trace, model, profile = setting
    for capacity in (2, 4, 8, 16):
        hits = {
            pol: build_core(prepared(trace, model, profile, policy=pol, capacity=capacity))
            for pol in CACHES.names()
        }
        from moesim.engine.decisions import run_decisions

        for pol, core in hits.items():
            run_decisions(core, prepared(trace, model, profile, policy=pol, capacity=capacity).groups())
        best = hits["belady"].present
        assert all(core.present <= best for core in hits.values()), {p: c.present for p, c in hits.items()}
