"""Per-(token, layer) JSONL from a vLLM ``FusedMoE.select_experts`` hook (Mario928/speculative-moe).

Two layouts, told apart by the position key:
- ``token_idx``: decode-only files (``*_routing.jsonl``); the key is the decode step.
- ``token_pos``: raw capture (``routing_raw.jsonl``) in call order. The first forward (one block of
  rows per layer) is the prefill and ``token_pos`` is the prompt position; every later forward is
  one decode step with ``token_pos`` = 0 (batch slot), so the step is recovered from record order.
The capture dropped rows whose weights were exactly [0.5, 0.5], so some cells are missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from moesim.errors import fail
from moesim.traces.importers.common import (
    describe_sources,
    expand_sources,
    jsonl_objects,
    neighbour_rows,
    offsets_from_lengths,
    ordered_unique,
    strict_float_list,
    strict_int,
    strict_int_list,
)
from moesim.traces.trace import Trace, TraceMeta

_ON_MISSING = ("fill", "error")


@dataclass
class _Seq:
    path: Path
    dataset: str
    problem_id: object
    raw: bool  # token_pos layout (prefill + decode in call order)
    lines: list[int] = field(default_factory=list)
    layer: list[int] = field(default_factory=list)
    pos: list[int] = field(default_factory=list)
    experts: list[list[int]] = field(default_factory=list)
    probs: list[list[float]] = field(default_factory=list)


@dataclass
class _Grid:
    experts: np.ndarray  # (T, L, k)
    weights: np.ndarray  # (T, L, k)
    filled: int


def _parse(path: Path) -> list[_Seq]:
    seqs: dict[tuple[str, object], _Seq] = {}
    for n, rec in jsonl_objects(path):
        raw = "token_pos" in rec
        need = (
            "dataset",
            "problem_id",
            "layer",
            "experts",
            "gating_probs",
            "token_pos" if raw else "token_idx",
        )
        missing = [k for k in need if k not in rec]
        if missing:
            fail(f"{path} line {n}: missing key(s) {', '.join(missing)} (need token_idx or token_pos)")
        key = (str(rec["dataset"]), rec["problem_id"])
        seq = seqs.get(key)
        if seq is None:
            seq = seqs[key] = _Seq(path, key[0], key[1], raw)
        elif seq.raw != raw:
            fail(f"{path} line {n}: mixes token_idx and token_pos records for {key[0]}/{key[1]}")
        at = f"{path} line {n}"
        layer = strict_int(rec["layer"], f"{at}: layer")
        pos = strict_int(
            rec["token_pos" if raw else "token_idx"], f"{at}: {'token_pos' if raw else 'token_idx'}"
        )
        ex = strict_int_list(rec["experts"], f"{at}: experts")
        pr = strict_float_list(rec["gating_probs"], f"{at}: gating_probs")
        if not ex:
            fail(f"{at}: experts is empty; each record needs its top-k expert ids")
        seq.lines.append(n)
        seq.layer.append(layer)
        seq.pos.append(pos)
        seq.experts.append(ex)
        seq.probs.append(pr)
    if not seqs:
        fail(f"{path}: no records")
    return list(seqs.values())


def _arrays(seq: _Seq, k: int, E: int) -> tuple[np.ndarray, np.ndarray]:
    for i, (row_ex, row_pr) in enumerate(zip(seq.experts, seq.probs)):
        if len(row_ex) != k or len(row_pr) != k:
            fail(
                f"{seq.path} line {seq.lines[i]}: {len(row_ex)} experts / {len(row_pr)} gating_probs, expected top_k={k} "
                "as in the first record"
            )
    ex = np.asarray(seq.experts, dtype=np.int64).reshape(-1, k)
    bad = np.argwhere((ex < 0) | (ex >= E))
    if len(bad):
        i = int(bad[0][0])
        fail(
            f"{seq.path} line {seq.lines[i]}: expert id {int(ex[bad[0][0], bad[0][1]])} not in [0, {E}) (check num_experts)"
        )
    return ex, np.asarray(seq.probs, dtype=np.float64).reshape(-1, k)


def _place(
    seq: _Seq,
    idx: np.ndarray,
    rows: np.ndarray,
    T: int,
    L: int,
    ex: np.ndarray,
    pr: np.ndarray,
    on_missing: str,
    what: str,
) -> _Grid:
    """Put records ``idx`` at token rows ``rows`` of a (T, L) grid; fill or reject missing cells."""
    _refuse_gaps(seq, rows, T, what)
    layer = np.asarray(seq.layer, dtype=np.int64)[idx]
    cell = rows * L + layer
    counts = np.bincount(cell, minlength=T * L)
    if (counts > 1).any():
        c = int(np.flatnonzero(counts > 1)[0])
        lines = [seq.lines[int(i)] for i in idx[cell == c]]
        fail(f"{seq.path} line {lines[1]}: {what} token {c // L} layer {c % L} repeats line {lines[0]}")
    k = ex.shape[1]
    g_ex = np.zeros((T * L, k), dtype=np.int64)
    g_pr = np.zeros((T * L, k), dtype=np.float32)
    g_ex[cell], g_pr[cell] = ex[idx], pr[idx]
    present = (counts == 1).reshape(T, L)
    n_missing = int((~present).sum())
    if n_missing:
        label = f"{seq.dataset}/{seq.problem_id}"
        src = neighbour_rows(present)
        first = np.argwhere(~present)[0]
        if on_missing == "error":
            fail(
                f"{seq.path}: sequence {label} {what} token {first[0]} layer {first[1]}: no record "
                f"({n_missing} cells missing in all; on_missing='fill' copies the neighbouring token)"
            )
        if (src < 0).any():
            layer_gone = int(np.argwhere(src < 0)[0][1])
            fail(f"{seq.path}: sequence {label} {what}: layer {layer_gone} has no record at all; cannot fill")
        cells = (src * L + np.arange(L)[None, :]).ravel()
        g_ex, g_pr = g_ex[cells], g_pr[cells]
    return _Grid(g_ex.reshape(T, L, k), g_pr.reshape(T, L, k), n_missing)


def _refuse_gaps(seq: _Seq, rows: np.ndarray, T: int, what: str) -> None:
    """A token with no record at any layer is not a dropped row: filling it would invent a token
    (one mistyped position would otherwise make thousands). Checked before the grid is allocated."""
    have = np.unique(rows)
    if len(have) == T:
        return
    gap = np.flatnonzero(have != np.arange(len(have)))
    first = int(gap[0]) if len(gap) else len(have)
    fail(
        f"{seq.path}: sequence {seq.dataset}/{seq.problem_id} {what} token {first}: no record at any layer "
        f"({T - len(have)} of {T} tokens have none); positions must be contiguous (a mistyped "
        "token_idx/token_pos?); refusing to invent tokens"
    )


def _decode_only(seq: _Seq, L: int, ex: np.ndarray, pr: np.ndarray, on_missing: str) -> tuple[_Grid, None]:
    pos = np.asarray(seq.pos, dtype=np.int64)
    T = int(pos.max()) + 1
    return _place(seq, np.arange(len(pos)), pos, T, L, ex, pr, on_missing, "decode"), None


def _raw(seq: _Seq, L: int, ex: np.ndarray, pr: np.ndarray, on_missing: str) -> tuple[_Grid, _Grid]:
    layer = np.asarray(seq.layer, dtype=np.int64)
    pos = np.asarray(seq.pos, dtype=np.int64)
    # Within one forward, (layer, position) strictly increases; a step back starts the next forward.
    key = layer * (int(pos.max()) + 1) + pos
    forward = np.concatenate([[0], np.cumsum(key[1:] <= key[:-1])])
    pre_idx = np.flatnonzero(forward == 0)
    dec_idx = np.flatnonzero(forward > 0)
    batched = dec_idx[pos[dec_idx] != 0]
    if len(batched):
        i = int(batched[0])
        fail(
            f"{seq.path} line {seq.lines[i]}: decode forward with token_pos {pos[i]}; only batch-1 decode is supported"
        )
    P = int(pos[pre_idx].max()) + 1
    prefill = _place(seq, pre_idx, pos[pre_idx], P, L, ex, pr, on_missing, "prefill")
    T = int(forward.max())
    decode = _place(seq, dec_idx, forward[dec_idx] - 1, T, L, ex, pr, on_missing, "decode")
    return decode, prefill


def import_mixtral_jsonl(
    paths: Sequence[Path],
    *,
    model: str = "Mixtral-8x7B-Instruct-v0.1",
    num_experts: int = 8,
    num_layers: int | None = None,
    on_missing: str = "fill",
) -> Trace:
    if on_missing not in _ON_MISSING:
        fail(f"on_missing must be one of {', '.join(_ON_MISSING)}, got {on_missing!r}")
    files = expand_sources(paths, ["*routing*.jsonl"], "mixtral-jsonl")
    seqs = [s for f in files for s in _parse(f)]
    k = len(seqs[0].experts[0])
    max_layer = max(max(s.layer) for s in seqs)
    L = int(num_layers) if num_layers is not None else max_layer + 1
    if max_layer >= L:
        s = next(s for s in seqs if max(s.layer) >= L)
        fail(f"{s.path} line {s.lines[s.layer.index(max(s.layer))]}: layer {max(s.layer)} >= num_layers={L}")
    used = set().union(*(s.layer for s in seqs))
    if len(used) < L:  # filling a layer no record names would invent all of it
        absent = min(set(range(L)) - used)
        fail(
            f"{files[0] if len(files) == 1 else describe_sources(files)}: layer {absent} has no record in any sequence but num_layers={L}; "
            "check the layer values (a mistyped layer?) or --num-layers"
        )
    decode, prefill = [], []
    for s in seqs:
        ex, pr = _arrays(s, k, num_experts)
        d, p = (_raw if s.raw else _decode_only)(s, L, ex, pr, on_missing)
        decode.append(d)
        prefill.append(p)
    domains = ordered_unique(s.dataset for s in seqs)
    names = [f"{s.dataset}/{s.problem_id}" for s in seqs]
    if len(set(names)) < len(names):  # the same problem from several runs: say which file
        names = [f"{s.path.name}:{n}" for s, n in zip(seqs, names)]
    filled = sum(g.filled for g in decode)
    filled_pre = sum(p.filled for p in prefill if p is not None)
    has_prefill = any(p is not None for p in prefill)
    empty = np.zeros((0, L, k), dtype=np.int64)
    notes = [
        f"mixtral-jsonl import of {describe_sources(files)}",
        "vLLM FusedMoE.select_experts capture (top-k ids, renormalised gating probs)",
    ]
    if any(s.raw for s in seqs):
        notes.append("raw capture: first forward = prefill, decode step recovered from record order")
    if filled or filled_pre:
        notes.append(
            f"{filled + filled_pre} missing (token, layer) cells ({filled_pre} in prefill) filled from the previous "
            "token at the same layer (next token at a sequence start)"
        )
    meta = TraceMeta(
        model=model,
        num_layers=L,
        num_experts=int(num_experts),
        top_k=k,
        dtype="fp8",
        domains=tuple(domains),
        source="; ".join(notes),
        extra={
            "filled_cells": filled + filled_pre,
            "filled_prefill_cells": filled_pre,
            "sequence_names": names,
        },
    )
    return Trace(
        meta=meta,
        experts=np.concatenate([g.experts for g in decode]),
        seq_offsets=offsets_from_lengths([len(g.experts) for g in decode]),
        seq_domain=np.array([domains.index(s.dataset) for s in seqs], dtype=np.int16),
        weights=np.concatenate([g.weights for g in decode]),
        prefill_experts=np.concatenate([p.experts if p is not None else empty for p in prefill])
        if has_prefill
        else None,
        prefill_offsets=(
            offsets_from_lengths([len(p.experts) if p is not None else 0 for p in prefill])
            if has_prefill
            else None
        ),
    )
