"""``routes`` JSON (jinlong-huo/moe_ocs_learning): one request per file, prefill and decode routes.

Each route is one token position with ``phase`` and ``layers: {"0": {experts, weights}, ...}``.
Some captures list experts in ascending weight order (the vLLM one), so every row is re-sorted by
descending weight to get router-rank order. A sibling ``manifest.json`` maps group -> domain.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moesim.errors import fail
from moesim.traces.importers.common import (
    describe_sources,
    expand_sources,
    offsets_from_lengths,
    ordered_unique,
    rank_by_weight,
)
from moesim.traces.trace import Trace, TraceMeta

_META_KEYS = ("model_id", "num_moe_layers", "num_experts", "top_k")


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
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        fail(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{path}: cannot read ({exc})")


def _read(path: Path) -> _Request:
    doc = _load_json(path)
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
    L, k = int(meta["num_moe_layers"]), int(meta["top_k"])
    routes = sorted(doc["routes"], key=lambda r: r.get("token_pos", -1) if isinstance(r, dict) else -1)
    ex = np.empty((len(routes), L, k), dtype=np.int64)
    w = np.empty((len(routes), L, k), dtype=np.float64)
    phases: list[str] = []
    tok: list[int] = []
    for i, r in enumerate(routes):
        if not isinstance(r, dict) or r.get("token_pos") != i:
            fail(
                f"{path}: route {i}: token_pos {r.get('token_pos') if isinstance(r, dict) else r!r}; positions must be 0..n-1"
            )
        phase = r.get("phase")
        if phase not in ("prefill", "decode"):
            fail(f"{path}: token_pos {i}: phase {phase!r}, expected 'prefill' or 'decode'")
        if phases and phases[-1] == "decode" and phase == "prefill":
            fail(f"{path}: token_pos {i}: prefill route after a decode route")
        phases.append(phase)
        tok.append(r.get("token_id", -1))
        layers = r.get("layers")
        if not isinstance(layers, dict):
            fail(f"{path}: token_pos {i}: no 'layers' object")
        for layer in range(L):
            cell = layers.get(str(layer))
            if cell is None:
                fail(
                    f"{path}: token_pos {i} ({phase}) layer {layer}: missing; every route needs all {L} MoE layers"
                )
            e, wt = cell.get("experts"), cell.get("weights")
            if not isinstance(e, list) or not isinstance(wt, list) or len(e) != k or len(wt) != k:
                fail(f"{path}: token_pos {i} ({phase}) layer {layer}: need {k} experts and {k} weights")
            ex[i, layer], w[i, layer] = e, wt
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
            if int(r.meta[key]) != int(ref.meta[key]):
                fail(f"{r.path}: meta.{key}={r.meta[key]} differs from {ref.meta[key]} in {ref.path}")
    by_manifest = _manifest_domains(files)
    seq_dom = [by_manifest.get(r.path, domain) for r in reqs]
    domains = ordered_unique(d for d in seq_dom if d is not None)
    model_id = str(ref.meta["model_id"])
    L, E, k = int(ref.meta["num_moe_layers"]), int(ref.meta["num_experts"]), int(ref.meta["top_k"])
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
