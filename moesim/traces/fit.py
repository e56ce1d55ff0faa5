"""Synthetic traces fitted to a real one (``moesim trace synth --like TRACE``).

The generator draws each (token, layer)'s top-k from

    score[t, l, :] = A[domain, l, :] + sigma_seq * slow[t, l, :] + sigma_tok * fast[t, l, :]
                     + cross_layer * sum_{i in experts[t, l-1]} W[l][i, :]          (l >= 1)

- ``A``: log-popularity per (domain, layer), calibrated by iterative proportional fitting so the
  synthetic expert frequencies equal the real ones (noise flattens selection, so A is sharper than
  the real frequencies). Heavy tail and domain mixture come from the real trace itself.
- ``slow``: an AR(1) process over tokens per (layer, expert) with coefficient ``persistence`` near 1:
  a request's lasting preference for some experts, the long-range reuse plateau of real traces.
- ``fast``: an AR(1) process with coefficient ``reuse``: the quick decay of overlap between nearby
  tokens (consecutive-token reuse).
- ``W[l]``: the real trace's layer-to-layer transition structure, the log-lift of expert j at layer
  l given expert i at layer l-1, the strongest successors of each expert kept (a Markov step: the
  previous layer's experts raise their usual successors).
Router weights are the softmax of ``score / temperature`` over all E, kept for the top k.

Fitting is by simulation of a subset of the real sequences with fixed random numbers, so it is
deterministic: ``cross_layer`` by secant steps on the mean adjacent-layer top-1 mutual information;
then the four temporal coordinates by Levenberg-Marquardt on the layer-mean consecutive-token
overlap at lags 1..96 (which pins the reuse-distance structure LRU and Belady feel), re-calibrating
``A`` at every evaluation and accepting only improving steps; ``temperature`` by bisection on the
mean top-k weight sum. docs/trace-format.md has the figures on the OLMoE trace.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moesim.errors import fail
from moesim.traces.importers.common import offsets_from_lengths
from moesim.traces.trace import Trace, TraceMeta

PARAMS_KIND = "moesim.synth.fitted"
PARAMS_VERSION = 1
FIT_LAGS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96)
_SUCCESSORS = 8  # transition entries kept per expert
_NONE = "(none)"  # pseudo-domain for sequences without a label


@dataclass
class FittedParams:
    model: str
    num_layers: int
    num_experts: int
    top_k: int
    domains: tuple[str, ...]  # may end with "(none)" for unlabelled sequences
    domain_lengths: dict[str, list[int]]  # real decode lengths per domain (the length distribution)
    log_popularity: np.ndarray  # (D, L, E) calibrated A
    sigma_seq: np.ndarray  # (L,) scale of the slow, per-sequence component
    sigma_tok: np.ndarray  # (L,) scale of the fast, per-token component
    reuse: np.ndarray  # (L,) AR(1) coefficient of the fast component
    persistence: np.ndarray  # (L,) AR(1) coefficient of the slow component (1 = constant per sequence)
    cross_layer: float  # strength of the layer-to-layer transition bonus
    transitions: np.ndarray  # (L, E, E) log-lift of successor j at layer l given i at l-1; [0] unused
    temperature: float = 1.0
    weights: bool = True
    source: str = ""
    fit: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------------- YAML round trip

    def to_dict(self) -> dict[str, Any]:
        succ = []
        for layer in range(1, self.num_layers):
            w = self.transitions[layer]
            rows = []
            for i in range(self.num_experts):
                nz = np.flatnonzero(w[i])
                order = nz[np.argsort(-w[i, nz], kind="stable")]
                rows.append([[int(j), round(float(w[i, j]), 5)] for j in order])
            succ.append(rows)
        return {
            "kind": PARAMS_KIND,
            "version": PARAMS_VERSION,
            "model": self.model,
            "num_layers": self.num_layers,
            "num_experts": self.num_experts,
            "top_k": self.top_k,
            "domains": list(self.domains),
            "domain_lengths": {d: [int(x) for x in v] for d, v in self.domain_lengths.items()},
            "sigma_seq": [round(float(v), 5) for v in self.sigma_seq],
            "sigma_tok": [round(float(v), 5) for v in self.sigma_tok],
            "reuse": [round(float(v), 5) for v in self.reuse],
            "persistence": [round(float(v), 6) for v in self.persistence],
            "cross_layer": round(float(self.cross_layer), 5),
            "temperature": round(float(self.temperature), 5),
            "weights": self.weights,
            "source": self.source,
            "fit": self.fit,
            "log_popularity": [
                [[round(float(v), 4) for v in row] for row in dom] for dom in self.log_popularity
            ],
            "successors": succ,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any], where: str) -> FittedParams:
        try:
            if doc.get("kind") != PARAMS_KIND or doc.get("version") != PARAMS_VERSION:
                raise ValueError(f"kind/version must be {PARAMS_KIND!r}/{PARAMS_VERSION}")
            L, E, k = int(doc["num_layers"]), int(doc["num_experts"]), int(doc["top_k"])
            domains = tuple(str(d) for d in doc["domains"])
            A = np.asarray(doc["log_popularity"], dtype=np.float64)
            if A.shape != (len(domains), L, E):
                raise ValueError(f"log_popularity has shape {A.shape}, expected {(len(domains), L, E)}")
            W = np.zeros((L, E, E))
            succ = doc.get("successors", [])
            if len(succ) != L - 1:
                raise ValueError(f"successors needs {L - 1} layers, got {len(succ)}")
            for layer, rows in enumerate(succ, 1):
                if len(rows) != E:
                    raise ValueError(f"successors[{layer - 1}] needs {E} rows")
                for i, row in enumerate(rows):
                    for j, w in row:
                        W[layer, i, int(j)] = float(w)
            vec = {}
            for key in ("sigma_seq", "sigma_tok", "reuse", "persistence"):
                vec[key] = np.asarray(doc[key], dtype=np.float64)
                if vec[key].shape != (L,):
                    raise ValueError(f"{key} needs {L} values")
            lengths = {str(d): [int(x) for x in v] for d, v in doc["domain_lengths"].items()}
            if set(lengths) != set(domains):
                raise ValueError("domain_lengths must name exactly the domains")
            if not (1 <= k <= E) or not all(0 <= r < 1 for key in ("reuse", "persistence") for r in vec[key]):
                raise ValueError("need 1 <= top_k <= num_experts and reuse, persistence in [0, 1)")
            if (vec["sigma_seq"] < 0).any() or (vec["sigma_tok"] < 0).any():
                raise ValueError("sigma_seq and sigma_tok must be >= 0")
            c = float(doc["cross_layer"])
            if not c >= 0:
                raise ValueError("cross_layer must be >= 0")
            return cls(
                model=str(doc.get("model", "synthetic")),
                num_layers=L,
                num_experts=E,
                top_k=k,
                domains=domains,
                domain_lengths=lengths,
                log_popularity=A,
                sigma_seq=vec["sigma_seq"],
                sigma_tok=vec["sigma_tok"],
                reuse=vec["reuse"],
                persistence=vec["persistence"],
                cross_layer=c,
                transitions=W,
                temperature=float(doc.get("temperature", 1.0)),
                weights=bool(doc.get("weights", True)),
                source=str(doc.get("source", "")),
                fit=dict(doc.get("fit", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            fail(f"{where}: not valid fitted generator parameters ({type(exc).__name__}: {exc})")
        raise AssertionError  # unreachable


def save_params(params: FittedParams, path: str | Path) -> None:
    import yaml

    from moesim.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(params.to_dict(), sort_keys=False, width=200))


def load_params(path: str | Path) -> dict[str, Any]:
    """The YAML document (fitted or parametric; see synth.synthesize_from_params)."""
    from moesim.yamlio import load_file

    path = Path(path)
    doc = load_file(path, "synthetic-trace parameter file")
    if not isinstance(doc, dict):
        fail(f"{path}: expected a YAML mapping of generator parameters")
    return doc


# ---------------------------------------------------------------------------------- generation


def _ar1(u: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Stationary AR(1) along axis 0 with a coefficient per layer (axis 1), unit variance.

    x_t = phi x_{t-1} + sqrt(1 - phi^2) u_t, as a Hillis-Steele scan (log2(T) whole-array passes).
    """
    coef = np.asarray(phi, dtype=np.float32)[None, :, None]
    x = u * np.sqrt(1.0 - coef * coef)
    x[0] = u[0]
    shift = 1
    while shift < len(x):
        x[shift:] = x[shift:] + coef * x[:-shift]
        shift, coef = shift * 2, coef * coef
    return x


