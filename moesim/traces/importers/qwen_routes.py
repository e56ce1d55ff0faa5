"""``routes`` JSON (jinlong-huo/moe_ocs_learning): one request per file, prefill and decode routes.

Each route is one token position with ``phase`` and ``layers: {"0": {experts, weights}, ...}``.
Some captures list experts in ascending weight order (the vLLM one), so every row is re-sorted by
descending weight to get router-rank order. A sibling ``manifest.json`` maps group -> domain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moesim.errors import fail
from moesim.readers import read_json_file
from moesim.traces.importers.common import (
    describe_sources,
    expand_sources,
    offsets_from_lengths,
    ordered_unique,
    rank_by_weight,
    strict_float_list,
    strict_int,
    strict_int_list,
)
from moesim.traces.trace import Trace, TraceMeta

_META_KEYS = ("model_id", "num_moe_layers", "num_experts", "top_k")
_DIM_MAX = 1 << 16  # layers, experts, top_k: far beyond any model, small enough to allocate for
_CELLS_MAX = 1 << 31


@dataclass
class _Request:
    path: Path
    group: str
    meta: dict[str, Any]
    decode: np.ndarray  # (T, L, k)
    weights: np.ndarray  # (T, L, k)
    token_ids: np.ndarray  # (T,)
    prefill: np.ndarray  # (P, L, k)
    reordered: int


def _group(path: Path) -> str:
    name = path.name
    for suffix in (".routing.json", ".json"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _load_json(path: Path) -> Any:
    return read_json_file(path)


def _check_doc(path: Path, doc: Any) -> tuple[dict[str, Any], int, int, int]:
    """The file's meta (checked) and its L, E, k; the routes list's size and token positions."""
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("meta"), dict)
        or not isinstance(doc.get("routes"), list)
    ):
        fail(f"{path}: expected an object with 'meta' and 'routes'; not a qwen-routes file")
    meta = doc["meta"]
    missing = [k for k in _META_KEYS if k not in meta]
    if missing:
        fail(f"{path}: meta lacks {', '.join(missing)}")
    L, E, k = (strict_int(meta[key], f"{path}: meta.{key}", 1, _DIM_MAX) for key in _META_KEYS[1:])
    if not isinstance(meta["model_id"], str):
        fail(f"{path}: meta.model_id is {type(meta['model_id']).__name__}, expected a string")
    if k > E:
        fail(f"{path}: meta.top_k={k} exceeds meta.num_experts={E}")
    if not doc["routes"]:
        fail(f"{path}: routes is empty; a trace needs at least one token")
    if len(doc["routes"]) * L * k > _CELLS_MAX:
        fail(f"{path}: {len(doc['routes'])} routes x {L} layers x top_k {k} is implausibly large; check meta")
    for i, r in enumerate(doc["routes"]):
        if not isinstance(r, dict):
            fail(f"{path}: routes[{i}] is {type(r).__name__}, expected an object")
        strict_int(r.get("token_pos"), f"{path}: routes[{i}].token_pos")
    return meta, L, E, k


def _route_phase(path: Path, i: int, r: dict[str, Any], phases: list[str]) -> str:
    if r.get("token_pos") != i:
        fail(f"{path}: route {i}: token_pos {r.get('token_pos')!r}; positions must be 0..n-1")
    phase = r.get("phase")
    if phase not in ("prefill", "decode"):
        fail(f"{path}: token_pos {i}: phase {phase!r}, expected 'prefill' or 'decode'")
    if phases and phases[-1] == "decode" and phase == "prefill":
        fail(f"{path}: token_pos {i}: prefill route after a decode route")
    return phase


def _route_cells(
    path: Path, i: int, phase: str, r: dict[str, Any], L: int, E: int, k: int
) -> tuple[list[list[int]], list[list[float]]]:
    layers = r.get("layers")
    if not isinstance(layers, dict):
        fail(f"{path}: token_pos {i}: no 'layers' object")
    experts, weights = [], []
    for layer in range(L):
        cell = layers.get(str(layer))
        if cell is None:
            fail(
                f"{path}: token_pos {i} ({phase}) layer {layer}: missing; every route needs all {L} MoE layers"
            )
        at = f"{path}: token_pos {i} ({phase}) layer {layer}"
        if not isinstance(cell, dict):
            fail(f"{at}: expected an object with experts and weights")
        e = strict_int_list(cell.get("experts"), f"{at}: experts", 0, E - 1)
        wt = strict_float_list(cell.get("weights"), f"{at}: weights")
        if len(e) != k or len(wt) != k:
            fail(f"{at}: {len(e)} experts and {len(wt)} weights; need top_k={k} of each")
        experts.append(e)
        weights.append(wt)
    return experts, weights


def _read(path: Path) -> _Request:
    doc = _load_json(path)
    meta, L, E, k = _check_doc(path, doc)
    routes = sorted(doc["routes"], key=lambda r: r["token_pos"])
    ex = np.empty((len(routes), L, k), dtype=np.int64)
    w = np.empty((len(routes), L, k), dtype=np.float64)
    phases: list[str] = []
    tok: list[int] = []
    for i, r in enumerate(routes):
        phase = _route_phase(path, i, r, phases)
        phases.append(phase)
        tok.append(strict_int(r["token_id"], f"{path}: token_pos {i}: token_id") if "token_id" in r else -1)
        ex[i], w[i] = _route_cells(path, i, phase, r, L, E, k)
    ex, w, reordered = rank_by_weight(ex, w)
    is_dec = np.array([p == "decode" for p in phases], dtype=bool)
    return _Request(
        path=path,
        group=_group(path),
        meta=meta,
        decode=ex[is_dec],
        weights=w[is_dec].astype(np.float32),
        token_ids=np.asarray(tok, dtype=np.int64)[is_dec].astype(np.int32),
        prefill=ex[~is_dec],
        reordered=reordered,
    )


def _manifest_domains(files: Sequence[Path]) -> dict[Path, str]:
    """File -> domain from a ``manifest.json`` beside it (``results[].group_id/domain``)."""
    out: dict[Path, str] = {}
    cache: dict[Path, dict[str, str]] = {}
    for f in files:
        mpath = f.parent / "manifest.json"
        if mpath not in cache:
            groups: dict[str, str] = {}
            if mpath.is_file():
                doc = _load_json(mpath)
                for entry in doc.get("results", []) if isinstance(doc, dict) else []:
                    if isinstance(entry, dict) and "group_id" in entry and entry.get("domain"):
                        groups[str(entry["group_id"])] = str(entry["domain"])
            cache[mpath] = groups
        dom = cache[mpath].get(_group(f))
        if dom is not None:
            out[f] = dom
    return out


def import_qwen_routes(
    paths: Sequence[Path], *, model: str | None = None, domain: str | None = None
) -> Trace:
    files = [f for f in expand_sources(paths, ["*.json"], "qwen-routes") if f.name != "manifest.json"]
    if not files:
        fail(f"{paths[0]}: no routes files (manifest.json alone is not a trace)")
    reqs = [_read(f) for f in files]
    ref = reqs[0]
    for r in reqs[1:]:
        for key in _META_KEYS[1:]:
            if r.meta[key] != ref.meta[key]:
                fail(f"{r.path}: meta.{key}={r.meta[key]} differs from {ref.meta[key]} in {ref.path}")
    by_manifest = _manifest_domains(files)
    seq_dom = [by_manifest.get(r.path, domain) for r in reqs]
    domains = ordered_unique(d for d in seq_dom if d is not None)
    model_id = str(ref.meta["model_id"])
    L, E, k = ref.meta["num_moe_layers"], ref.meta["num_experts"], ref.meta["top_k"]
    reordered = sum(r.reordered for r in reqs)
    backends = ordered_unique(str(r.meta.get("backend", "?")) for r in reqs)
    notes = [
        f"qwen-routes import of {describe_sources(files)} (model_id {model_id!r}, backend {', '.join(backends)})",
        f"rank order = descending router weight ({reordered} of {sum(len(r.decode) + len(r.prefill) for r in reqs) * L} "
        "rows re-sorted)",
    ]
    if by_manifest:
        notes.append("domains from manifest.json")
    return Trace(
        meta=TraceMeta(
            model=model or model_id.rstrip("/").rsplit("/", 1)[-1],
            num_layers=L,
            num_experts=E,
            top_k=k,
            dtype="int4" if "4bit" in model_id.lower() else "bf16",
            domains=tuple(domains),
            source="; ".join(notes),
            extra={"sequence_names": [r.group for r in reqs], "reordered_rows": reordered},
        ),
        experts=np.concatenate([r.decode for r in reqs]),
        seq_offsets=offsets_from_lengths([len(r.decode) for r in reqs]),
        seq_domain=np.array([domains.index(d) if d is not None else -1 for d in seq_dom], dtype=np.int16),
        weights=np.concatenate([r.weights for r in reqs]),
        token_ids=np.concatenate([r.token_ids for r in reqs]),
        prefill_experts=np.concatenate([r.prefill for r in reqs]),
        prefill_offsets=offsets_from_lengths([len(r.prefill) for r in reqs]),
    )
