"""How a trace is replayed: batch groups of sequences and their layer-steps in access order.

A *group* is the B sequences decoded together (static batching, in trace order; the batch shrinks
as shorter sequences finish). A *layer-step* is one MoE layer of one decode step of a group; its
accesses are the union of the active sequences' experts in (rank, sequence index) order, with the
number of tokens routed to each (docs/design.md, reference cache semantics). Keys are ``layer * E + id``.
Groups are built one at a time so a long trace never needs all its steps in memory.

A ``PackedGroup`` keeps a group's layer-steps as flat numpy arrays (keys, offsets, counts): what
a ``RunCache`` holds between runs (about 20-40 bytes per layer-step instead of ~320 as lists), and
what ``unpack`` turns back into a ``Group`` (lists, plus the arrays for compiled executors).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import chain

import numpy as np

from moesim.traces.trace import Trace


@dataclass
class Group:
    index: int
    seqs: tuple[int, ...]  # trace sequence indices
    steps: list[list[int]]  # keys per layer-step, in access order; len = tokens * L
    counts: list[list[int]] | None  # tokens routed to each key (None: batch 1, all ones)
    active: list[int]  # active sequences at each decode step
    num_layers: int
    prefill_steps: int = 0  # with prefill: the first L steps are the prompt pass (one per layer)
    prompt_tokens: int = 0  # tokens in that prompt pass (all sequences of the group)
    # Continuous batching forms steps while it runs (moesim/engine/batching.py): predictors must not
    # take len(steps) as the end of the group.
    dynamic: bool = False
    # The same layer-steps as flat arrays when the group came from a ``PackedGroup`` (read-only,
    # shared with the cache): keys ``flat[offsets[s]:offsets[s + 1]]``, their token counts
    # likewise in ``flat_counts`` (None: all ones). None otherwise.
    flat: np.ndarray | None = field(default=None, repr=False, compare=False)
    offsets: np.ndarray | None = field(default=None, repr=False, compare=False)
    flat_counts: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def num_tokens(self) -> int:  # decode steps of the group
        return len(self.active)

    @property
    def horizon(self) -> int:
        """Layer-steps a predictor may target: the whole group, or unbounded while it is still forming."""
        return 1 << 62 if self.dynamic else len(self.steps)


@dataclass(frozen=True)
class PackedGroup:
    """A ``Group`` as flat arrays: ``flat[offsets[s]:offsets[s + 1]]`` are layer-step ``s``'s keys
    in access order, ``counts`` the tokens routed to each (None: all ones, batch 1)."""

    index: int
    seqs: tuple[int, ...]
    flat: np.ndarray  # keys, int16 when L * E fits, else int32
    offsets: np.ndarray  # int64, len = layer-steps + 1
    counts: np.ndarray | None  # aligned with ``flat`` (int32), or None
    active: np.ndarray  # int32 per decode step
    num_layers: int
    prefill_steps: int = 0
    prompt_tokens: int = 0
    width: int = 0  # every layer-step has this many keys (0: they differ)

    @property
    def num_steps(self) -> int:
        return len(self.offsets) - 1

    @property
    def nbytes(self) -> int:
        extra = 0 if self.counts is None else self.counts.nbytes
        return self.flat.nbytes + self.offsets.nbytes + self.active.nbytes + extra

    def unpack(self) -> Group:
        """The ``Group`` with the arrays attached; its ``steps`` and ``counts`` lists are built (one
        ``tolist`` per array) when first read, so a consumer of the arrays never pays for them."""
        group = _UnpackedGroup(
            self.index,
            self.seqs,
            None,  # type: ignore[arg-type]  # built on first read
            None,
            self.active.tolist(),
            self.num_layers,
            self.prefill_steps,
            self.prompt_tokens,
            flat=self.flat,
            offsets=self.offsets,
            flat_counts=self.counts,
        )
        group.width = self.width
        return group


class _UnpackedGroup(Group):
    """A ``Group`` whose lists come from its arrays on first read (then are plain attributes).
    None stands for "not built yet" (a pickled copy rebuilds them too): ``steps`` is never None,
    and ``counts`` is None only when ``flat_counts`` is (batch 1)."""

    width: int  # keys per layer-step when all have the same number, else 0

    @property  # type: ignore[override]
    def steps(self) -> list[list[int]]:
        v = self.__dict__["steps"]
        if v is None:
            assert self.flat is not None and self.offsets is not None
            v = self.__dict__["steps"] = _split(self.flat, self.offsets, self.width)
        return v

    @steps.setter
    def steps(self, value: list[list[int]]) -> None:
        self.__dict__["steps"] = value

    @property  # type: ignore[override]
    def counts(self) -> list[list[int]] | None:
        v = self.__dict__["counts"]
        if v is None and self.flat_counts is not None:
            assert self.offsets is not None
            v = self.__dict__["counts"] = _split(self.flat_counts, self.offsets, self.width)
        return v

    @counts.setter
    def counts(self, value: list[list[int]] | None) -> None:
        self.__dict__["counts"] = value


def _split(flat: np.ndarray, offsets: np.ndarray, width: int) -> list[list[int]]:
    if width:
        return flat.reshape(-1, width).tolist()
    values = flat.tolist()
    bounds = offsets.tolist()
    return [values[a:b] for a, b in zip(bounds, bounds[1:])]


def key_dtype(num_keys: int) -> type:
    return np.int16 if num_keys <= np.iinfo(np.int16).max else np.int32


def pack_group(group: Group, num_keys: int) -> PackedGroup:
    """``group`` (static: not still forming) as flat arrays; ``num_keys`` = L * E sizes the keys."""
    assert not group.dynamic
    lengths = np.fromiter((len(st) for st in group.steps), np.int64, count=len(group.steps))
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    flat: np.ndarray = np.fromiter(chain.from_iterable(group.steps), key_dtype(num_keys), count=total)
    counts = None
    if group.counts is not None:
        counts = np.fromiter(chain.from_iterable(group.counts), np.int32, count=total)
    width = int(lengths[0]) if len(lengths) and bool((lengths == lengths[0]).all()) else 0
    return PackedGroup(
        group.index,
        group.seqs,
        flat,
        offsets,
        counts,
        np.asarray(group.active, np.int32),
        group.num_layers,
        group.prefill_steps,
        group.prompt_tokens,
        width,
    )


def _pack_single(trace: Trace, index: int, q: int) -> PackedGroup:
    """Batch 1 without a prompt pass, straight from the trace's arrays (no lists on the way)."""
    L, E, k = trace.meta.num_layers, trace.meta.num_experts, trace.meta.top_k
    keys = np.asarray(trace.sequence(q), dtype=np.int64) + _layer_offsets(trace)
    flat = keys.reshape(-1).astype(key_dtype(L * E))
    n = trace.sequence_length(q)
    offsets = np.arange(n * L + 1, dtype=np.int64) * k
    return PackedGroup(index, (q,), flat, offsets, None, np.ones(n, np.int32), L, width=k)