def _sequence(
    rng: np.random.Generator, A: np.ndarray, p: FittedParams, T: int, want_scores: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """(experts (T, L, k), scores (T, L, E) or None) of one sequence whose domain has log-popularity A."""
    L, E = A.shape
    k = p.top_k
    slow = _ar1(rng.standard_normal((T, L, E), dtype=np.float32), p.persistence)
    fast = _ar1(rng.standard_normal((T, L, E), dtype=np.float32), p.reuse)
    score = (
        A[None].astype(np.float32)
        + p.sigma_seq.astype(np.float32)[None, :, None] * slow
        + p.sigma_tok.astype(np.float32)[None, :, None] * fast
    )
    experts = np.empty((T, L, k), dtype=np.int64)
    beta = np.float32(p.cross_layer)
    for layer in range(L):
        if layer and beta:
            # Markov step across layers: the previous layer's experts raise their usual successors
            score[:, layer] += beta * p.transitions[layer].astype(np.float32)[experts[:, layer - 1]].sum(1)
        experts[:, layer] = _topk(score[:, layer], k)
    return experts, (score if want_scores else None)


def _topk(score: np.ndarray, k: int) -> np.ndarray:
    top = np.argpartition(-score, k - 1, axis=-1)[..., :k]
    order = np.argsort(-np.take_along_axis(score, top, axis=-1), axis=-1, kind="stable")
    return np.take_along_axis(top, order, axis=-1)


def _weights(score: np.ndarray, experts: np.ndarray, temperature: float) -> np.ndarray:
    z = score / np.float32(temperature)
    z = z - z.max(-1, keepdims=True)
    logz = np.log(np.exp(z).sum(-1, keepdims=True))
    return np.exp(np.take_along_axis(z, experts, axis=-1) - logz).astype(np.float32)


def generate(
    p: FittedParams,
    seq_domain: Sequence[int],
    lengths: Sequence[int],
    seed: int,
    *,
    model: str | None = None,
    source: str | None = None,
    extra: dict | None = None,
) -> Trace:
    """A trace of len(lengths) sequences; sequence s draws from its own (seed, s) generator."""
    if len(seq_domain) != len(lengths) or not len(lengths):
        fail("synth: need one domain index per sequence and at least one sequence")
    L, E, k = p.num_layers, p.num_experts, p.top_k
    ex, ws = [], []
    for s, (d, T) in enumerate(zip(seq_domain, lengths)):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(7, s)))
        if T == 0:
            ex.append(np.zeros((0, L, k), np.int64))
            ws.append(np.zeros((0, L, k), np.float32))
            continue
        e, score = _sequence(rng, p.log_popularity[d], p, int(T), p.weights)
        ex.append(e)
        if score is not None:
            ws.append(_weights(score, e, p.temperature))
    domains = tuple(d for d in p.domains if d != _NONE)
    out_dom = np.asarray(
        [domains.index(p.domains[d]) if p.domains[d] != _NONE else -1 for d in seq_domain], dtype=np.int16
    )
    meta = TraceMeta(
        model=model or p.model,
        num_layers=L,
        num_experts=E,
        top_k=k,
        domains=domains,
        source=source
        or f"synthetic: moesim.traces.fit.generate(seed={seed}) from parameters fitted to {p.source}",
        extra=extra or {},
    )
    dtype = np.int16 if np.iinfo(np.int16).max >= E else np.int32
    return Trace(
        meta=meta,
        experts=np.concatenate(ex).astype(dtype),
        seq_offsets=offsets_from_lengths(np.asarray(lengths, dtype=np.int64)),
        seq_domain=out_dom,
        weights=np.concatenate(ws) if p.weights else None,
    )


