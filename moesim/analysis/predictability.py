"""Trace-level predictability: how much the routing of the previous layer-steps says about a layer's
routing, so Prophet's "information budget" claim (context c = 3 carries most of the exploitable
bits; 0.62 bits MI read as "54% uncertainty reduction") can be checked on any trace.

Definitions (all in bits):

- The variable of a (token, layer) is its **top-1 expert** Y (the router's rank-0 choice; E values).
  Sets of k experts have too large an alphabet to estimate a joint distribution from a trace.
- ``entropy``: H(Y_l), plug-in and Miller-Madow corrected.
- ``mi[c]``: I(Y_l ; X_c), X_c = the top-1 experts of the previous c layer-steps *as one joint
  variable*, in the flattened layer-step order that Prophet's context uses (layer 0's predecessors
  are the previous token's last layers); tokens whose context would start before the request are
  left out. c = 1 is the adjacent layer.
- ``temporal``: I(Y_l(token t) ; Y_l(token t-1)), the same layer one token earlier.
- Estimators: plug-in; Miller-Madow, I_MM = H_MM(X) + H_MM(Y) - H_MM(X, Y) with
  H_MM = H_plugin + (m - 1) / (2 N ln 2), m = occupied bins; and a **shuffle control**: the MM
  estimate after permuting Y across the same samples (independence by construction; the mean of
  ``SHUFFLES`` permutations), whose value is
  the bias left after Miller-Madow (large for c >= 2, where X has up to E^c values).
  ``mi_corrected = max(0, MI_MM - MI_MM_shuffled)`` is the figure to quote.
- Normalisations, both reported: ``frac_of_entropy = mi_corrected / H_MM(Y_l)`` (the fraction of
  the layer's uncertainty removed) and ``frac_of_max = mi_corrected / log2(E)`` (of the maximum
  entropy). Prophet's "54%" only fits the first reading when H(Y) ~ 1.15 bits, far below
  log2(128) = 7: comparing the two columns shows which reading a claim uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moesim.errors import fail
from moesim.traces.information import entropy_mm, entropy_plugin
from moesim.traces.trace import Trace

SHUFFLES = 3  # permutations averaged by the shuffle control


def _counts(codes: np.ndarray) -> np.ndarray:
    return np.unique(codes, return_counts=True)[1].astype(np.float64)


def mutual_information(x: np.ndarray, y: np.ndarray, ny: int) -> tuple[float, float]:
    """(plug-in, Miller-Madow) I(X; Y) in bits for integer codes x (any range) and y in [0, ny)."""
    cx, cy, cxy = _counts(x), _counts(y), _counts(x * ny + y)
    plug = entropy_plugin(cx) + entropy_plugin(cy) - entropy_plugin(cxy)
    mm = entropy_mm(cx) + entropy_mm(cy) - entropy_mm(cxy)
    return plug, mm


@dataclass
class Predictability:
    meta: dict[str, Any]
    layers: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def _flat_top1(trace: Trace) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 experts in flattened layer-step order, and each step's position within its request."""
    top1 = np.asarray(trace.experts[:, :, 0], dtype=np.int64)  # (N, L)
    L = trace.meta.num_layers
    lens = np.diff(np.asarray(trace.seq_offsets)) * L
    pos = np.concatenate([np.arange(n) for n in lens]) if len(lens) else np.zeros(0, np.int64)
    return top1.reshape(-1), pos


