"""OLMoE per-sequence NPZ chunks: ``chunks/<domain>/sequence_NNNN.npz`` + ``sequence_NNNN.metadata.json``.

Layout (helloimrizy-pages/opt, schema ``olmoe_decode_atomic_routing_v1``): one file per request,
rows token-major then layer, top-8 ids already in descending router weight. Decode only.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moesim.errors import MoesimInputError, fail
from moesim.readers import read_json_file
from moesim.traces.importers.common import (
    describe_sources,
    expand_sources,
    npy_header,
    offsets_from_lengths,
    strict_int,
    strict_int_list,
)
from moesim.traces.trace import Trace, TraceMeta

SCHEMA = "olmoe_decode_atomic_routing_v1"
_DIM_MAX = 1 << 16  # layers, experts: far beyond any model
_MAX_RATIO = 1100  # deflate cannot expand data more than ~1032x
_KEYS = (
    "sequence_id",
    "domain_id",
    "generated_token_index",
    "layer_index",
    "requested_expert_ids",
    "router_weights",
    "token_id",
)


@dataclass
class _Chunk:
    path: Path
    sequence_id: int
    domain_id: int
    experts: np.ndarray  # (T, L, k)
    weights: np.ndarray  # (T, L, k)
    token_ids: np.ndarray  # (T,)
    domains: list[str]
    num_experts: int
    layer_indices: list[int]


def _metadata_path(npz: Path) -> Path:
    return npz.with_name(npz.name[: -len(".npz")] + ".metadata.json")


def _read_metadata(npz: Path) -> dict:
    mpath = _metadata_path(npz)
    if not mpath.is_file():
        fail(
            f"{mpath}: missing; the olmoe-npz importer needs each chunk's metadata (domain names, E, layers)"
        )
    meta = read_json_file(mpath)
    if not isinstance(meta, dict):
        fail(f"{mpath}: top level is a JSON {type(meta).__name__}; not an {SCHEMA} metadata file")
    for key in ("domains", "num_experts", "top_k", "layer_indices"):
        if key not in meta:
            fail(f"{mpath}: no {key!r} key; not an {SCHEMA} metadata file")
    E = strict_int(meta["num_experts"], f"{mpath}: num_experts", 1, _DIM_MAX)
    strict_int(meta["top_k"], f"{mpath}: top_k", 1, E)
    if not strict_int_list(meta["layer_indices"], f"{mpath}: layer_indices", 0, _DIM_MAX):
        fail(f"{mpath}: layer_indices is empty; a trace needs at least one MoE layer")
    doms = meta["domains"]
    if not isinstance(doms, list) or not all(isinstance(d, str) for d in doms):
        fail(f"{mpath}: domains must be a list of names (strings)")
    return meta


def _checked_header(zf: zipfile.ZipFile, name: str, path: Path) -> None:
    """Refuse an array whose header claims more data than its zip member can hold: numpy would
    allocate the claimed size before reading a byte."""
    info = zf.getinfo(name)
    with zf.open(info) as fh:
        shape, dtype = npy_header(fh)
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if nbytes > info.file_size or info.file_size > _MAX_RATIO * info.compress_size + (1 << 20):
        fail(
            f"{path}: array {name[:-4]!r} claims {nbytes} bytes but its zip entry holds "
            f"{info.file_size}; the file is corrupt"
        )


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    want = (*_KEYS, "schema_version")
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            missing = [k for k in want if f"{k}.npy" not in names]
            if missing:
                fail(f"{path}: lacks array(s) {', '.join(missing)}; not an {SCHEMA} chunk")
            for k in want:
                _checked_header(zf, f"{k}.npy", path)
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in want}
    except MoesimInputError:
        raise
    except Exception as exc:  # zipfile, zlib and numpy each raise their own types for a bad file
        msg = str(exc).splitlines()[0][:100] if str(exc) else ""
        fail(f"{path}: cannot read NPZ ({type(exc).__name__}: {msg}); the file is truncated or corrupt")
    raise AssertionError  # unreachable


def _check_arrays(path: Path, a: dict[str, np.ndarray]) -> None:
    if a["schema_version"].ndim != 0 or str(a["schema_version"]) != SCHEMA:
        fail(f"{path}: schema_version {str(a['schema_version'])[:40]!r}, expected {SCHEMA!r}")
    n = len(a["requested_expert_ids"]) if a["requested_expert_ids"].ndim else -1
    for key in _KEYS:
        arr = a[key]
        want_kind = "f" if key == "router_weights" else "iu"
        if arr.dtype.kind not in want_kind:
            fail(
                f"{path}: {key} has dtype {arr.dtype}, expected {'float' if want_kind == 'f' else 'integer'}"
            )
        if (
            arr.ndim < 1
            or len(arr) != n
            or (arr.ndim != 1) != (key in ("requested_expert_ids", "router_weights"))
        ):
            fail(f"{path}: {key} has shape {arr.shape}; expected one row per (token, layer) ({n} rows)")
    tid = a["token_id"]
    if len(tid) and (int(tid.min()) < 0 or int(tid.max()) > np.iinfo(np.int32).max):
        fail(f"{path}: token_id holds values outside [0, 2**31-1]; they would not fit int32")


def _read_chunk(path: Path) -> _Chunk:
    meta = _read_metadata(path)
    a = _load_npz(path)
    _check_arrays(path, a)
    ex, w = a["requested_expert_ids"], a["router_weights"]
    n = len(ex)
    L, k = len(meta["layer_indices"]), int(meta["top_k"])
    if ex.ndim != 2 or ex.shape[1] != k or w.shape != ex.shape:
        fail(
            f"{path}: requested_expert_ids shape {ex.shape} / router_weights {w.shape}, expected (N, top_k={k})"
        )
    if n % L:
        fail(f"{path}: {n} rows is not a whole number of tokens x {L} layers")
    for key in ("sequence_id", "domain_id"):
        if len(a[key]) and (a[key] != a[key][0]).any():
            row = int(np.flatnonzero(a[key] != a[key][0])[0])
            fail(f"{path}: row {row}: {key} changes within one chunk ({a[key][0]} -> {a[key][row]})")
    T = n // L
    t, layer = a["generated_token_index"].astype(np.int64), a["layer_index"].astype(np.int64)
    bad = np.flatnonzero((t < 0) | (t >= T) | (layer < 0) | (layer >= L))
    if len(bad):
        r = int(bad[0])
        fail(f"{path}: row {r}: token {t[r]} layer {layer[r]} outside the chunk's {T} tokens x {L} layers")
    cell = t * L + layer
    counts = np.bincount(cell, minlength=T * L)
    if (counts != 1).any():
        c = int(np.flatnonzero(counts != 1)[0])
        what = "missing" if counts[c] == 0 else "duplicated"
        fail(f"{path}: token {c // L} layer {c % L}: {what} row; each (token, layer) needs exactly one row")
    order = np.argsort(cell, kind="stable")  # the chunks are already token-major; this makes sure
    tok_ids = a["token_id"][order].reshape(T, L)[:, 0]
    return _Chunk(
        path=path,
        sequence_id=int(a["sequence_id"][0]) if n else -1,
        domain_id=int(a["domain_id"][0]) if n else -1,
        experts=ex[order].reshape(T, L, k),
        weights=w[order].reshape(T, L, k).astype(np.float32),
        token_ids=tok_ids.astype(np.int32),
        domains=[str(d) for d in meta["domains"]],
        num_experts=int(meta["num_experts"]),
        layer_indices=[int(i) for i in meta["layer_indices"]],
    )


def import_olmoe_npz(paths: Sequence[Path], *, model: str = "OLMoE-1B-7B-0924") -> Trace:
    files = expand_sources(paths, ["*.npz"], "olmoe-npz")
    chunks = [_read_chunk(f) for f in files]
    ref = chunks[0]
    seen: dict[int, Path] = {}
    for c in chunks:
        for attr in ("domains", "num_experts", "layer_indices"):
            if getattr(c, attr) != getattr(ref, attr):
                fail(
                    f"{_metadata_path(c.path)}: {attr} {getattr(c, attr)} differs from {getattr(ref, attr)} in {ref.path}"
                )
        if c.experts.shape[2] != ref.experts.shape[2]:
            fail(f"{c.path}: top_k {c.experts.shape[2]} differs from {ref.experts.shape[2]} in {ref.path}")
        if c.sequence_id in seen:
            fail(f"{c.path}: sequence_id {c.sequence_id} already imported from {seen[c.sequence_id]}")
        seen[c.sequence_id] = c.path
        if not 0 <= c.domain_id < len(c.domains):
            fail(f"{c.path}: domain_id {c.domain_id} but the metadata lists {len(c.domains)} domains")
    chunks.sort(key=lambda c: c.sequence_id)
    present = sorted({c.domain_id for c in chunks})  # keep metadata order, drop domains not imported
    remap = {d: i for i, d in enumerate(present)}
    L, k = ref.experts.shape[1:]
    layer_indices = tuple(ref.layer_indices)
    meta = TraceMeta(
        model=model,
        num_layers=int(L),
        num_experts=ref.num_experts,
        top_k=int(k),
        layer_indices=() if layer_indices == tuple(range(L)) else layer_indices,
        dtype="bf16",
        domains=tuple(ref.domains[d] for d in present),
        source=(
            f"olmoe-npz import of {len(chunks)} chunk files ({describe_sources(files, limit=2)}); "
            f"{SCHEMA} (greedy decode of allenai/OLMoE-1B-7B-0924, decode tokens only; weights are "
            "softmax probabilities over all experts, not renormalised)"
        ),
        extra={"sequence_names": [str(c.sequence_id) for c in chunks]},
    )
    return Trace(
        meta=meta,
        experts=np.concatenate([c.experts for c in chunks]),
        seq_offsets=offsets_from_lengths([len(c.experts) for c in chunks]),
        seq_domain=np.array([remap[c.domain_id] for c in chunks], dtype=np.int16),
        weights=np.concatenate([c.weights for c in chunks]),
        token_ids=np.concatenate([c.token_ids for c in chunks]),
    )