def plan_sequences(
    p: FittedParams, num_sequences: int | None, tokens: int | None, seed: int
) -> tuple[list[int], list[int]]:
    """(domain index, length) per sequence: the real mix by default, or N sequences of T tokens.

    With N given, domains keep the real proportions (largest remainder, in domain order) and
    lengths are T, or drawn from the domain's real lengths (seeded) when T is not given.
    """
    counts = np.asarray([len(p.domain_lengths[d]) for d in p.domains], dtype=np.float64)
    if num_sequences is None:
        doms = [d for d in range(len(p.domains)) for _ in range(int(counts[d]))]
        lens = [x for dname in p.domains for x in p.domain_lengths[dname]]
    else:
        if num_sequences < 1:
            fail(f"--sequences must be >= 1, got {num_sequences}")
        quota = counts / counts.sum() * num_sequences
        n = np.floor(quota).astype(int)
        for i in np.argsort(-(quota - n), kind="stable")[: num_sequences - n.sum()]:
            n[i] += 1
        doms = [d for d in range(len(p.domains)) for _ in range(int(n[d]))]
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(8,)))
        lens = [int(rng.choice(p.domain_lengths[p.domains[d]])) for d in doms]
    if tokens is not None:
        if tokens < 1:
            fail(f"--tokens must be >= 1, got {tokens}")
        lens = [tokens] * len(doms)
    return doms, lens


