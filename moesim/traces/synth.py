"""Synthetic routing traces with the structure real ones have.

Model: each (token, layer) picks the top-k experts of a score

    score = log popularity[domain, layer, :] + sigma * x[t, layer, :]

- popularity is Zipf-like over a random per-layer expert order, perturbed per domain
  (heavy-tailed load, different hot sets per domain);
- x is a stationary AR(1) process in t (coefficient ``reuse``), which gives consecutive tokens
  overlapping expert sets;
- x at layer l mixes x at layer l-1 through a fixed random expert permutation (``cross_layer``),
  so expert e at one layer predicts expert perm(e) at the next.
Router weights are the softmax of ``score / temperature`` over all E experts, kept for the top k
(not renormalised, like OLMoE), so they descend with rank.

The defaults were fitted on OLMoE's shape (16 layers, E=64, k=8) against the real OLMoE decode
trace (external-traces/helloimrizy-pages__opt): real vs synthetic, consecutive-token top-8 overlap
3.42 vs 3.38; top-10 experts' share of a layer's load 0.37 vs 0.34; correlation of per-domain
popularity 0.38 vs 0.44; top-1 mutual information between adjacent layers 1.26 vs 0.89 nats;
top-8 weight sum 0.38 vs 0.41.

Every sequence has its own ``numpy`` Generator derived from (seed, sequence index): sequence i is
the same whatever the number of sequences, and the same arguments give byte-identical arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from moesim.errors import fail
from moesim.traces.importers.common import offsets_from_lengths
from moesim.traces.trace import Trace, TraceMeta

DEFAULT_DOMAINS = ("general", "coding", "math", "reasoning")


def _ar1_scan(u: np.ndarray, phi: float) -> np.ndarray:
    """Stationary AR(1) along axis 0 driven by standard normals ``u``: x_t = phi x_{t-1} + sqrt(1-phi^2) u_t.

    A Hillis-Steele scan: log2(T) whole-array passes instead of a Python loop over tokens.
    """
    x = u * np.float32(np.sqrt(1.0 - phi * phi))
    x[0] = u[0]  # start in the stationary distribution
    shift, coef = 1, phi
    while shift < len(x):
        x[shift:] = x[shift:] + np.float32(coef) * x[:-shift]
        shift, coef = shift * 2, coef * coef
    return x


def _model(
    rng: np.random.Generator, num_domains: int, L: int, E: int, zipf_alpha: float, domain_skew: float
) -> tuple[np.ndarray, np.ndarray]:
    """(log popularity (D, L, E), cross-layer permutations (L, E))."""
    ranks = np.argsort(rng.random((L, E)), axis=1).astype(np.float64)  # random hot set per layer
    alpha = zipf_alpha * rng.uniform(0.8, 1.2, size=(L, 1))  # some layers more skewed than others
    base = -alpha * np.log1p(ranks)
    logpop = base[None] + domain_skew * rng.standard_normal((num_domains, L, E))
    logpop -= np.log(np.exp(logpop).sum(-1, keepdims=True))
    perms = np.stack([rng.permutation(E) for _ in range(L)])
    return logpop.astype(np.float32), perms


def _sequence(
    rng: np.random.Generator,
    logpop: np.ndarray,
    perms: np.ndarray,
    T: int,
    k: int,
    reuse: float,
    cross_layer: float,
    sigma: float,
    temperature: float,
) -> tuple[np.ndarray, np.ndarray]:
    L, E = logpop.shape
    x = _ar1_scan(rng.standard_normal((T, L, E), dtype=np.float32), reuse)
    c, c2 = np.float32(cross_layer), np.float32(np.sqrt(1.0 - cross_layer**2))
    for layer in range(1, L):  # carry the previous layer's state through a fixed expert permutation
        x[:, layer] = c * x[:, layer - 1][:, perms[layer]] + c2 * x[:, layer]
    score = logpop[None] + np.float32(sigma) * x
    top = np.argpartition(-score, k - 1, axis=-1)[..., :k]
    top_score = np.take_along_axis(score, top, axis=-1)
    order = np.argsort(-top_score, axis=-1, kind="stable")
    experts = np.take_along_axis(top, order, axis=-1)
    z = score / np.float32(temperature)
    z -= z.max(-1, keepdims=True)
    logz = np.log(np.exp(z).sum(-1, keepdims=True))
    weights = np.exp(np.take_along_axis(z, experts, axis=-1) - logz)
    return experts, weights.astype(np.float32)


def synthesize(
    num_sequences: int,
    tokens_per_sequence: int | Sequence[int],
    num_layers: int,
    num_experts: int,
    top_k: int,
    seed: int,
    *,
    domains: Sequence[str] = DEFAULT_DOMAINS,
    prefill_tokens: int | Sequence[int] = 0,
    zipf_alpha: float = 0.8,
    domain_skew: float = 1.0,
    reuse: float = 0.5,
    cross_layer: float = 0.98,
    sigma: float = 2.5,
    temperature: float = 3.0,
    weights: bool = True,
    model: str = "synthetic",
    source: str | None = None,
) -> Trace:
    """A synthetic trace; sequences are split into equal blocks over ``domains`` (in order)."""
    if num_sequences < 1 or num_layers < 1 or num_experts < 1 or not 1 <= top_k <= num_experts:
        fail(
            f"synthesize: need num_sequences, num_layers >= 1 and 1 <= top_k={top_k} <= num_experts={num_experts}"
        )
    if not 0.0 <= reuse < 1.0 or not 0.0 <= cross_layer < 1.0:
        fail(f"synthesize: reuse={reuse} and cross_layer={cross_layer} must be in [0, 1)")
    lengths = _per_sequence(tokens_per_sequence, num_sequences, "tokens_per_sequence")
    prompt = _per_sequence(prefill_tokens, num_sequences, "prefill_tokens")
    D = max(1, len(domains))
    logpop, perms = _model(
        np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,))),
        D,
        num_layers,
        num_experts,
        zipf_alpha,
        domain_skew,
    )
    seq_domain = (np.arange(num_sequences) * D // num_sequences).astype(np.int16)
    # Written straight into the final arrays, one sequence at a time: holding every sequence's
    # int64 ids and then concatenating cost ~4x the trace (2.9 GB for a million tokens).
    dtype = np.int16 if num_experts <= np.iinfo(np.int16).max else np.int32
    shape = (num_layers, top_k)
    dec_e = np.empty((int(lengths.sum()), *shape), dtype)
    dec_w = np.empty((int(lengths.sum()), *shape), np.float32) if weights else None
    pre_e = np.empty((int(prompt.sum()), *shape), dtype)
    d_at = p_at = 0
    for s in range(num_sequences):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, s)))
        total = int(prompt[s] + lengths[s])
        if total == 0:
            continue
        e, w = _sequence(
            rng, logpop[seq_domain[s]], perms, total, top_k, reuse, cross_layer, sigma, temperature
        )
        p, n = int(prompt[s]), int(lengths[s])
        pre_e[p_at : p_at + p] = e[:p]
        dec_e[d_at : d_at + n] = e[p:]
        if dec_w is not None:
            dec_w[d_at : d_at + n] = w[p:]
        d_at, p_at = d_at + n, p_at + p
    has_prefill = bool(prompt.sum())
    meta = TraceMeta(
        model=model,
        num_layers=num_layers,
        num_experts=num_experts,
        top_k=top_k,
        domains=tuple(domains),
        source=source
        or (
            f"synthetic: moesim.traces.synth.synthesize(seed={seed}, zipf_alpha={zipf_alpha}, "
            f"domain_skew={domain_skew}, reuse={reuse}, cross_layer={cross_layer}, sigma={sigma})"
        ),
    )
    return Trace(
        meta=meta,
        experts=dec_e,
        seq_offsets=offsets_from_lengths(lengths),
        seq_domain=seq_domain if len(domains) else np.full(num_sequences, -1, np.int16),
        weights=dec_w,
        prefill_experts=pre_e if has_prefill else None,
        prefill_offsets=offsets_from_lengths(prompt) if has_prefill else None,
    )


def _per_sequence(value: int | Sequence[int], n: int, name: str) -> np.ndarray:
    arr = np.full(n, value, dtype=np.int64) if np.isscalar(value) else np.asarray(value, dtype=np.int64)
    if arr.shape != (n,) or (arr < 0).any():
        fail(f"synthesize: {name} must be a non-negative int or one per sequence ({n})")
    return arr


# Keys a parametric ``--params`` YAML may set (the synthesize() arguments).
_PARAMETRIC_KEYS = {
    "sequences": int,
    "tokens": int,
    "num_layers": int,
    "num_experts": int,
    "top_k": int,
    "domains": list,
    "prefill_tokens": int,
    "zipf_alpha": float,
    "domain_skew": float,
    "reuse": float,
    "cross_layer": float,
    "sigma": float,
    "temperature": float,
    "weights": bool,
    "model": str,
}


def synthesize_from_params(
    params: object,
    seed: int,
    *,
    num_sequences: int | None = None,
    tokens: int | None = None,
    where: str | None = None,
) -> Trace:
    """A trace from generator parameters: a fitted set (moesim.traces.fit.FittedParams or its YAML
    document, ``kind: moesim.synth.fitted``) or a parametric one (``kind: moesim.synth.parametric``,
    keys = the synthesize() arguments: sequences, tokens, num_layers, num_experts, top_k, domains,
    zipf_alpha, domain_skew, reuse, cross_layer, sigma, temperature, ...).

    ``num_sequences`` / ``tokens`` override the parameters' own counts.
    """
    from moesim.traces import fit

    where = where or "generator parameters"
    if isinstance(params, dict) and params.get("kind") == fit.PARAMS_KIND:
        params = fit.FittedParams.from_dict(params, where)
    if isinstance(params, fit.FittedParams):
        doms, lens = fit.plan_sequences(params, num_sequences, tokens, seed)
        return fit.generate(
            params,
            doms,
            lens,
            seed,
            source=f"synthetic: moesim trace synth, generator fitted to {params.source} (seed {seed})",
            extra={"fit": {k: v for k, v in params.fit.items() if k != "history"}},
        )
    if not isinstance(params, dict):
        fail(f"{where}: expected a mapping of generator parameters")
    assert isinstance(params, dict)
    kind = params.get("kind", "moesim.synth.parametric")
    if kind != "moesim.synth.parametric":
        fail(f"{where}: kind {kind!r} is unknown; use moesim.synth.parametric or {fit.PARAMS_KIND}")
    unknown = sorted(set(params) - set(_PARAMETRIC_KEYS) - {"kind"})
    if unknown:
        fail(f"{where}: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(_PARAMETRIC_KEYS)}")
    kw: dict = {}
    for key, typ in _PARAMETRIC_KEYS.items():
        if key not in params:
            continue
        val = params[key]
        ok = isinstance(val, typ) or (typ is float and isinstance(val, int) and not isinstance(val, bool))
        if not ok or (typ is int and isinstance(val, bool)):
            fail(f"{where}: {key} must be {typ.__name__}, got {val!r}")
        kw[key] = val
    n = num_sequences if num_sequences is not None else kw.pop("sequences", 16)
    kw.pop("sequences", None)
    t = tokens if tokens is not None else kw.pop("tokens", 128)
    kw.pop("tokens", None)
    shape = {k: kw.pop(k) for k in ("num_layers", "num_experts", "top_k") if k in kw}
    if "domains" in kw:
        kw["domains"] = tuple(str(d) for d in kw["domains"])
    return synthesize(
        n,
        t,
        shape.get("num_layers", 16),
        shape.get("num_experts", 64),
        shape.get("top_k", 8),
        seed,
        **kw,
    )