def iter_packed(trace: Trace, batch: int, prefill: bool = False) -> Iterator[PackedGroup]:
    """``iter_groups``'s groups as ``PackedGroup``s (``unpack`` gives equal groups)."""
    num_keys = trace.meta.num_layers * trace.meta.num_experts
    for i, seqs in enumerate(group_indices(trace.num_sequences, batch)):
        if len(seqs) == 1 and not prefill:
            yield _pack_single(trace, i, seqs[0])
            continue
        group = build_group(trace, i, seqs)
        yield pack_group(with_prefill(trace, group) if prefill else group, num_keys)


def prefill_steps(trace: Trace, seqs: tuple[int, ...]) -> tuple[list[list[int]], list[list[int]], int]:
    """One layer-step per layer for the prompt pass: the union of every prompt token's experts in
    order of first use (token, then rank), with the number of prompt tokens routed to each."""
    L, E = trace.meta.num_layers, trace.meta.num_experts
    assert trace.prefill_experts is not None and trace.prefill_offsets is not None  # callers check prefill
    blocks = [
        np.asarray(
            trace.prefill_experts[trace.prefill_offsets[q] : trace.prefill_offsets[q + 1]], dtype=np.int64
        )
        for q in seqs
    ]
    prompt = sum(len(b) for b in blocks)
    steps, counts = [], []
    for layer in range(L):
        order: dict[int, int] = {}
        for b in blocks:
            for key in (b[:, layer, :] + layer * E).ravel().tolist():
                order[key] = order.get(key, 0) + 1
        steps.append(list(order))
        counts.append(list(order.values()))
    return steps, counts, prompt


def with_prefill(trace: Trace, group: Group) -> Group:
    """``group`` with its prompt pass prepended (decode step t becomes layer-steps L*(t+1) ...)."""
    steps, counts, prompt = prefill_steps(trace, group.seqs)
    if prompt == 0:
        return group
    decode_counts = group.counts if group.counts is not None else [[1] * len(st) for st in group.steps]
    return Group(
        group.index,
        group.seqs,
        steps + group.steps,
        counts + decode_counts,
        group.active,
        group.num_layers,
        prefill_steps=len(steps),
        prompt_tokens=prompt,
    )