# ------------------------------------------------------------------------------------- fitting


@dataclass
class _Target:
    overlap: np.ndarray  # (L, lags)
    freq: np.ndarray  # (D, L, E) selection frequency per slot (sums to k over E)
    adj_mi: float
    weight_sum: float | None


def _overlap(seqs: Sequence[np.ndarray], L: int, E: int, lags: Sequence[int]) -> np.ndarray:
    tot = np.zeros((L, len(lags)))
    n = np.zeros(len(lags))
    for seq in seqs:
        T = len(seq)
        if T < 2:
            continue
        m = np.zeros((T, L, E), dtype=bool)
        np.put_along_axis(m, seq.astype(np.int64), True, axis=-1)
        for j, d in enumerate(lags):
            if d < T:
                tot[:, j] += (m[d:] & m[:-d]).sum(-1).sum(0)
                n[j] += T - d
    return tot / np.maximum(n, 1)[None, :]


def _freq(seqs: Sequence[np.ndarray], doms: Sequence[int] | np.ndarray, D: int, L: int, E: int) -> np.ndarray:
    out = np.zeros((D, L, E))
    ntok = np.zeros(D)
    offs = (np.arange(L) * E)[None, :, None]
    for seq, d in zip(seqs, doms):
        out[d] += np.bincount((seq.astype(np.int64) + offs).ravel(), minlength=L * E).reshape(L, E)
        ntok[d] += len(seq)
    return out / np.maximum(ntok, 1)[:, None, None]


def _adjacent_mi(seqs: Sequence[np.ndarray], L: int, E: int) -> float:
    from moesim.traces.information import mutual_information_bits

    top1 = np.concatenate([s[:, :, 0] for s in seqs if len(s)]).astype(np.int64)
    return (
        float(np.mean([mutual_information_bits(top1[:, i], top1[:, i + 1], E, E)[1] for i in range(L - 1)]))
        if L > 1
        else 0.0
    )


