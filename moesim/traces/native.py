"""The native on-disk trace: ``NAME.moetrace/`` = ``trace.json`` + one ``.npy`` per array.

Plain ``.npy`` (no pickles, no compression) so every array can be memory-mapped and a
million-token trace is never read whole. See docs/trace-format.md.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

from moesim.errors import fail
from moesim.io import atomic_dir, dumps_json
from moesim.readers import read_json_file
from moesim.traces.importers.common import ID_MAX, npy_header, strict_int, strict_int_list
from moesim.traces.pages import release
from moesim.traces.trace import SCHEMA_NAME, SCHEMA_VERSION, Trace, TraceMeta

MANIFEST = "trace.json"

# Array name -> file; the order is also the order of the digest.
ARRAY_FILES: dict[str, str] = {
    "experts": "experts.npy",
    "seq_offsets": "seq_offsets.npy",
    "seq_domain": "seq_domain.npy",
    "weights": "weights.npy",
    "token_ids": "token_ids.npy",
    "prefill_experts": "prefill_experts.npy",
    "prefill_offsets": "prefill_offsets.npy",
    "hidden_states": "hidden_states.npy",
    "router_inputs": "router_inputs.npy",
    "router_probs": "router_probs.npy",
}
# Arrays whose on-disk dtype may be either of these (the first is the default).
FLEXIBLE_DTYPES: dict[str, tuple[np.dtype, ...]] = {"router_probs": (np.dtype("<f4"), np.dtype("<f2"))}
REQUIRED_ARRAYS = ("experts", "seq_offsets", "seq_domain")
_META_FIELDS = tuple(f.name for f in fields(TraceMeta))
_REQUIRED_META = ("model", "num_layers", "num_experts", "top_k")

# Rows per chunk when copying or hashing: bounded memory whatever the trace size.
_CHUNK_BYTES = 16 << 20


def expert_dtype(num_experts: int) -> np.dtype:
    return np.dtype("<i2") if num_experts <= np.iinfo(np.int16).max else np.dtype("<i4")


def array_dtypes(meta: TraceMeta, trace: Trace | None = None) -> dict[str, np.dtype]:
    """Canonical little-endian dtype of every array for a trace with this metadata.

    ``router_probs`` is float32 unless ``trace`` holds it as float16 (captures of big models keep
    float16 to halve an (N, L, E) array); hidden states are always float16.
    """
    ex = expert_dtype(meta.num_experts)
    out = {
        "experts": ex,
        "seq_offsets": np.dtype("<i8"),
        "seq_domain": np.dtype("<i2"),
        "weights": np.dtype("<f4"),
        "token_ids": np.dtype("<i4"),
        "prefill_experts": ex,
        "prefill_offsets": np.dtype("<i8"),
        "hidden_states": np.dtype("<f2"),
        "router_inputs": np.dtype("<f2"),
        "router_probs": np.dtype("<f4"),
    }
    if trace is not None:
        for name, allowed in FLEXIBLE_DTYPES.items():
            arr = getattr(trace, name)
            if arr is not None and np.dtype(arr.dtype).newbyteorder("<") in allowed:
                out[name] = np.dtype(arr.dtype).newbyteorder("<")
    return out


def _present_arrays(trace: Trace) -> dict[str, np.ndarray]:
    return {name: getattr(trace, name) for name in ARRAY_FILES if getattr(trace, name) is not None}


def _meta_json(meta: TraceMeta) -> dict[str, Any]:
    out = asdict(meta)
    out["layer_indices"] = [int(i) for i in meta.layer_indices]
    out["domains"] = list(meta.domains)
    return out


def manifest(trace: Trace) -> dict[str, Any]:
    """The ``trace.json`` document describing ``trace`` (what save_trace writes)."""
    dtypes = array_dtypes(trace.meta, trace)
    arrays = {
        name: {"file": ARRAY_FILES[name], "dtype": dtypes[name].str, "shape": [int(n) for n in arr.shape]}
        for name, arr in _present_arrays(trace).items()
    }
    pre = trace.prefill_offsets
    return {
        "schema": SCHEMA_NAME,
        "version": SCHEMA_VERSION,
        "meta": _meta_json(trace.meta),
        "counts": {
            "sequences": trace.num_sequences,
            "tokens": trace.num_tokens,
            "prefill_tokens": int(pre[-1]) if pre is not None and len(pre) else 0,
        },
        "arrays": arrays,
    }


def _manifest_text(trace: Trace) -> str:
    try:
        return dumps_json(manifest(trace))
    except (TypeError, ValueError) as exc:
        fail(
            f"trace metadata is not plain JSON ({exc}); meta.extra may hold only str/int/float/bool/list/dict"
        )
    raise AssertionError  # unreachable: fail() raises


def _row_chunks(arr: np.ndarray) -> Iterator[slice]:
    row_bytes = max(1, int(np.prod(arr.shape[1:], dtype=np.int64)) * arr.dtype.itemsize)
    step = max(1, _CHUNK_BYTES // row_bytes)
    for start in range(0, len(arr), step):
        yield slice(start, min(start + step, len(arr)))


def _cast_chunk(name: str, chunk: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind in "iu" and chunk.size:
        if chunk.dtype.kind not in "iu":
            fail(f"{name} must be an integer array, got dtype {chunk.dtype}")
        info = np.iinfo(dtype)
        lo, hi = int(chunk.min()), int(chunk.max())
        if lo < info.min or hi > info.max:
            fail(f"{name} holds values in [{lo}, {hi}] that do not fit the on-disk dtype {dtype}")
    elif dtype.itemsize == 2 and dtype.kind == "f" and chunk.size and chunk.dtype != dtype:
        # float16 tops out at 65504: a silent cast would turn large activations into inf
        peak = float(np.max(np.abs(chunk)))
        if peak > float(np.finfo(np.float16).max):
            fail(
                f"{name} holds |values| up to {peak:.6g}, beyond float16's range (65504); "
                "clip or rescale them before saving"
            )
    return np.ascontiguousarray(chunk, dtype=dtype)


def _write_array(path: Path, name: str, arr: np.ndarray, dtype: np.dtype) -> None:
    if arr.ndim == 0 or arr.size == 0:
        np.save(path, _cast_chunk(name, np.asarray(arr), dtype), allow_pickle=False)
        return
    # open_memmap writes the header, then we fill it chunk by chunk: a memory-mapped source is streamed.
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=arr.shape)
    try:
        for sl in _row_chunks(arr):
            out[sl] = _cast_chunk(name, np.asarray(arr[sl]), dtype)
        out.flush()
    finally:
        del out


def save_trace(trace: Trace, path: str | os.PathLike, *, validate: bool = True) -> Path:
    """Write ``trace`` as a ``.moetrace`` directory, atomically (all or nothing). Returns the path."""
    path = Path(path)
    if path.exists() and not (path / MANIFEST).is_file():
        # atomic_dir would delete whatever is there; only ever replace an existing trace
        fail(f"{path}: exists and is not a moesim trace; refusing to replace it (choose another path)")
    if validate:
        from moesim.traces.validate import validate_trace

        validate_trace(trace, str(path))
    text = _manifest_text(trace)
    dtypes = array_dtypes(trace.meta, trace)

    def build(tmp: Path) -> None:
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; a trace is ordinary data
        for name, arr in _present_arrays(trace).items():
            _write_array(tmp / ARRAY_FILES[name], name, arr, dtypes[name])
        (tmp / MANIFEST).write_text(text, encoding="utf-8")

    atomic_dir(path, build)
    return path


# ---------------------------------------------------------------------------------------------- loading


def _resolve_dir(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.name == MANIFEST and path.is_file():
        return path.parent
    if not path.exists():
        fail(f"{path}: no such trace (expected a NAME.moetrace directory holding {MANIFEST})")
    if not path.is_dir():
        fail(f"{path}: not a trace directory (expected a NAME.moetrace directory holding {MANIFEST})")
    if not (path / MANIFEST).is_file():
        fail(
            f"{path / MANIFEST}: missing; {path} is not a moesim trace (create one with `moesim trace import`)"
        )
    return path


def read_manifest(path: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """Parse and check ``trace.json``; returns (trace dir, manifest)."""
    root = _resolve_dir(path)
    mpath = root / MANIFEST
    doc = read_json_file(mpath, "trace manifest", "the file is corrupt, re-create the trace")
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA_NAME:
        got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        fail(f"{mpath}: schema is {got!r}, expected {SCHEMA_NAME!r}; not a moesim trace")
    if doc.get("version") != SCHEMA_VERSION:
        fail(
            f"{mpath}: unknown trace schema version {doc.get('version')!r}; this moesim reads version "
            f"{SCHEMA_VERSION} (upgrade moesim or re-import the trace)"
        )
    for key in ("meta", "arrays"):
        if not isinstance(doc.get(key), dict):
            fail(f"{mpath}: missing or malformed {key!r} section; re-create the trace")
    return root, doc


_STR_META = ("model", "dtype", "source")


def _meta_from_json(mpath: Path, raw: dict[str, Any]) -> TraceMeta:
    unknown = sorted(set(raw) - set(_META_FIELDS))
    if unknown:
        fail(f"{mpath}: unknown meta field(s) {', '.join(unknown)}; known: {', '.join(_META_FIELDS)}")
    missing = [k for k in _REQUIRED_META if k not in raw]
    if missing:
        fail(f"{mpath}: meta lacks {', '.join(missing)}; add it (see docs/trace-format.md)")
    kw = dict(raw)
    for key in ("num_layers", "num_experts", "top_k", "num_shared_experts"):
        if key in kw:
            kw[key] = strict_int(kw[key], f"{mpath}: meta.{key}", 0, ID_MAX)
    for key in _STR_META:
        if key in kw and not isinstance(kw[key], str):
            fail(f"{mpath}: meta.{key} is {type(kw[key]).__name__}, expected a string")
    kw["layer_indices"] = tuple(strict_int_list(kw.get("layer_indices", []), f"{mpath}: meta.layer_indices"))
    doms = kw.get("domains", [])
    if not isinstance(doms, list) or not all(isinstance(d, str) for d in doms):
        fail(f"{mpath}: meta.domains must be a list of names (strings)")
    kw["domains"] = tuple(doms)
    if not isinstance(kw.get("extra", {}), dict):
        fail(f"{mpath}: meta.extra must be an object")
    return TraceMeta(**kw)


def _array_path(root: Path, name: str, file: Any) -> Path:
    """The array's file, which must be a plain file name inside the trace directory: a manifest
    never makes moesim read (or memory-map) a file elsewhere."""
    mpath = root / MANIFEST
    if not isinstance(file, str) or not file or Path(file).name != file or file in (".", ".."):
        fail(f"{mpath}: arrays.{name}.file {file!r} must be a file name inside the trace directory")
    fpath = root / file
    if fpath.is_symlink() or (fpath.exists() and fpath.resolve().parent != root.resolve()):
        fail(f"{mpath}: arrays.{name}.file {file!r} is a link; a trace holds its arrays as plain files")
    if not fpath.is_file():
        fail(
            f"{fpath}: missing array file listed in {MANIFEST} as {name}; the trace is incomplete, re-create it"
        )
    return fpath


def _spec_of(mpath: Path, name: str, spec: Any, meta: TraceMeta) -> tuple[tuple[int, ...], np.dtype]:
    if not isinstance(spec, dict) or not {"file", "dtype", "shape"} <= set(spec):
        fail(f"{mpath}: arrays.{name} must give file, dtype and shape")
    allowed = {array_dtypes(meta)[name].str, *(d.str for d in FLEXIBLE_DTYPES.get(name, ()))}
    if spec["dtype"] not in allowed:
        fail(f"{mpath}: arrays.{name}.dtype is {spec['dtype']!r}; expected {' or '.join(sorted(allowed))}")
    if not isinstance(spec["shape"], list) or len(spec["shape"]) > 3:
        fail(f"{mpath}: arrays.{name}.shape must be a list of at most 3 sizes")
    shape = tuple(
        strict_int(n, f"{mpath}: arrays.{name}.shape[{i}]", 0, 1 << 62) for i, n in enumerate(spec["shape"])
    )
    return shape, np.dtype(spec["dtype"])


def _load_array(root: Path, name: str, spec: Any, meta: TraceMeta) -> np.ndarray:
    mpath = root / MANIFEST
    want_shape, want_dtype = _spec_of(mpath, name, spec, meta)
    fpath = _array_path(root, name, spec["file"])
    try:
        with fpath.open("rb") as fh:
            shape, dtype = npy_header(fh)
            data_start = fh.tell()
    except Exception as exc:  # numpy raises ValueError/OSError/EOFError/SyntaxError for bad headers
        fail(
            f"{fpath}: not a readable .npy file ({type(exc).__name__}: {str(exc)[:100]}); the file is truncated or corrupt"
        )
    if dtype.hasobject:
        fail(f"{fpath}: not a readable .npy file (it holds pickled Python objects, which moesim never loads)")
    if shape != want_shape:
        fail(f"{fpath}: shape {shape} but {MANIFEST} says {want_shape}; the trace is inconsistent")
    if dtype != want_dtype:
        fail(f"{fpath}: dtype {dtype.str} but {MANIFEST} says {want_dtype.str}; the trace is inconsistent")
    need = data_start + int(np.prod(shape, dtype=object)) * dtype.itemsize
    if fpath.stat().st_size < need:
        fail(
            f"{fpath}: not a readable .npy file ({fpath.stat().st_size} bytes, its header needs {need}); the file is truncated or corrupt"
        )
    try:
        arr = np.load(fpath, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # the header was checked; this is an unreadable file (permissions, I/O)
        fail(f"{fpath}: not a readable .npy file ({type(exc).__name__}: {str(exc)[:100]})")
    return arr


def load_trace(path: str | os.PathLike, validate: bool = True) -> Trace:
    """Open a ``.moetrace`` directory (or its ``trace.json``); arrays are read-only memory maps."""
    root, doc = read_manifest(path)
    mpath = root / MANIFEST
    meta = _meta_from_json(mpath, doc["meta"])
    specs = doc["arrays"]
    unknown = sorted(set(specs) - set(ARRAY_FILES))
    if unknown:
        fail(f"{mpath}: unknown array(s) {', '.join(unknown)}; known: {', '.join(ARRAY_FILES)}")
    for name in REQUIRED_ARRAYS:
        if name not in specs:
            fail(f"{mpath}: arrays.{name} is required but absent; re-create the trace")
    arrays = {name: _load_array(root, name, spec, meta) for name, spec in specs.items()}
    if ("prefill_experts" in arrays) != ("prefill_offsets" in arrays):
        fail(f"{mpath}: prefill_experts and prefill_offsets must be given together")
    trace = Trace(meta=meta, path=root, **arrays)
    counts = doc.get("counts", {})
    if isinstance(counts, dict):
        for key, have in (("sequences", len(trace.seq_offsets) - 1), ("tokens", len(trace.experts))):
            if key in counts and (isinstance(counts[key], bool) or counts[key] != have):
                fail(
                    f"{mpath}: counts.{key}={counts[key]} but the arrays hold {have}; the trace is inconsistent"
                )
    if validate:
        from moesim.traces.validate import validate_trace

        validate_trace(trace)
    return trace


# --------------------------------------------------------------------------------------------- provenance


def trace_digest(trace_or_path: Trace | str | os.PathLike) -> str:
    """``sha256:<hex>`` over the canonical trace.json text and every array's bytes (streamed in chunks).

    A trace and its saved copy have the same digest: both hash the canonical dtypes, not the
    in-memory ones, and trace.json is re-serialised canonically (formatting does not matter).
    """
    trace = trace_or_path if isinstance(trace_or_path, Trace) else load_trace(trace_or_path, validate=False)
    h = hashlib.sha256()
    h.update(_manifest_text(trace).encode("utf-8"))
    dtypes = array_dtypes(trace.meta, trace)
    for name, arr in _present_arrays(trace).items():
        h.update(f"\n{name}\n".encode())
        if arr.ndim == 0:
            h.update(_cast_chunk(name, np.asarray(arr), dtypes[name]).tobytes())
            continue
        for sl in _row_chunks(arr):
            h.update(memoryview(_cast_chunk(name, np.asarray(arr[sl]), dtypes[name])).cast("B"))  # type: ignore[arg-type]
            release(arr)  # hashed pages need not stay resident (moesim/traces/pages.py)
    return "sha256:" + h.hexdigest()
