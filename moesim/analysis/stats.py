"""Routing-trace statistics (``moesim trace stats``): what makes a trace easy or hard to cache.

Definitions (all on decode tokens; a key is (layer, expert id)):

- **popularity**: per layer, how many of the N*k assignments each expert got. Entropy is the
  plug-in entropy of that distribution in bits (as the OLMoE trace's own metadata computes it),
  with the Miller-Madow bias-corrected value beside it; ``normalized`` = entropy / log2(E).
  Skew: the top-10 / top-20 experts' share of the layer's assignments, and the Gini coefficient
  of the per-expert counts (0 = uniform, 1 = one expert takes all).
- **cross-layer mutual information**: between the top-1 (rank 0) expert of layer i and of layer j
  over all tokens, in bits, Miller-Madow corrected: MI = H_MM(X) + H_MM(Y) - H_MM(X, Y), where
  H_MM = H_plugin + (m - 1) / (2 N ln 2) and m is the number of non-empty bins. Normalised as
  MI / H_MM(Y), the fraction of the later layer's top-1 uncertainty that the earlier layer's
  top-1 explains (0..1). The estimators are in ``moesim.traces.information``, shared with the
  predictors' analysis and the trace fitter.
- **consecutive-token overlap**: |S_t ∩ S_{t-1}| for the top-k sets of consecutive decode tokens
  of one sequence at the same layer, averaged (of k); ``overlap_by_lag`` the same at lag d.
- **reuse distance** (in tokens): for each use of a key, the number of decode tokens since that key's
  previous use in the same sequence (1 = used by the previous token); a key's first use in a
  sequence is counted as ``cold``.
- **working set**: the number of distinct keys used in a window of W consecutive decode tokens of
  one sequence (non-overlapping windows), as a mean and as a fraction of all L*E experts.
- **hit-rate curves**: demand-only LRU and Belady hit rates at each capacity (moesim.analysis.hitrate).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moesim.analysis.hitrate import HitCurve, hit_curves
from moesim.traces.information import (  # noqa: F401  (re-exported: the estimators' former home)
    entropy_bits,
    miller_madow_bits,
    mutual_information_bits,
)
from moesim.traces.trace import Trace

DEFAULT_WINDOWS = (1, 2, 4, 8, 16, 32, 64, 128)
DEFAULT_LAGS = (1, 2, 4, 8, 16, 32, 64)
REUSE_BINS = 64  # reuse distances 1..64 get their own bin; longer ones share "> 64"


# -------------------------------------------------------------------------------- estimators


def gini(counts: np.ndarray) -> float:
    c = np.sort(np.asarray(counts, dtype=np.float64).ravel())
    n, total = len(c), c.sum()
    if n == 0 or total <= 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float((2.0 * (ranks * c).sum()) / (n * total) - (n + 1.0) / n)


def top_share(counts: np.ndarray, n: int) -> float:
    c = np.sort(np.asarray(counts, dtype=np.float64).ravel())[::-1]
    total = c.sum()
    return float(c[:n].sum() / total) if total > 0 else 0.0


# ------------------------------------------------------------------------------- trace passes


def _sequences(trace: Trace) -> Any:
    for s in range(trace.num_sequences):
        yield s, np.asarray(trace.sequence(s))


def _membership(seq: np.ndarray, E: int) -> np.ndarray:
    """(T, L, E) bool: which experts each token used at each layer."""
    T, L, _ = seq.shape
    m = np.zeros((T, L, E), dtype=bool)
    np.put_along_axis(m, seq.astype(np.int64), True, axis=-1)
    return m


def popularity(trace: Trace) -> np.ndarray:
    """(L, E) assignment counts, streamed over row chunks."""
    L, E = trace.meta.num_layers, trace.meta.num_experts
    counts = np.zeros((L, E), dtype=np.int64)
    offs = (np.arange(L, dtype=np.int64) * E)[None, :, None]
    step = max(1, (1 << 20) // max(1, L * trace.meta.top_k))
    for start in range(0, trace.num_tokens, step):
        keys = np.asarray(trace.experts[start : start + step], dtype=np.int64) + offs
        counts += np.bincount(keys.ravel(), minlength=L * E).reshape(L, E)
    return counts


@dataclass
class TemporalStats:
    overlap_by_lag: dict[int, np.ndarray]  # lag -> (L,) mean overlap (of k)
    reuse_hist: np.ndarray  # (REUSE_BINS + 1,): distances 1..64, then > 64
    reuse_cold: int  # first uses of a key in a sequence
    working_set: dict[int, float]  # window -> mean distinct keys
    working_set_per_layer: dict[int, np.ndarray]  # window -> (L,) mean distinct experts


def temporal(
    trace: Trace,
    lags: Sequence[int] = DEFAULT_LAGS,
    windows: Sequence[int] = DEFAULT_WINDOWS,
    progress: Callable[[int], None] | None = None,
) -> TemporalStats:
    """Overlap by lag, reuse distances and working sets, one sequence at a time."""
    L, E = trace.meta.num_layers, trace.meta.num_experts
    ov_sum = {d: np.zeros(L) for d in lags}
    ov_n = dict.fromkeys(lags, 0)
    hist = np.zeros(REUSE_BINS + 1, dtype=np.int64)
    cold = 0
    ws_sum = {w: np.zeros(L) for w in windows}
    ws_n = dict.fromkeys(windows, 0)
    for _, seq in _sequences(trace):
        T = len(seq)
        if T == 0:
            continue
        m = _membership(seq, E)
        for d in lags:
            if d < T:
                ov_sum[d] += (m[d:] & m[:-d]).sum(-1).sum(0)
                ov_n[d] += T - d
        # reuse distances: positions of each (layer, expert) in time order
        li, ei, ti = np.nonzero(m.transpose(1, 2, 0))
        same = (li[1:] == li[:-1]) & (ei[1:] == ei[:-1])
        gaps = (ti[1:] - ti[:-1])[same]
        cold += len(ti) - int(same.sum())
        hist += np.bincount(np.minimum(gaps, REUSE_BINS + 1) - 1, minlength=REUSE_BINS + 1)[: REUSE_BINS + 1]
        for w in windows:
            n_win = T // w
            if n_win == 0:
                continue
            blocks = m[: n_win * w].reshape(n_win, w, L, E).any(1)  # (n_win, L, E)
            ws_sum[w] += blocks.sum(-1).sum(0)
            ws_n[w] += n_win
        if progress is not None:
            progress(T)
    return TemporalStats(
        overlap_by_lag={d: ov_sum[d] / max(1, ov_n[d]) for d in lags},
        reuse_hist=hist,
        reuse_cold=cold,
        working_set={w: float(ws_sum[w].sum() / ws_n[w]) for w in windows if ws_n[w]},
        working_set_per_layer={w: ws_sum[w] / ws_n[w] for w in windows if ws_n[w]},
    )


def cross_layer_mi(trace: Trace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(plug-in MI, Miller-Madow MI, normalised MI) matrices (L, L) of the layers' top-1 experts."""
    L, E = trace.meta.num_layers, trace.meta.num_experts
    top1 = np.asarray(trace.experts[:, :, 0], dtype=np.int64)  # (N, L)
    plug = np.zeros((L, L))
    mm = np.zeros((L, L))
    norm = np.zeros((L, L))
    for i in range(L):
        for j in range(L):
            if i == j:
                h = miller_madow_bits(np.bincount(top1[:, i], minlength=E))
                plug[i, j] = entropy_bits(np.bincount(top1[:, i], minlength=E))
                mm[i, j], norm[i, j] = h, 1.0
            elif i < j:
                p, m, n = mutual_information_bits(top1[:, i], top1[:, j], E, E)
                plug[i, j] = plug[j, i] = p
                mm[i, j] = mm[j, i] = m
                norm[i, j] = n  # row = earlier layer, column = later layer (explained)
                norm[j, i] = mutual_information_bits(top1[:, j], top1[:, i], E, E)[2]
    return plug, mm, norm