def group_indices(num_sequences: int, batch: int) -> list[tuple[int, ...]]:
    return [tuple(range(i, min(i + batch, num_sequences))) for i in range(0, num_sequences, batch)]


def _layer_offsets(trace: Trace) -> np.ndarray:
    L, E = trace.meta.num_layers, trace.meta.num_experts
    return (np.arange(L, dtype=np.int64) * E)[None, :, None]


def build_group(trace: Trace, index: int, seqs: tuple[int, ...]) -> Group:
    L = trace.meta.num_layers
    offs = _layer_offsets(trace)
    if len(seqs) == 1:
        keys = (np.asarray(trace.sequence(seqs[0]), dtype=np.int64) + offs).reshape(-1, trace.meta.top_k)
        return Group(index, seqs, keys.tolist(), None, [1] * trace.sequence_length(seqs[0]), L)
    arrays = [np.asarray(trace.sequence(s), dtype=np.int64) + offs for s in seqs]
    lengths = [len(a) for a in arrays]
    steps: list[list[int]] = []
    counts: list[list[int]] = []
    active: list[int] = []
    for t in range(max(lengths)):
        live = [a[t] for a, n in zip(arrays, lengths) if n > t]  # each (L, k)
        active.append(len(live))
        # (B, L, k) -> per layer, rank-major then sequence order
        block = np.stack(live).transpose(1, 2, 0).reshape(L, -1).tolist()
        for row in block:
            order: dict[int, int] = {}
            for key in row:
                order[key] = order.get(key, 0) + 1
            steps.append(list(order))
            counts.append(list(order.values()))
    return Group(index, seqs, steps, counts, active, L)


def iter_groups(trace: Trace, batch: int, prefill: bool = False) -> Iterator[Group]:
    for i, seqs in enumerate(group_indices(trace.num_sequences, batch)):
        group = build_group(trace, i, seqs)
        yield with_prefill(trace, group) if prefill else group


def access_stream(trace: Trace, batch: int, prefill: bool = False) -> np.ndarray:
    """All demand keys in replay order (int32), used to index the future for offline policies."""
    if prefill:
        parts = [
            np.fromiter((k for st in g.steps for k in st), dtype=np.int32)
            for g in iter_groups(trace, batch, True)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, np.int32)
    if batch == 1:
        offs = _layer_offsets(trace)
        per_token = trace.meta.num_layers * trace.meta.top_k
        out = np.empty(trace.num_tokens * per_token, np.int32)  # filled in place: no 2x concatenate
        step = 65536
        for start in range(0, trace.num_tokens, step):
            block = np.asarray(trace.experts[start : start + step], dtype=np.int64) + offs
            out[start * per_token : start * per_token + block.size] = block.reshape(-1)
        return out
    parts = [
        np.fromiter((k for st in g.steps for k in st), dtype=np.int32) for g in iter_groups(trace, batch)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, np.int32)


def expert_counts(trace: Trace) -> np.ndarray:
    """(L, E) number of demand accesses of each expert (streamed in chunks)."""
    L, E = trace.meta.num_layers, trace.meta.num_experts
    counts = np.zeros(L * E, dtype=np.int64)
    offsets = (np.arange(L, dtype=np.int64) * E)[None, :, None]  # one bincount over (layer, expert)
    for start in range(0, trace.num_tokens, 65536):
        block = np.asarray(trace.experts[start : start + 65536], dtype=np.int64) + offsets
        counts += np.bincount(block.ravel(), minlength=L * E)
    return counts.reshape(L, E)


def layer_streams(trace: Trace, max_tokens: int | None = None) -> list[np.ndarray]:
    """Each layer's expert ids in access order (tokens, then ranks), from the first ``max_tokens``."""
    n = trace.num_tokens if max_tokens is None else min(trace.num_tokens, max_tokens)
    block = np.asarray(trace.experts[:n])
    return [block[:, layer, :].reshape(-1) for layer in range(trace.meta.num_layers)]


def decode_step(trace: Trace, rows: list[int]) -> tuple[list[list[int]], list[list[int]]]:
    """The L layer-steps of one decode step over trace token ``rows`` (one per active sequence):
    per layer the union of their experts in (rank, sequence) order, with token counts."""
    L, k = trace.meta.num_layers, trace.meta.top_k
    block = np.asarray(trace.experts[rows], dtype=np.int64) + _layer_offsets(trace)[0]  # (B, L, k)
    steps, counts = [], []
    for row in block.transpose(1, 2, 0).reshape(L, k * len(rows)).tolist():
        order: dict[int, int] = {}
        for key in row:
            order[key] = order.get(key, 0) + 1
        steps.append(list(order))
        counts.append(list(order.values()))
    return steps, counts
