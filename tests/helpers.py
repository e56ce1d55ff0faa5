"""Small builders shared by the engine/policy tests: random traces, hand-made models, one-call runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from moesim.experiments.run import Prepared, build_core, run_prepared
from moesim.experiments.scenario import CacheConfig, PredictorConfig, Scenario
from moesim.models.spec import AttentionSpec, ModelSpec
from moesim.traces.trace import Trace, TraceMeta


def make_model(L: int, E: int, k: int, shared: int = 0) -> ModelSpec:
    return ModelSpec(
        name=f"test-{L}x{E}k{k}",
        hf_id="test/none",
        num_layers=L,
        moe_layer_indices=tuple(range(L)),
        num_experts=E,
        top_k=k,
        num_shared_experts=shared,
        hidden_size=1024,
        expert_intermediate_size=512,
        shared_expert_intermediate_size=512 * shared,
        attention=AttentionSpec("gqa", 8, 8, 128),
        vocab_size=1000,
        dtype="bf16",
        expert_bytes=3 * 1024 * 512 * 2,
        source="test",
    )


def random_trace(
    rng: np.random.Generator, seqs: int, tokens: int | list[int], L: int, E: int, k: int, skew: float = 1.2
) -> Trace:
    lens = [tokens] * seqs if isinstance(tokens, int) else list(tokens)
    n = sum(lens)
    pop = rng.zipf(skew + 1.0, size=(L, E)).astype(float) if skew else np.ones((L, E))
    ex = np.empty((n, L, k), np.int16)
    for layer in range(L):
        p = pop[layer] / pop[layer].sum()
        for i in range(n):
            ex[i, layer] = rng.choice(E, k, replace=False, p=p)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    trace = Trace(TraceMeta("test", L, E, k), ex, offsets, np.full(len(lens), -1, np.int16))
    # Hidden states for the predictors that read them (drawn from their own generator: the
    # caller's rng, hence every routing-only golden number, is untouched).
    trace.hidden_states = teacher_hidden_states(ex, E)
    return trace


def teacher_hidden_states(experts: np.ndarray, E: int, H: int = 16, seed: int = 0) -> np.ndarray:
    """(N, L, H) float16 hidden states from which the routing is linearly recoverable: each token's
    state at layer l is the rank-weighted sum of fixed random directions of its experts, plus noise
    (a linear teacher, so hidden-state predictors have something to learn)."""
    N, L, k = experts.shape
    rng = np.random.default_rng(seed)
    dirs = rng.standard_normal((L, E, H))
    dirs /= np.linalg.norm(dirs, axis=2, keepdims=True)
    weights = 1.0 / (1.0 + np.arange(k))
    h = np.einsum("nlkh,k->nlh", dirs[np.arange(L)[None, :, None], experts.astype(np.int64)], weights)
    h += 0.05 * rng.standard_normal(h.shape)
    return h.astype(np.float16)


def prepared(
    trace: Trace,
    model: ModelSpec,
    profile,
    predictor: str = "none",
    horizon: int = 1,
    policy: str = "lru",
    capacity: int = 16,
    scope: str = "global",
    batch: int = 1,
    prompt_tokens: int = 64,
    bypass: bool = False,
    params: dict | None = None,
) -> Prepared:
    sc = Scenario(
        name="test",
        predictor=PredictorConfig(name=predictor, horizon=horizon),
        cache=CacheConfig(
            policy=policy, capacity=capacity, scope=scope, bypass=bypass, params=dict(params or {})
        ),
        batch=batch,
        prompt_tokens=prompt_tokens,
    )
    k, E = model.top_k, model.num_experts
    return Prepared(
        sc, model, trace, Path("<memory>"), profile, prompt_tokens, min(E, k * batch), min(E, k * batch)
    )


def simulate(p: Prepared, record: bool = False):
    return run_prepared(p, record=record)


def decisions(p: Prepared, predictor: str | None = None):
    from moesim.engine.decisions import run_decisions

    return run_decisions(build_core(p, predictor_name=predictor, record=True), p.groups())


def cut_per_call(predictions, n_pred: int, threshold: float | None) -> list[int]:
    """The planner's cut of one call's predictions (moesim.engine.fast.predictions.plan_arrays)."""
    out: list[int] = []
    for _t, keys, scores in predictions:
        cand = keys[:n_pred]
        if threshold is not None and scores is not None:
            cand = [k for k, sc in zip(cand, scores[:n_pred]) if sc >= threshold]
        out.extend(cand)
    return out
