"""Entropy and mutual information of categorical samples (expert ids), in bits.

Shared by the trace fitter (``moesim.traces.fit``) and the trace and predictor analyses
(``moesim.analysis``): they live with the traces, the lowest layer that needs them.
"""

from __future__ import annotations

import math

import numpy as np

_LN2 = math.log(2.0)


def entropy_plugin(counts: np.ndarray) -> float:
    n = counts.sum()
    if n <= 0:
        return 0.0
    p = counts[counts > 0] / n
    return float(-(p * np.log2(p)).sum())


def entropy_mm(counts: np.ndarray) -> float:
    """Miller-Madow corrected entropy (bits)."""
    n = counts.sum()
    if n <= 0:
        return 0.0
    return entropy_plugin(counts) + (int((counts > 0).sum()) - 1) / (2.0 * n * _LN2)


def entropy_bits(counts: np.ndarray) -> float:
    """Plug-in (maximum-likelihood) entropy of a count vector, in bits."""
    return entropy_plugin(np.asarray(counts, dtype=np.float64).ravel())


def miller_madow_bits(counts: np.ndarray) -> float:
    """Miller-Madow bias-corrected entropy in bits: plug-in + (non-empty bins - 1) / (2 N ln 2)."""
    return entropy_mm(np.asarray(counts, dtype=np.float64).ravel())


def mutual_information_bits(x: np.ndarray, y: np.ndarray, nx: int, ny: int) -> tuple[float, float, float]:
    """(plug-in MI, Miller-Madow MI, normalised MM MI = MI_MM / H_MM(y)) of paired categorical samples."""
    x = np.asarray(x, dtype=np.int64)
    y = np.asarray(y, dtype=np.int64)
    joint = np.bincount(x * ny + y, minlength=nx * ny).astype(np.float64)
    cx = joint.reshape(nx, ny).sum(1)
    cy = joint.reshape(nx, ny).sum(0)
    plug = entropy_bits(cx) + entropy_bits(cy) - entropy_bits(joint)
    hy = miller_madow_bits(cy)
    mm = miller_madow_bits(cx) + hy - miller_madow_bits(joint)
    return max(0.0, plug), max(0.0, mm), (max(0.0, mm) / hy if hy > 0 else 0.0)
