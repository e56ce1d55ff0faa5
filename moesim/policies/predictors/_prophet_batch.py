"""Prophet's batch inference: every prediction of a group computed up front in batched torch.

Prophet's inputs after the gate of step ``s`` are the routing of steps ``s, s-1, ..., s-c+1`` and
``s + d - L`` (d = 1..H), all at or before ``s``; a static group holds all of them when it starts, so
``start`` runs the network once per block of firings instead of once per layer-step, and ranks every
prediction in one vectorised sort. The predictions are the per-step path's, bit for bit:

- both paths call :func:`head_probs`, which evaluates the network (``ProphetNet.infer``) only on
  blocks padded with all-padding samples to a multiple of ``QUANTUM`` samples, so no call takes
  the small-matrix GEMM kernels (1 to 3, or 5 to 7 rows) whose rounding differs from the large ones;
  every other op is row-wise;
- a firing's set width ``m`` and the horizons it asks for are the same function of ``s`` in both
  paths, and the batched path groups firings by them (the embedding's weight sum runs over ``m``);
- the ranking is the same stable argsort on the same float32 values.

What remains is the GEMM's contract that an output row depends only on its input row (not on the
batch's other rows or its position), which ``tests/predictors/test_learned_batch.py`` checks for
these shapes as well as whole runs' predictions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from moesim.host import usable_cores
from moesim.policies.predictors.base import Prediction

# Samples per network call in the batched path. Measured on the shared 2-core CPU (CPU time,
# 32,768 firings, 3 rounds): 256 and 1024 are within noise (9.8 vs 9.2 s per 204,800 firings),
# 4096 is slower (13.1 s: its (4096*6, 256) activations leave the cache). Rows are bit-identical
# at any of these sizes.
BLOCK = 256
QUANTUM = 16  # every call is padded to a multiple of this many samples
# Blocks are evaluated on this many threads at once (default: one per core; MOESIM_PROPHET_THREADS
# sets it). Each block is computed by the same single-threaded kernels whichever thread runs it, so
# the probabilities do not depend on the count.
THREADS_ENV = "MOESIM_PROPHET_THREADS"


def block_threads() -> int:
    """Threads evaluating the network's blocks: ``MOESIM_PROPHET_THREADS``, else one per core."""
    env = os.environ.get(THREADS_ENV, "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return usable_cores()


def head_probs(model: Any, ids: np.ndarray, layers: np.ndarray, heads: tuple[int, ...]) -> np.ndarray:
    """(N, len(heads), E) calibrated probabilities of the horizons ``heads`` (1-based) for N samples:
    ids (N, c+H, m) global keys (pad = L*E), layers (N, c+H)."""
    import torch

    from moesim.policies.predictors._nets import torch_threads

    n_all = len(ids)
    E = model.config["E"]
    out = np.empty((n_all, len(heads), E), np.float32)
    pad_id = model.config["L"] * E

    def block(i: int) -> None:
        blk_ids, blk_layers = ids[i : i + BLOCK], layers[i : i + BLOCK]
        n = len(blk_ids)
        full = -(-n // QUANTUM) * QUANTUM
        if full > n:
            blk_ids = np.concatenate([blk_ids, np.full((full - n, *blk_ids.shape[1:]), pad_id, np.int64)])
            blk_layers = np.concatenate([blk_layers, np.zeros((full - n, blk_layers.shape[1]), np.int64)])
        with torch.inference_mode():  # per thread
            lg = model.net.infer(torch.from_numpy(blk_ids), torch.from_numpy(blk_layers), heads)
        out[i : i + n] = lg[:n].numpy()

    starts = range(0, n_all, BLOCK)
    workers = min(len(starts), block_threads())
    with torch_threads(model.config.get("threads", 1)):
        if workers < 2:
            for i in starts:
                block(i)
        else:  # torch releases the GIL: blocks on several cores, each computed as alone
            with ThreadPoolExecutor(workers, thread_name_prefix="moesim-prophet") as pool:
                list(pool.map(block, starts))
    t = np.asarray(model.temperatures, np.float32)[[d - 1 for d in heads]][None, :, None]
    return 1.0 / (1.0 + np.exp(-out / t))


def firing_heads(plan: Any, s: int, n: int) -> tuple[list[int], tuple[int, ...]]:
    """The targets of the firing after step ``s`` (``s = -1``: at group start) and its horizons."""
    targets = plan.start_targets(n) if s < 0 else plan.targets(s, n)
    return targets, tuple(sorted({t - s for t in targets}))


def offsets(L: int, c: int, H: int) -> np.ndarray:
    """Step offsets from the firing step of the c context tokens and the H temporal tokens."""
    return np.array([-j for j in range(c)] + [d - L for d in range(1, H + 1)], np.int64)


class GroupPredictions:
    """Every prediction of one static group, ranked; ``at(s)`` hands out the firing after step s.

    Each target step t (0 <= t < n) is predicted by exactly one firing, ``s_t = t - h[t % L]``, or
    at group start when that is negative (``HorizonPlan``'s rule), so the firings, their targets
    and horizons come from array arithmetic rather than a Python loop over steps."""

    def __init__(self, model: Any, plan: Any, steps: Sequence[Sequence[int]], L: int, E: int):
        cfg = model.config
        c, H = cfg["context"], cfg["heads"]
        n = len(steps)
        widths = np.fromiter((len(st) for st in steps), np.int64, n)
        M = max(1, int(widths.max(initial=0)))
        table = np.full((n + 1, M), L * E, np.int64)  # row n: the padding row for steps before 0
        if n and (widths == M).all():
            table[:n] = np.asarray(steps, np.int64)
        else:
            for u, st in enumerate(steps):
                table[u, : len(st)] = st
        width = np.append(widths, 0)

        # targets sorted by (firing, target): each firing's targets are contiguous and ascending
        tgt = np.arange(n, dtype=np.int64)
        fire_t = np.maximum(tgt - np.asarray(plan.h, np.int64)[tgt % L], -1)
        by_firing = np.lexsort((tgt, fire_t))  # per-layer horizons can put a later firing first
        tgt, fire_t = tgt[by_firing], fire_t[by_firing]
        self._t = tgt
        head_t = tgt - fire_t  # horizon d of each target (1-based)
        S, first = np.unique(fire_t, return_index=True)  # the firings and their first target
        # the firing of step s (-1..n-1) owns targets lo[s + 1] .. lo[s + 2] - 1
        self._lo = np.searchsorted(fire_t, np.arange(-1, n + 1), side="left")
        # a firing's horizons as a bit set (bit d-1), then its inputs
        mask = np.bitwise_or.reduceat(np.left_shift(1, head_t - 1), first) if n else np.zeros(0, np.int64)
        U = S[:, None] + offsets(L, c, H)[None, :]
        rows = np.where(U >= 0, U, n)
        lay = np.concatenate([U[:, :c] % L, (S[:, None] + np.arange(1, H + 1)[None, :]) % L], axis=1)
        m = np.maximum(1, width[rows].max(1)) if len(S) else np.zeros(0, np.int64)
        owner = np.repeat(np.arange(len(S)), np.diff(np.append(first, n)))  # firing index of each target

        P = np.empty((n, E), np.float32)
        for key in np.unique(np.stack([mask, m], 1), axis=0) if len(S) else ():
            bits, mm = int(key[0]), int(key[1])
            heads = tuple(d for d in range(1, H + 1) if bits >> (d - 1) & 1)
            sel = np.flatnonzero((mask == bits) & (m == mm))
            probs = head_probs(model, table[rows[sel]][:, :, :mm], lay[sel], heads)
            pos = np.full(len(S), -1, np.int64)
            pos[sel] = np.arange(len(sel))
            mine = np.flatnonzero(pos[owner] >= 0)  # targets of this bucket's firings
            hidx = np.searchsorted(np.asarray(heads), head_t[mine])
            P[mine] = probs[pos[owner[mine]], hidx]
        order = np.argsort(-P, axis=1, kind="stable")  # ranked(): ties by lower expert id
        self._keys = order + ((tgt % L) * E)[:, None]
        self._scores = np.take_along_axis(P, order, 1).astype(np.float64)

    def cut(self, n_pred: int, threshold: float | None) -> tuple[np.ndarray, np.ndarray]:
        """Every firing's predictions cut as the planner cuts them (the first ``n_pred`` keys, then
        those scoring at least ``threshold``), for the group's firings in order (start, then after
        each step): (keys per firing, the keys). A firing's rows are ranked by descending score,
        so the threshold keeps a prefix of each row."""
        keys, scores = self._keys[:, :n_pred], self._scores[:, :n_pred]
        if threshold is None:
            cnt = np.full(len(keys), keys.shape[1], np.int64)
        else:
            cnt = (scores >= threshold).sum(1)
        flat = keys[np.arange(keys.shape[1])[None, :] < cnt[:, None]]
        csum = np.zeros(len(cnt) + 1, np.int64)
        np.cumsum(cnt, out=csum[1:])
        return np.diff(csum[self._lo]), flat

    def at(self, s: int) -> list[Prediction]:
        lo, hi = self._lo[s + 1], self._lo[s + 2]
        keys, scores, t = self._keys, self._scores, self._t
        return [(int(t[r]), keys[r].tolist(), scores[r].tolist()) for r in range(lo, hi)]