# ------------------------------------------------------------------------------------ the whole


@dataclass
class TraceStats:
    meta: dict[str, Any]
    counts: np.ndarray  # (L, E)
    layers: list[dict[str, float]]  # one row per layer
    temporal: TemporalStats
    mi_plugin: np.ndarray
    mi_mm: np.ndarray
    mi_norm: np.ndarray
    curves: dict[str, HitCurve] = field(default_factory=dict)
    domains: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Scalar figures plus per-layer rows: what summary.json holds."""
        L = len(self.layers)
        adj = [float(self.mi_mm[i, i + 1]) for i in range(L - 1)]
        adj_n = [float(self.mi_norm[i, i + 1]) for i in range(L - 1)]
        t = self.temporal
        reuse_total = int(t.reuse_hist.sum())
        out: dict[str, Any] = {
            "trace": self.meta,
            "mean": {
                "entropy_bits": _mean(r["entropy_bits"] for r in self.layers),
                "entropy_mm_bits": _mean(r["entropy_mm_bits"] for r in self.layers),
                "normalized_entropy": _mean(r["normalized_entropy"] for r in self.layers),
                "top10_share": _mean(r["top10_share"] for r in self.layers),
                "top20_share": _mean(r["top20_share"] for r in self.layers),
                "gini": _mean(r["gini"] for r in self.layers),
                "consecutive_overlap": _mean(r["consecutive_overlap"] for r in self.layers),
                "adjacent_layer_mi_mm_bits": _mean(adj),
                "adjacent_layer_mi_normalized": _mean(adj_n),
            },
            "overlap_by_lag": {str(d): float(v.mean()) for d, v in t.overlap_by_lag.items()},
            "reuse_distance": {
                "reuses": reuse_total,
                "cold": t.reuse_cold,
                "share_distance_1": float(t.reuse_hist[0] / reuse_total) if reuse_total else 0.0,
                "share_within_8": float(t.reuse_hist[:8].sum() / reuse_total) if reuse_total else 0.0,
                "share_beyond_64": float(t.reuse_hist[-1] / reuse_total) if reuse_total else 0.0,
            },
            "working_set": {str(w): v for w, v in t.working_set.items()},
            "layers": self.layers,
            "domains": self.domains,
            "mi_normalization": "MI_MM(top1_i; top1_j) / H_MM(top1_j), j the later layer",
        }
        if self.curves:
            out["hit_rate"] = {
                p: {
                    "scope": c.scope,
                    "capacities": list(c.capacities),
                    "hit_rates": [round(h, 6) for h in c.hit_rates],
                }
                for p, c in self.curves.items()
            }
        return out


def _mean(values: Any) -> float:
    vals = list(values)
    return float(np.mean(vals)) if vals else 0.0


def _domain_rows(trace: Trace, counts_all: np.ndarray) -> list[dict[str, Any]]:
    """Per domain: tokens, mean entropy, and the Jensen-Shannon distance of its popularity to the rest."""
    rows = []
    if not trace.meta.domains:
        return rows
    lens = np.diff(np.asarray(trace.seq_offsets))
    dom_rows = np.repeat(np.asarray(trace.seq_domain), lens)
    L, E = counts_all.shape
    offs = (np.arange(L, dtype=np.int64) * E)[None, :, None]
    for d, name in enumerate(trace.meta.domains):
        sel = np.flatnonzero(dom_rows == d)
        if not len(sel):
            continue
        keys = np.asarray(trace.experts[sel], dtype=np.int64) + offs
        c = np.bincount(keys.ravel(), minlength=L * E).reshape(L, E)
        rest = counts_all - c
        js = [_js_bits(c[layer], rest[layer]) for layer in range(L)] if rest.sum() else [0.0] * L
        rows.append(
            {
                "domain": name,
                "sequences": int((np.asarray(trace.seq_domain) == d).sum()),
                "tokens": len(sel),
                "entropy_bits": _mean(entropy_bits(c[layer]) for layer in range(L)),
                "js_vs_rest_bits": _mean(js),
            }
        )
    return rows


def _js_bits(a: np.ndarray, b: np.ndarray) -> float:
    p = a / a.sum() if a.sum() else a.astype(float)
    q = b / b.sum() if b.sum() else b.astype(float)
    mix = 0.5 * (p + q)
    return 0.5 * _kl(p, mix) + 0.5 * _kl(q, mix)


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    m = p > 0
    return float((p[m] * np.log2(p[m] / q[m])).sum())


def compute_stats(
    trace: Trace,
    *,
    capacities: Sequence[int] | None = None,
    hit_rates: bool = True,
    scope: str = "global",
    progress: Callable[[int], None] | None = None,
    replay_progress: Callable[[int], None] | None = None,
) -> TraceStats:
    """Everything ``moesim trace stats`` reports.

    ``progress(n)`` is told about decode tokens as the temporal pass goes, ``replay_progress(1)``
    about each finished cache replay (one per capacity and policy).
    """
    m = trace.meta
    L, E, k = m.num_layers, m.num_experts, m.top_k
    counts = popularity(trace)
    tmp = temporal(trace, progress=progress)
    mi_plug, mi_mm, mi_norm = cross_layer_mi(trace)
    layers = []
    for layer in range(L):
        c = counts[layer]
        h = entropy_bits(c)
        layers.append(
            {
                "layer": layer,
                "model_layer": int(m.layer_indices[layer]) if m.layer_indices else layer,
                "entropy_bits": h,
                "entropy_mm_bits": miller_madow_bits(c),
                "normalized_entropy": h / math.log2(E) if E > 1 else 0.0,
                "top10_share": top_share(c, 10),
                "top20_share": top_share(c, 20),
                "gini": gini(c),
                "active_experts": int((c > 0).sum()),
                "consecutive_overlap": float(tmp.overlap_by_lag[1][layer])
                if 1 in tmp.overlap_by_lag
                else 0.0,
                "mi_next_layer_mm_bits": float(mi_mm[layer, layer + 1]) if layer + 1 < L else float("nan"),
                "mi_next_layer_normalized": float(mi_norm[layer, layer + 1])
                if layer + 1 < L
                else float("nan"),
            }
        )
    meta = {
        "path": str(trace.path) if trace.path is not None else None,
        "model": m.model,
        "sequences": trace.num_sequences,
        "decode_tokens": trace.num_tokens,
        "num_layers": L,
        "num_experts": E,
        "top_k": k,
    }
    curves = hit_curves(trace, capacities, scope=scope, progress=replay_progress) if hit_rates else {}
    return TraceStats(meta, counts, layers, tmp, mi_plug, mi_mm, mi_norm, curves, _domain_rows(trace, counts))


# ------------------------------------------------------------------------------------- output


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return obj


def write_stats(stats: TraceStats, out: str | Path) -> list[Path]:
    """summary.json, CSVs and PNG plots into ``out``; every file written atomically. Returns the paths."""
    import pandas as pd

    from moesim.io import atomic_write_json, atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def csv(name: str, df: pd.DataFrame) -> None:
        atomic_write_text(out / name, df.to_csv(index=False, float_format="%.6g", lineterminator="\n"))
        written.append(out / name)

    atomic_write_json(out / "summary.json", _nan_to_none(stats.summary()))
    written.append(out / "summary.json")
    csv("layers.csv", pd.DataFrame(stats.layers))
    L, E = stats.counts.shape
    csv(
        "popularity.csv",
        pd.DataFrame(
            {
                "layer": np.repeat(np.arange(L), E),
                "expert": np.tile(np.arange(E), L),
                "count": stats.counts.ravel(),
            }
        ),
    )
    ii, jj = np.meshgrid(np.arange(L), np.arange(L), indexing="ij")
    csv(
        "mutual_information.csv",
        pd.DataFrame(
            {
                "layer_i": ii.ravel(),
                "layer_j": jj.ravel(),
                "mi_plugin_bits": stats.mi_plugin.ravel(),
                "mi_mm_bits": stats.mi_mm.ravel(),
                "mi_normalized": stats.mi_norm.ravel(),
            }
        ),
    )
    t = stats.temporal
    csv(
        "reuse_distance.csv",
        pd.DataFrame(
            {
                "distance": [str(d) for d in range(1, REUSE_BINS + 1)] + [f">{REUSE_BINS}", "cold"],
                "count": list(t.reuse_hist) + [t.reuse_cold],
            }
        ),
    )
    csv(
        "overlap_by_lag.csv",
        pd.DataFrame(
            [
                {"lag": d, "layer": layer, "overlap": float(v[layer])}
                for d, v in t.overlap_by_lag.items()
                for layer in range(L)
            ]
        ),
    )
    csv(
        "working_set.csv",
        pd.DataFrame(
            [
                {"window_tokens": w, "mean_distinct_experts": v, "fraction_of_all": v / (L * E)}
                for w, v in t.working_set.items()
            ]
        ),
    )
    if stats.curves:
        csv("hitrate.csv", curves_frame(stats.curves))
    if stats.domains:
        csv("domains.csv", pd.DataFrame(stats.domains))
    written += _plots(stats, out)
    return written


def curves_frame(curves: dict[str, HitCurve]) -> Any:
    import pandas as pd

    return pd.DataFrame(
        [
            {"policy": p, "scope": c.scope, "capacity": cap, "hits": h, "accesses": c.accesses, "hit_rate": r}
            for p, c in curves.items()
            for cap, h, r in zip(c.capacities, c.hits, c.hit_rates)
        ]
    )


def _save(fig: Any, path: Path) -> Path:
    from moesim.io import atomic_write_with

    # a fixed date keeps PNGs byte-identical across reruns
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None}))
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _plots(stats: TraceStats, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    L, E = stats.counts.shape
    t = stats.temporal

    fig, ax = plt.subplots(figsize=(6, 4))
    for layer in range(L):
        c = np.sort(stats.counts[layer])[::-1]
        ax.plot(np.arange(1, E + 1), c / max(1, c.sum()), color=plt.cm.viridis(layer / max(1, L - 1)), lw=1)
    ax.set(xscale="log", yscale="log", xlabel="expert rank", ylabel="share of layer's assignments",
           title="Expert popularity per layer (colour = layer)")  # fmt: skip
    paths.append(_save(fig, out / "popularity.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    x = np.arange(L)
    ax.bar(x, [r["entropy_bits"] for r in stats.layers], color="tab:blue", label="entropy (plug-in)")
    ax.axhline(math.log2(E), color="k", ls="--", lw=1, label=f"uniform log2(E) = {math.log2(E):.2f}")
    ax.set(xlabel="MoE layer", ylabel="bits", title="Routing entropy per layer")
    ax.legend(loc="lower right")
    paths.append(_save(fig, out / "entropy.png"))

    fig, ax = plt.subplots(figsize=(5, 4))
    im = ax.imshow(np.where(np.eye(L, dtype=bool), np.nan, stats.mi_norm), cmap="magma", vmin=0)
    fig.colorbar(im, ax=ax, label="MI / H(later layer)")
    ax.set(xlabel="layer j", ylabel="layer i", title="Cross-layer top-1 mutual information")
    paths.append(_save(fig, out / "mutual_information.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    total = max(1, int(t.reuse_hist.sum()))
    ax.bar(np.arange(1, REUSE_BINS + 1), t.reuse_hist[:-1] / total, width=1.0, color="tab:green")
    ax.set(xlabel="reuse distance (decode tokens)", ylabel="share of reuses", yscale="log",
           title=f"Reuse distance (> {REUSE_BINS}: {t.reuse_hist[-1] / total:.1%})")  # fmt: skip
    paths.append(_save(fig, out / "reuse_distance.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    ws = sorted(t.working_set)
    ax.plot(ws, [t.working_set[w] for w in ws], marker="o")
    ax.axhline(L * E, color="k", ls="--", lw=1, label=f"all experts ({L * E})")
    ax.set(xscale="log", xlabel="window (decode tokens)", ylabel="distinct experts", title="Working set")
    ax.legend()
    paths.append(_save(fig, out / "working_set.png"))

    if stats.curves:
        fig, ax = plt.subplots(figsize=(6, 4))
        for p, c in stats.curves.items():
            ax.plot(c.capacities, c.hit_rates, marker="o", label=p)
        ax.set(xscale="log", xlabel=f"capacity (expert slots, {next(iter(stats.curves.values())).scope})",
               ylabel="hit rate", ylim=(0, 1), title="Demand hit rate vs cache capacity")  # fmt: skip
        ax.legend()
        paths.append(_save(fig, out / "hitrate.png"))
    return paths