def _transitions(trace: Trace) -> np.ndarray:
    """Log-lift of expert j at layer l given expert i at layer l-1, top successors per expert kept.

    lift = P(i at l-1 and j at l) / (P(i at l-1) P(j at l)) from top-k set co-occurrence; only the
    strongest positive log-lifts are kept (a sparse, explainable structure), the rest are 0.
    """
    L, E = trace.meta.num_layers, trace.meta.num_experts
    C = np.zeros((L, E, E))
    f = np.zeros((L, E))
    n = 0
    for s in range(trace.num_sequences):
        seq = np.asarray(trace.sequence(s), dtype=np.int64)
        if not len(seq):
            continue
        m = np.zeros((len(seq), L, E), dtype=np.float64)
        np.put_along_axis(m, seq, 1.0, axis=-1)
        f += m.sum(0)
        for layer in range(1, L):
            C[layer] += np.einsum("ti,tj->ij", m[:, layer - 1], m[:, layer])
        n += len(seq)
    W = np.zeros((L, E, E))
    for layer in range(1, L):
        expected = np.outer(f[layer - 1], f[layer]) / max(1, n)
        loglift = np.log((C[layer] + 1.0) / (expected + 1.0))
        keep = np.argsort(-loglift, axis=1, kind="stable")[:, :_SUCCESSORS]
        rows = np.arange(E)[:, None]
        W[layer, rows, keep] = np.maximum(loglift[rows, keep], 0.0)
    return W


def _domains_of(trace: Trace) -> tuple[tuple[str, ...], np.ndarray]:
    dom = np.asarray(trace.seq_domain, dtype=np.int64)
    names = tuple(trace.meta.domains)
    if (dom < 0).any():
        names = (*names, _NONE)
        dom = np.where(dom < 0, len(names) - 1, dom)
    return names, dom


# Fitted coordinates, shared by all layers: log sigma_tok, log sigma_seq, logit(reuse / 0.95),
# logit(persistence / 0.999), log cross_layer. Per-layer differences come from the calibrated
# popularity. Layers are coupled through the transition bonus and the popularity calibration
# reacts to every change, so gradient steps overshoot; a pattern search that only accepts
# improvements is slower but never diverges.
_COORDS = ("log sigma_tok", "log sigma_seq", "logit reuse", "logit persistence", "log cross_layer")


def _with_v(q: FittedParams, v: np.ndarray) -> FittedParams:
    r = FittedParams(**{**q.__dict__})
    L = q.num_layers
    r.sigma_tok = np.full(L, math.exp(v[0]))
    r.sigma_seq = np.full(L, math.exp(v[1]))
    r.reuse = np.full(L, 0.95 / (1.0 + math.exp(-v[2])))
    r.persistence = np.full(L, 0.999 / (1.0 + math.exp(-v[3])))
    r.cross_layer = math.exp(v[4]) if L > 1 else 0.0
    return r


