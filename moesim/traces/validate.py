"""Trace validation, streamed in row chunks so a memory-mapped trace is never read whole.

Every violation raises ``MoesimInputError`` with one line naming the file, and where it applies
the sequence, token and layer, plus what to do about it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moesim.errors import fail
from moesim.traces.pages import release
from moesim.traces.trace import Trace

# Ids checked per chunk; ~1M keeps the temporary sort arrays small.
_CHUNK_IDS = 1 << 20
# Weights may tie, and float rounding may make a tie look like a tiny increase.
_WEIGHT_ORDER_TOL = 1e-6


@dataclass(frozen=True)
class _Labels:
    """What to call each array in messages: its file for a saved trace, else the given name."""

    root: str | None
    name: str

    def of(self, array: str) -> str:
        if self.root is None:
            return self.name
        from moesim.traces.native import ARRAY_FILES, MANIFEST

        return f"{self.root}/{ARRAY_FILES.get(array, MANIFEST)}"

    @property
    def manifest(self) -> str:
        if self.root is None:
            return self.name
        from moesim.traces.native import MANIFEST

        return f"{self.root}/{MANIFEST}"


def validate_trace(trace: Trace, name: str | None = None) -> None:
    """Check ``trace`` against its metadata; raise MoesimInputError on the first violation.

    ``name`` labels messages for a trace that is not on disk (an importer passes its source file);
    a loaded trace is labelled by its array files instead.
    """
    labels = _Labels(str(trace.path) if trace.path is not None else None, name or "trace")
    _check_meta(trace, labels)
    _check_offsets(trace.seq_offsets, len(trace.experts), None, labels.of("seq_offsets"), "decode tokens")
    if len(trace.experts) == 0:
        # nothing to replay: a run would "succeed" with no decode step and report TPOT 0
        fail(f"{labels.of('experts')}: the trace has no decode tokens; a trace needs at least one")
    num_seq = len(trace.seq_offsets) - 1
    _check_rows_shape(trace.experts, trace, labels.of("experts"), "experts")
    _check_domains(trace, num_seq, labels)
    if trace.weights is not None:
        if trace.weights.shape != trace.experts.shape:
            fail(
                f"{labels.of('weights')}: shape {tuple(trace.weights.shape)} differs from experts "
                f"{tuple(trace.experts.shape)}; weights need one value per expert id"
            )
        if trace.weights.dtype.kind != "f":
            fail(f"{labels.of('weights')}: dtype {trace.weights.dtype} is not floating point")
    if trace.token_ids is not None:
        if trace.token_ids.shape != (len(trace.experts),):
            fail(
                f"{labels.of('token_ids')}: shape {tuple(trace.token_ids.shape)} but the trace has "
                f"N={len(trace.experts)} decode tokens; token_ids needs one id per decode token"
            )
        if trace.token_ids.dtype.kind not in "iu":
            fail(f"{labels.of('token_ids')}: dtype {trace.token_ids.dtype} is not integer")
    if (trace.prefill_experts is None) != (trace.prefill_offsets is None):
        fail(f"{labels.manifest}: prefill_experts and prefill_offsets must be given together")
    if trace.prefill_experts is not None and trace.prefill_offsets is not None:
        _check_rows_shape(trace.prefill_experts, trace, labels.of("prefill_experts"), "prefill_experts")
        _check_offsets(
            trace.prefill_offsets,
            len(trace.prefill_experts),
            num_seq,
            labels.of("prefill_offsets"),
            "prefill tokens",
        )
    _check_captured(trace, labels)
    _check_content(trace.experts, trace.weights, trace.seq_offsets, trace, labels, "experts", "weights")
    if trace.prefill_experts is not None and trace.prefill_offsets is not None:
        _check_content(
            trace.prefill_experts,
            None,
            trace.prefill_offsets,
            trace,
            labels,
            "prefill_experts",
            "",
            "prefill token",
        )


def _check_captured(trace: Trace, labels: _Labels) -> None:
    """Hidden states, router inputs and router probabilities: shapes, float dtype, finite values."""
    N, L, E = len(trace.experts), trace.meta.num_layers, trace.meta.num_experts
    hidden = None
    for name in ("hidden_states", "router_inputs", "router_probs"):
        arr = getattr(trace, name)
        if arr is None:
            continue
        where = labels.of(name)
        width = E if name == "router_probs" else (arr.shape[2] if arr.ndim == 3 else -1)
        if arr.ndim != 3 or tuple(arr.shape[:2]) != (N, L) or arr.shape[2] != width or width < 1:
            last = "E" if name == "router_probs" else "H"
            fail(
                f"{where}: {name} shape {tuple(arr.shape)} but the trace has N={N} decode tokens and "
                f"L={L} MoE layers (expected (N, L, {last}){f' with E={E}' if last == 'E' else ''}); "
                "re-capture or drop the array"
            )
        if arr.dtype.kind != "f":
            fail(f"{where}: {name} dtype {arr.dtype} is not floating point")
        if name != "router_probs":
            if hidden is not None and arr.shape[2] != hidden:
                fail(
                    f"{where}: hidden size {arr.shape[2]} differs from hidden_states' {hidden}; "
                    "both are the model's hidden size"
                )
            hidden = int(arr.shape[2])
        _check_finite(arr, trace.seq_offsets, where, name, nonnegative=name == "router_probs")


def _check_finite(arr: np.ndarray, offsets: np.ndarray, where: str, name: str, nonnegative: bool) -> None:
    offsets = np.asarray(offsets)
    step = max(1, _CHUNK_IDS // max(1, int(np.prod(arr.shape[1:]))))
    for start in range(0, len(arr), step):
        chunk = np.asarray(arr[start : start + step])
        bad = ~np.isfinite(chunk)
        if nonnegative:
            bad |= chunk < 0
        if bad.any():
            r, layer, j = (int(x) for x in np.argwhere(bad)[0])
            s, t = _locate(offsets, start + r)
            need = "finite and >= 0 (router scores)" if nonnegative else "finite"
            fail(
                f"{where}: sequence {s} token {t} layer {layer}: {name}[{j}] is {chunk[r, layer, j]} "
                f"(values must be {need}; re-capture, or drop the array)"
            )


def _check_meta(trace: Trace, labels: _Labels) -> None:
    m, where = trace.meta, labels.manifest
    if m.num_layers < 1:
        fail(f"{where}: num_layers={m.num_layers}; a trace needs at least one MoE layer")
    if m.num_experts < 1:
        fail(f"{where}: num_experts={m.num_experts}; E must be at least 1")
    if not 1 <= m.top_k <= m.num_experts:
        fail(f"{where}: top_k={m.top_k} must be in [1, num_experts={m.num_experts}]")
    if m.num_shared_experts < 0:
        fail(f"{where}: num_shared_experts={m.num_shared_experts} is negative")
    if m.layer_indices:
        li = list(m.layer_indices)
        if len(li) != m.num_layers:
            fail(
                f"{where}: layer_indices has {len(li)} entries but num_layers={m.num_layers}; give one per MoE layer"
            )
        if any(b <= a for a, b in zip(li, li[1:])) or li[0] < 0:
            fail(f"{where}: layer_indices {li} must be non-negative and strictly increasing")
    if len(set(m.domains)) != len(m.domains):
        fail(f"{where}: domains {list(m.domains)} contain a duplicate name")


def _check_rows_shape(arr: np.ndarray, trace: Trace, where: str, what: str) -> None:
    L, k = trace.meta.num_layers, trace.meta.top_k
    if arr.ndim != 3 or tuple(arr.shape[1:]) != (L, k):
        fail(
            f"{where}: {what} shape {tuple(arr.shape)} does not match num_layers={L}, top_k={k} "
            f"(expected (N, {L}, {k})); fix num_layers/top_k in the metadata or re-import"
        )
    if arr.dtype.kind not in "iu":
        fail(f"{where}: {what} dtype {arr.dtype} is not integer; expert ids must be integers")


def _check_offsets(off: np.ndarray, n_rows: int, num_seq: int | None, where: str, what: str) -> None:
    off = np.asarray(off)
    if off.ndim != 1 or len(off) < 1 or off.dtype.kind not in "iu":
        fail(
            f"{where}: offsets must be a 1-D integer array of S+1 entries, got shape {off.shape} dtype {off.dtype}"
        )
    if num_seq is not None and len(off) != num_seq + 1:
        fail(f"{where}: {len(off)} offsets but the trace has {num_seq} sequences (need S+1={num_seq + 1})")
    if off[0] != 0:
        fail(f"{where}: first offset is {int(off[0])}, must be 0")
    back = np.flatnonzero(np.diff(off) < 0)
    if len(back):
        s = int(back[0])
        fail(
            f"{where}: sequence {s} starts at row {int(off[s])} but ends at row {int(off[s + 1])}; "
            "offsets must never decrease"
        )
    if off[-1] != n_rows:
        fail(
            f"{where}: last offset is {int(off[-1])} but there are {n_rows} {what}; offsets must end at N={n_rows}"
        )


def _check_domains(trace: Trace, num_seq: int, labels: _Labels) -> None:
    where = labels.of("seq_domain")
    dom = np.asarray(trace.seq_domain)
    if dom.shape != (num_seq,) or dom.dtype.kind not in "iu":
        fail(f"{where}: shape {dom.shape} dtype {dom.dtype}; need one integer per sequence ({num_seq})")
    nd = len(trace.meta.domains)
    bad = np.flatnonzero((dom < -1) | (dom >= nd))
    if len(bad):
        s = int(bad[0])
        fail(
            f"{where}: sequence {s}: domain index {int(dom[s])} but the metadata lists {nd} domain(s) "
            f"{list(trace.meta.domains)}; use -1 for none or add the name to domains"
        )


def _locate(offsets: np.ndarray, row: int) -> tuple[int, int]:
    s = int(np.searchsorted(offsets, row, side="right") - 1)
    return s, row - int(offsets[s])


def _check_content(
    experts: np.ndarray,
    weights: np.ndarray | None,
    offsets: np.ndarray,
    trace: Trace,
    labels: _Labels,
    ex_name: str,
    w_name: str,
    token_word: str = "token",
) -> None:
    E, L, k = trace.meta.num_experts, trace.meta.num_layers, trace.meta.top_k
    offsets = np.asarray(offsets)
    step = max(1, _CHUNK_IDS // max(1, L * k))

    def where(file: str, row: int, layer: int) -> str:
        s, t = _locate(offsets, row)
        return f"{file}: sequence {s} {token_word} {t} layer {layer}"

    for start in range(0, len(experts), step):
        release(experts)  # checked pages need not stay resident (moesim/traces/pages.py)
        release(weights)
        ids = np.asarray(experts[start : start + step])
        bad = (ids < 0) | (ids >= E)
        if bad.any():
            r, layer, rank = (int(x) for x in np.argwhere(bad)[0])
            v = int(ids[r, layer, rank])
            rel = f">= E={E}" if v >= E else "< 0"
            fail(
                f"{where(labels.of(ex_name), start + r, layer)}: expert id {v} {rel} "
                f"(ids must be in [0, {E}); check num_experts in the metadata)"
            )
        srt = np.sort(ids, axis=-1)
        dup = (srt[..., 1:] == srt[..., :-1]).any(-1)
        if dup.any():
            r, layer = (int(x) for x in np.argwhere(dup)[0])
            row = ids[r, layer].tolist()
            fail(
                f"{where(labels.of(ex_name), start + r, layer)}: expert ids {row} repeat an id "
                f"(each (token, layer) needs top_k={k} distinct experts; the capture or importer duplicated a rank)"
            )
        if weights is None:
            continue
        w = np.asarray(weights[start : start + step])
        nonfinite = ~np.isfinite(w)
        if nonfinite.any():
            r, layer, rank = (int(x) for x in np.argwhere(nonfinite)[0])
            fail(
                f"{where(labels.of(w_name), start + r, layer)}: weight of rank {rank} is {w[r, layer, rank]} "
                "(weights must be finite; fix the source or import without weights)"
            )
        rising = (np.diff(w, axis=-1) > _WEIGHT_ORDER_TOL).any(-1)
        if rising.any():
            r, layer = (int(x) for x in np.argwhere(rising)[0])
            fail(
                f"{where(labels.of(w_name), start + r, layer)}: weights [{', '.join(f'{x:.6g}' for x in w[r, layer])}] are not "
                "in descending order (rank 0 must have the highest weight; sort each row by weight when importing)"
            )