def predictability(trace: Trace, max_context: int = 3, seed: int = 0) -> Predictability:
    """Entropy and MI per layer for contexts c = 1..max_context (see the module docstring)."""
    L, E = trace.meta.num_layers, trace.meta.num_experts
    if max_context < 1:
        fail(f"--context: must be >= 1, got {max_context}")
    if E ** (max_context + 1) >= 2**62:
        fail(
            f"--context {max_context}: E^(c+1) = {E}^{max_context + 1} overflows the joint code; use a smaller c"
        )
    if trace.num_tokens < 2:
        fail("trace: predictability needs at least 2 decode tokens")
    y_all, pos = _flat_top1(trace)
    layer_of = np.arange(len(y_all)) % L  # rows are token-major, so flat index % L is the layer
    rng = np.random.default_rng(seed)
    log2e = math.log2(E)
    rows: list[dict[str, Any]] = []
    for layer in range(L):
        idx = np.flatnonzero(layer_of == layer)
        y = y_all[idx]
        cy = np.bincount(y, minlength=E).astype(np.float64)
        h_mm = entropy_mm(cy)
        row: dict[str, Any] = {
            "layer": layer,
            "tokens": int(len(y)),
            "entropy_plugin": round(entropy_plugin(cy), 6),
            "entropy_mm": round(h_mm, 6),
            "entropy_frac_of_max": round(h_mm / log2e, 6),
        }
        contexts = [(f"c{c}", c) for c in range(1, max_context + 1)] + [("temporal", 0)]
        for label, c in contexts:
            if c:
                keep = idx[pos[idx] >= c]
                x = np.zeros(len(keep), np.int64)
                for j in range(1, c + 1):
                    x = x * E + y_all[keep - j]
            else:
                keep = idx[pos[idx] >= L]
                x = y_all[keep - L]
            yy = y_all[keep]
            if len(keep) < 2:
                row.update(
                    {
                        f"{label}_{f}": None
                        for f in (
                            "samples",
                            "mi_plugin",
                            "mi_mm",
                            "mi_shuffle",
                            "mi_corrected",
                            "frac_of_entropy",
                            "frac_of_max",
                        )
                    }
                )
                continue
            plug, mm = mutual_information(x, yy, E)
            # the mean of a few permutations: one alone is noisy where X has E^c values
            shuf = float(
                np.mean([mutual_information(x, yy[rng.permutation(len(yy))], E)[1] for _ in range(SHUFFLES)])
            )
            corr = max(0.0, mm - shuf)
            hy = entropy_mm(np.bincount(yy, minlength=E).astype(np.float64))
            row.update(
                {
                    f"{label}_samples": int(len(keep)),
                    f"{label}_mi_plugin": round(plug, 6),
                    f"{label}_mi_mm": round(mm, 6),
                    f"{label}_mi_shuffle": round(shuf, 6),
                    f"{label}_mi_corrected": round(corr, 6),
                    f"{label}_frac_of_entropy": round(corr / hy, 6) if hy > 0 else None,
                    f"{label}_frac_of_max": round(corr / log2e, 6),
                }
            )
        rows.append(row)
    summary: dict[str, Any] = {"entropy_mm_mean": _mean(r["entropy_mm"] for r in rows)}
    for label in [f"c{c}" for c in range(1, max_context + 1)] + ["temporal"]:
        for f in ("mi_mm", "mi_shuffle", "mi_corrected", "frac_of_entropy", "frac_of_max"):
            summary[f"{label}_{f}_mean"] = _mean(r.get(f"{label}_{f}") for r in rows)
    meta = {
        "model": trace.meta.model,
        "num_layers": L,
        "num_experts": E,
        "top_k": trace.meta.top_k,
        "tokens": trace.num_tokens,
        "sequences": trace.num_sequences,
        "max_entropy_bits": round(log2e, 6),
        "variable": "top-1 (rank-0) expert of each (token, layer)",
        "context": "previous c layer-steps' top-1 experts as one joint variable (flattened order, across tokens)",
        "estimators": "plug-in; Miller-Madow; shuffle control (MM after permuting Y); corrected = MM - shuffle",
        "normalisations": "frac_of_entropy = corrected / H_MM(Y_l); frac_of_max = corrected / log2(E)",
        "seed": seed,
    }
    return Predictability(meta, rows, summary)


def _mean(values: Any) -> float | None:
    v = [x for x in values if x is not None]
    return round(float(np.mean(v)), 6) if v else None


def write_predictability(result: Predictability, out: str | Path) -> list[Path]:
    """``predictability.json`` (meta, summary, per-layer rows), ``per_layer.csv`` and
    ``mi_by_context.png`` in ``out``; each file is written atomically."""
    import pandas as pd

    from moesim.io import atomic_write_json, atomic_write_text, atomic_write_with

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        out / "predictability.json", {"meta": result.meta, "summary": result.summary, "layers": result.layers}
    )
    atomic_write_text(out / "per_layer.csv", pd.DataFrame(result.layers).to_csv(index=False))
    atomic_write_with(out / "mi_by_context.png", lambda p: _plot(result, p))
    return [out / "predictability.json", out / "per_layer.csv", out / "mi_by_context.png"]


def _plot(result: Predictability, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = (
        [k[: -len("_mi_corrected")] for k in result.layers[0] if k.endswith("_mi_corrected")]
        if result.layers
        else []
    )
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [r["layer"] for r in result.layers]
    for lab in labels:
        ax.plot(
            xs, [r.get(f"{lab}_mi_corrected") or 0.0 for r in result.layers], marker="o", label=f"I(Y; {lab})"
        )
    ax.plot(xs, [r["entropy_mm"] for r in result.layers], "k--", label="H(Y) (MM)")
    ax.set_xlabel("MoE layer")
    ax.set_ylabel("bits (top-1 expert)")
    ax.set_title(f"{result.meta['model']}: entropy and shuffle-corrected MI")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