@dataclass
class _Fitter:
    """The fit's moving parts: what it simulates, the target it matches and the best parameters seen."""

    base: FittedParams
    target: _Target
    sub_dom: list[int]
    sub_len: list[int]
    seed: int
    lags: tuple[int, ...]
    pseudo: np.ndarray
    logf_real: np.ndarray
    history: list[dict[str, Any]] = field(default_factory=list)
    best: tuple[float, FittedParams] | None = None

    def __post_init__(self) -> None:
        # the nearest lags weigh most: consecutive-token reuse is what small caches live on
        self.lag_w = np.array([3.0 if d == 1 else 1.5 if d == 2 else 1.0 for d in self.lags])

    def simulate(self, q: FittedParams) -> list[np.ndarray]:
        L, k = q.num_layers, q.top_k
        out = []
        for i, (d, T) in enumerate(zip(self.sub_dom, self.sub_len)):
            rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(9, i)))
            out.append(
                _sequence(rng, q.log_popularity[d], q, T, False)[0] if T else np.zeros((0, L, k), np.int64)
            )
        return out

    def calibrate(self, q: FittedParams, sims: list[np.ndarray]) -> None:
        """One IPF step on every (domain, layer) popularity vector (log-frequency correction)."""
        D = len(q.domains)
        logf_syn = np.log(_freq(sims, self.sub_dom, D, q.num_layers, q.num_experts) + self.pseudo)
        q.log_popularity = q.log_popularity + (self.logf_real - logf_syn)
        q.log_popularity -= q.log_popularity.max(-1, keepdims=True)

    def evaluate(self, v: np.ndarray, A: np.ndarray) -> tuple[float, FittedParams, np.ndarray, float]:
        q = _with_v(self.base, v)
        L, E, target = q.num_layers, q.num_experts, self.target
        q.log_popularity = A.copy()
        for _ in range(3):  # re-calibrate popularity for these parameters (warm start)
            self.calibrate(q, self.simulate(q))
        sims = self.simulate(q)
        ov = _overlap(sims, L, E, self.lags)
        mi = _adjacent_mi(sims, L, E) if L > 1 else 0.0
        # layer-mean overlap curve (what LRU/Belady feel) + relative adjacent-MI error
        lag_w = self.lag_w
        obj = float(np.sqrt((lag_w * (ov - target.overlap).mean(0) ** 2).sum() / lag_w.sum()))
        if L > 1 and target.adj_mi > 0:  # weighted low: reuse structure matters most for caching
            obj += 0.25 * abs(mi - target.adj_mi) / target.adj_mi
        self.history.append(
            {"objective": obj, "lag1_overlap": float(ov[:, 0].mean()), "adjacent_mi_bits": mi}
        )
        return obj, q, ov, mi

    def keep(self, obj: float, q: FittedParams) -> None:
        if self.best is None or obj < self.best[0]:
            self.best = (obj, q)

    def fit_transitions(self, v: np.ndarray, A: np.ndarray) -> np.ndarray:
        """Stage 1: transition strength alone (``v[4]``, in place), by secant steps in log beta on
        the adjacent-layer MI. Returns the popularity to start stage 2 from."""
        goal = self.target.adj_mi
        pts: list[tuple[float, float]] = []
        for _ in range(4):
            obj, q, _, mi = self.evaluate(v, A)
            self.keep(obj, q)
            A = q.log_popularity
            pts.append((v[4], mi))
            if abs(mi - goal) < 0.02 * goal:
                break
            if len(pts) >= 2 and abs(pts[-1][1] - pts[-2][1]) > 1e-6 and pts[-1][0] != pts[-2][0]:
                slope = (pts[-1][1] - pts[-2][1]) / (pts[-1][0] - pts[-2][0])
                dv = (goal - mi) / slope if slope > 0 else 0.5
            else:
                dv = 0.7 if mi < goal else -0.7
            v[4] += float(np.clip(dv, -1.0, 1.0))
        return A

    def lm_round(self, state: _LMState, h: float = 0.2) -> bool:
        """Stage 2, one Levenberg-Marquardt round on the four temporal coordinates. A step is taken
        only if it lowers the objective (else the damping grows and the step shrinks), so the fit
        cannot diverge. Returns whether a step was taken."""
        A = state.q.log_popularity
        lag_w = self.lag_w
        r = (state.ov - self.target.overlap).mean(0)
        J = np.zeros((len(self.lags), 4))
        for j in range(4):
            vv = state.v.copy()
            vv[j] += h
            J[:, j] = (self.evaluate(vv, A)[2].mean(0) - state.ov.mean(0)) / h
        Jw, rw = J * np.sqrt(lag_w)[:, None], r * np.sqrt(lag_w)
        JtJ = Jw.T @ Jw
        for _ in range(3):
            lam = state.lam_scale * np.trace(JtJ) / 4 + 1e-9
            cand = state.v.copy()
            cand[:4] += np.clip(-np.linalg.solve(JtJ + lam * np.eye(4), Jw.T @ rw), -0.5, 0.5)
            cand[0] = np.clip(cand[0], math.log(0.05), math.log(20.0))
            cand[1] = np.clip(cand[1], math.log(1e-3), math.log(20.0))
            cand[2:4] = np.clip(cand[2:4], -8.0, 8.0)
            c_obj, c_q, c_ov, c_mi = self.evaluate(cand, A)
            if c_obj < state.obj:
                state.v, state.obj, state.q, state.ov, state.mi = cand, c_obj, c_q, c_ov, c_mi
                self.keep(c_obj, c_q)
                state.lam_scale = max(0.02, state.lam_scale / 2)
                return True
            state.lam_scale *= 4
        return False


@dataclass
class _LMState:
    v: np.ndarray
    obj: float
    q: FittedParams
    ov: np.ndarray
    mi: float
    lam_scale: float = 0.1


def _start(
    trace: Trace, names: tuple[str, ...], dom: np.ndarray, lengths: np.ndarray, logf_real: np.ndarray
) -> FittedParams:
    """The generator's starting parameters for ``trace``."""
    L, E, k, D = trace.meta.num_layers, trace.meta.num_experts, trace.meta.top_k, len(names)
    return FittedParams(
        model=trace.meta.model,
        num_layers=L,
        num_experts=E,
        top_k=k,
        domains=names,
        domain_lengths={names[d]: [int(x) for x in lengths[dom == d]] for d in range(D)},
        log_popularity=logf_real - logf_real.max(-1, keepdims=True),
        sigma_seq=np.full(L, 0.5),
        sigma_tok=np.full(L, 1.0),
        reuse=np.full(L, 0.4),
        persistence=np.full(L, 0.98),
        cross_layer=0.3 if L > 1 else 0.0,
        transitions=_transitions(trace) if L > 1 else np.zeros((L, E, E)),
        temperature=1.0,
        weights=trace.weights is not None,
        source=f"{trace.path or trace.meta.model} ({trace.num_sequences} sequences, {trace.num_tokens} decode tokens)",
    )


def _coordinates(p: FittedParams) -> np.ndarray:
    return np.array(
        [
            math.log(p.sigma_tok[0]),
            math.log(p.sigma_seq[0]),
            math.log(p.reuse[0] / (0.95 - p.reuse[0])),
            math.log(p.persistence[0] / (0.999 - p.persistence[0])),
            math.log(p.cross_layer) if p.cross_layer > 0 else 0.0,
        ]
    )


def fit_trace(
    trace: Trace,
    *,
    rounds: int = 6,
    fit_sequences: int = 96,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> FittedParams:
    """Fit the generator's parameters to ``trace`` (deterministic for the same trace and seed)."""
    L, E = trace.meta.num_layers, trace.meta.num_experts
    if trace.num_tokens < 4:
        fail("synth --like: the trace needs at least a few decode tokens to fit")
    names, dom = _domains_of(trace)
    D = len(names)
    lengths = np.diff(np.asarray(trace.seq_offsets))
    real_seqs = [np.asarray(trace.sequence(s)) for s in range(trace.num_sequences)]
    lags = tuple(d for d in FIT_LAGS if d < max(2, int(lengths.max())))
    weight_sum = None
    if trace.weights is not None:
        weight_sum = float(np.asarray(trace.weights, dtype=np.float64).sum(-1).mean())
    target = _Target(
        overlap=_overlap(real_seqs, L, E, lags),
        freq=_freq(real_seqs, dom, D, L, E),
        adj_mi=_adjacent_mi(real_seqs, L, E),
        weight_sum=weight_sum,
    )
    # the fit simulates a spread-out subset of the real sequences (their domains and lengths)
    sub = np.arange(0, trace.num_sequences, max(1, math.ceil(trace.num_sequences / fit_sequences)))
    # smoothed real frequencies: an expert never seen in a domain still gets a small chance
    pseudo = 0.5 / np.maximum(1, np.bincount(dom, weights=lengths, minlength=D))[:, None, None]
    logf_real = np.log(target.freq + pseudo)
    fitter = _Fitter(
        base=_start(trace, names, dom, lengths, logf_real),
        target=target,
        sub_dom=[int(dom[s]) for s in sub],
        sub_len=[int(lengths[s]) for s in sub],
        seed=seed,
        lags=lags,
        pseudo=pseudo,
        logf_real=logf_real,
    )
    v = np.array([0.0, math.log(0.5), math.log(0.4 / 0.55), math.log(0.98 / 0.019), math.log(0.5)])
    A = fitter.fit_transitions(v, fitter.base.log_popularity) if L > 1 else fitter.base.log_popularity
    state = _LMState(v, *fitter.evaluate(v, A))
    fitter.keep(state.obj, state.q)
    for rnd in range(rounds):
        accepted = fitter.lm_round(state)
        if log is not None:
            log(
                f"fit round {rnd}: objective {state.obj:.4f}; lag-1 overlap {state.ov[:, 0].mean():.3f} vs real "
                f"{target.overlap[:, 0].mean():.3f}, adjacent MI {state.mi:.3f} vs {target.adj_mi:.3f} bits"
            )
        if not accepted and state.lam_scale > 100:
            break
    assert fitter.best is not None
    p = fitter.best[1]
    # No further popularity passes here: the kept parameters are exactly the evaluated ones.
    if target.weight_sum is not None:
        p.temperature = _fit_temperature(p, fitter.sub_dom, fitter.sub_len, seed, target.weight_sum)
    final = fitter.simulate(p)
    ov = _overlap(final, L, E, lags)
    p.fit = {
        "rounds": rounds,
        "evaluations": len(fitter.history),
        "objective": round(fitter.best[0], 5),
        "coordinates": dict(zip(_COORDS, [round(float(x), 5) for x in _coordinates(p)])),
        "fit_sequences": len(sub),
        "seed": seed,
        "lags": list(lags),
        "real_overlap_by_lag": [round(float(v), 4) for v in target.overlap.mean(0)],
        "synthetic_overlap_by_lag": [round(float(v), 4) for v in ov.mean(0)],
        "real_adjacent_mi_bits": round(target.adj_mi, 4),
        "synthetic_adjacent_mi_bits": round(_adjacent_mi(final, L, E), 4) if L > 1 else 0.0,
        "real_weight_sum": None if weight_sum is None else round(weight_sum, 4),
        "history": [{k2: round(x, 4) for k2, x in h_.items()} for h_ in fitter.history],
    }
    return p


def _fit_temperature(p: FittedParams, doms: list[int], lens: list[int], seed: int, target: float) -> float:
    """Bisection on log temperature: the mean top-k weight sum falls as temperature rises."""
    scores, tops = [], []
    for i, (d, T) in enumerate(list(zip(doms, lens))[:32]):
        if not T:
            continue
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(9, i)))
        e, sc = _sequence(rng, p.log_popularity[d], p, T, True)
        scores.append(sc)
        tops.append(e)

    def mean_sum(temp: float) -> float:
        return float(
            np.mean(np.concatenate([_weights(s, t, temp).sum(-1).ravel() for s, t in zip(scores, tops)]))  # type: ignore[arg-type]
        )

    lo, hi = math.log(0.05), math.log(50.0)
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        if mean_sum(math.exp(mid)) > target:
            lo = mid
        else:
            hi = mid
    return float(math.exp(0.5 * (lo + hi)))
