"""Export a trace for other tools: a Parquet table (one row per expert access) or libCacheSim's
oracleGeneral binary (so its eviction policies run on the same access stream as moesim's caches).

oracleGeneral is a packed little-endian array of 24-byte records::

    struct { uint32 clock_time; uint64 obj_id; uint32 obj_size; int64 next_access_vtime; }

``obj_id = layer * E + expert`` (moesim's key: one object per expert of each layer, global scope);
requests follow moesim's replay order (groups of ``batch`` sequences, layer-step by layer-step, each
step's distinct experts in (rank, sequence) order; with ``prefill`` each group's prompt pass first);
``clock_time`` is the layer-step's index in that order; ``next_access_vtime`` is the 1-based index
of the next request for the same object, -1 for none (what libCacheSim's ``traceConv`` writes).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moesim.errors import fail
from moesim.io import atomic_write_with
from moesim.traces.replay import access_stream, iter_groups
from moesim.traces.trace import Trace, TraceMeta

FORMATS = ("parquet", "libcachesim")
ORACLE_GENERAL = np.dtype(
    [("clock_time", "<u4"), ("obj_id", "<u8"), ("obj_size", "<u4"), ("next_access_vtime", "<i8")]
)
PARQUET_SCHEMA_KEY = b"moesim.export"
PARQUET_FORMAT = "moesim-accesses-v1"
_ROWS_PER_GROUP = 32768  # trace rows (tokens) per Parquet row group: bounded memory on long traces


@dataclass(frozen=True)
class ExportInfo:
    path: Path
    records: int  # rows (parquet) or requests (libcachesim)
    objects: int  # distinct (layer, expert) keys accessed


# -- Parquet ---------------------------------------------------------------------------------------
def _access_table(trace: Trace, rows: np.ndarray, offsets: np.ndarray, start: int, phase: str, weights):
    """One row per (token, layer, rank) of ``rows`` (a block of ``experts``-shaped ids from row ``start``)."""
    import pyarrow as pa

    n, L, k = rows.shape
    token_rows = np.arange(start, start + n, dtype=np.int64)
    seq = np.searchsorted(offsets, token_rows, side="right") - 1
    token = token_rows - offsets[seq]
    shape = (n, L, k)
    ex = np.asarray(rows, dtype=np.int32)
    layer = np.broadcast_to(np.arange(L, dtype=np.int16)[None, :, None], shape)
    domain_idx = np.asarray(trace.seq_domain, dtype=np.int32)[seq]
    names = list(trace.meta.domains)
    cols = {
        "phase": pa.DictionaryArray.from_arrays(
            np.full(n * L * k, 0 if phase == "decode" else 1, np.int8), ["decode", "prefill"]
        ),
        "sequence": np.broadcast_to(seq.astype(np.int32)[:, None, None], shape).ravel(),
        "token": np.broadcast_to(token.astype(np.int32)[:, None, None], shape).ravel(),
        "layer": layer.ravel(),
        "rank": np.broadcast_to(np.arange(k, dtype=np.int8)[None, None, :], shape).ravel(),
        "expert": ex.ravel(),
        "key": (ex + layer.astype(np.int32) * trace.meta.num_experts).ravel(),
        "domain": pa.DictionaryArray.from_arrays(
            np.broadcast_to(np.maximum(domain_idx, 0)[:, None, None], shape).ravel(),
            pa.array(names or [""], pa.string()),
            mask=np.broadcast_to((domain_idx < 0)[:, None, None], shape).ravel(),
        ),
    }
    if weights is not None:
        cols["weight"] = np.asarray(weights, dtype=np.float32).ravel()
    elif trace.weights is not None:  # prompt rows carry no router weights: one schema for the file
        cols["weight"] = pa.nulls(n * L * k, pa.float32())
    return pa.table(cols)


def _meta_json(trace: Trace) -> bytes:
    m = trace.meta
    doc = {
        "format": PARQUET_FORMAT,
        "model": m.model,
        "num_layers": m.num_layers,
        "num_experts": m.num_experts,
        "top_k": m.top_k,
        "domains": list(m.domains),
        "source": m.source,
        "seq_offsets": np.asarray(trace.seq_offsets).tolist(),
        "prefill_offsets": None
        if trace.prefill_offsets is None
        else np.asarray(trace.prefill_offsets).tolist(),
        "seq_domain": np.asarray(trace.seq_domain).tolist(),
    }
    return json.dumps(doc, sort_keys=True).encode("utf-8")


def _parquet_blocks(trace: Trace) -> Iterator[tuple[str, np.ndarray, np.ndarray, int, np.ndarray | None]]:
    parts = [("decode", trace.experts, trace.seq_offsets, trace.weights)]
    if trace.prefill_experts is not None and trace.prefill_offsets is not None:
        parts.append(("prefill", trace.prefill_experts, trace.prefill_offsets, None))
    for phase, experts, offsets, weights in parts:
        offsets = np.asarray(offsets, dtype=np.int64)
        for a in range(0, len(experts), _ROWS_PER_GROUP):
            b = min(a + _ROWS_PER_GROUP, len(experts))
            w = None if weights is None else np.asarray(weights[a:b])
            yield phase, np.asarray(experts[a:b]), offsets, a, w


def export_parquet(trace: Trace, out: Path) -> ExportInfo:
    import pyarrow.parquet as pq

    rows = 0
    seen = np.zeros(trace.meta.num_layers * trace.meta.num_experts, bool)

    def write(tmp: Path) -> None:
        nonlocal rows
        writer = None
        try:
            for phase, block, offsets, start, w in _parquet_blocks(trace):
                table = _access_table(trace, block, offsets, start, phase, w)
                if writer is None:
                    schema = table.schema.with_metadata({PARQUET_SCHEMA_KEY: _meta_json(trace)})
                    writer = pq.ParquetWriter(tmp, schema, compression="zstd")
                writer.write_table(table)
                rows += table.num_rows
                seen[np.asarray(table.column("key"))] = True
            if writer is None:
                fail("the trace has no tokens to export")
        finally:
            if writer is not None:
                writer.close()

    atomic_write_with(out, write)
    return ExportInfo(out, rows, int(seen.sum()))


def load_parquet_export(path: str | Path) -> Trace:
    """Read back a Parquet export (routing, domains, router weights) as a Trace."""
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        pf = pq.ParquetFile(path)
        raw = (pf.schema_arrow.metadata or {}).get(PARQUET_SCHEMA_KEY)
        doc = json.loads(raw) if raw else None
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        fail(f"{path}: not a readable Parquet file ({exc.__class__.__name__})")
    if not isinstance(doc, dict) or doc.get("format") != PARQUET_FORMAT:
        fail(f"{path}: not a moesim Parquet export (no {PARQUET_SCHEMA_KEY.decode()} metadata)")
    L, k = doc["num_layers"], doc["top_k"]
    table = pf.read(
        columns=["phase", "expert", "weight"] if "weight" in pf.schema_arrow.names else ["phase", "expert"]
    )
    phase = np.asarray(table.column("phase").combine_chunks().indices)
    experts = np.asarray(table.column("expert")).astype(np.int16 if doc["num_experts"] <= 32767 else np.int32)
    dec = phase == 0
    meta = TraceMeta(
        doc["model"], L, doc["num_experts"], k, domains=tuple(doc["domains"]), source=doc["source"]
    )
    trace = Trace(
        meta,
        experts[dec].reshape(-1, L, k),
        np.asarray(doc["seq_offsets"], np.int64),
        np.asarray(doc["seq_domain"], np.int16),
    )
    if "weight" in table.column_names:
        trace.weights = np.asarray(table.column("weight"))[dec].reshape(-1, L, k)
    if doc["prefill_offsets"] is not None:
        trace.prefill_experts = experts[~dec].reshape(-1, L, k)
        trace.prefill_offsets = np.asarray(doc["prefill_offsets"], np.int64)
    return trace


# -- libCacheSim oracleGeneral ---------------------------------------------------------------------
def request_stream(trace: Trace, batch: int = 1, prefill: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(keys, layer-step index of each) in moesim's replay order."""
    if batch < 1:
        fail(f"--batch: must be >= 1, got {batch}")
    if prefill and trace.prefill_experts is None:
        fail("--prefill: the trace has no prefill routing")
    if batch == 1 and not prefill:
        keys = access_stream(trace, 1).astype(np.int64)
        return keys, np.arange(len(keys), dtype=np.int64) // trace.meta.top_k
    keys_parts: list[np.ndarray] = []
    lens: list[int] = []
    for g in iter_groups(trace, batch, prefill):
        lens.extend(len(st) for st in g.steps)
        keys_parts.append(np.fromiter((key for st in g.steps for key in st), dtype=np.int64))
    keys = np.concatenate(keys_parts) if keys_parts else np.zeros(0, np.int64)
    return keys, np.repeat(np.arange(len(lens), dtype=np.int64), lens)


def next_access_vtime(keys: np.ndarray) -> np.ndarray:
    """1-based index of the next request for the same key (libCacheSim's vtime), -1 for none."""
    order = np.argsort(keys, kind="stable")
    nxt = np.full(len(keys), -1, np.int64)
    if len(keys) > 1:
        same = keys[order[1:]] == keys[order[:-1]]
        nxt[order[:-1][same]] = order[1:][same] + 1
    return nxt


def oracle_general_records(
    trace: Trace, batch: int = 1, prefill: bool = False, obj_size: int = 1
) -> np.ndarray:
    if not 1 <= obj_size <= 0xFFFFFFFF:
        fail(f"--obj-size: must be in [1, 4294967295] bytes, got {obj_size}")
    keys, clock = request_stream(trace, batch, prefill)
    if len(clock) and clock[-1] >= 1 << 32:
        fail(f"the trace replays {clock[-1] + 1:,} layer-steps; oracleGeneral's uint32 clock_time holds 2^32")
    rec = np.empty(len(keys), ORACLE_GENERAL)
    rec["clock_time"] = clock
    rec["obj_id"] = keys
    rec["obj_size"] = obj_size
    rec["next_access_vtime"] = next_access_vtime(keys)
    return rec


# Requests per block of the streaming writer: ~50 bytes of working memory each.
_CHUNK_REQUESTS = 1 << 22


@dataclass
class _Block:
    start: int  # index of its first request in the whole stream
    keys: np.ndarray  # int64 object ids
    clock: np.ndarray  # int64 layer-step of each request


def _blocks_batch1(trace: Trace) -> tuple[list[tuple[int, int]], int, int, Callable[[int], _Block]]:
    """Batch 1 without prefill: blocks are token ranges, computed on demand (nothing kept)."""
    L, k = trace.meta.num_layers, trace.meta.top_k
    per = max(1, _CHUNK_REQUESTS // (L * k))
    spans = [(a, min(a + per, trace.num_tokens)) for a in range(0, trace.num_tokens, per)]
    offs = (np.arange(L, dtype=np.int64) * trace.meta.num_experts)[None, :, None]

    def block(i: int) -> _Block:
        a, b = spans[i]
        keys = (np.asarray(trace.experts[a:b], dtype=np.int64) + offs).reshape(-1)
        clock = np.repeat(np.arange(a * L, b * L, dtype=np.int64), k)
        return _Block(a * L * k, keys, clock)

    return spans, trace.num_tokens * L * k, trace.num_tokens * L, block


def _blocks_groups(trace: Trace, batch: int, prefill: bool) -> tuple[list, int, int, Callable[[int], _Block]]:
    """Batches or prompt passes: one forward pass keeps each group's keys (int32) and step sizes."""
    groups, start, step0 = [], 0, 0
    for g in iter_groups(trace, batch, prefill):
        lens = np.fromiter((len(st) for st in g.steps), dtype=np.int32, count=len(g.steps))
        keys = np.fromiter((key for st in g.steps for key in st), dtype=np.int32, count=int(lens.sum()))
        groups.append((start, step0, keys, lens))
        start, step0 = start + len(keys), step0 + len(lens)

    def block(i: int) -> _Block:
        first, s0, keys, lens = groups[i]
        clock = np.repeat(np.arange(s0, s0 + len(lens), dtype=np.int64), lens)
        return _Block(first, keys.astype(np.int64), clock)

    return groups, start, step0, block


def _next_in_block(b: _Block, later: np.ndarray) -> np.ndarray:
    """Next-access vtimes of a block's requests; ``later[key]`` holds the 1-based index of the key's
    first request after the block (-1: none) and is moved to its first request in the block."""
    keys = b.keys
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    same = sk[1:] == sk[:-1]
    nxt = np.empty(len(keys), np.int64)
    nxt[order[:-1][same]] = b.start + order[1:][same] + 1
    last = order[np.append(~same, True)]  # each key's last request in the block
    nxt[last] = later[keys[last]]
    first = order[np.insert(~same, 0, True)]
    later[keys[first]] = b.start + first + 1
    return nxt


def export_libcachesim(
    trace: Trace, out: Path, batch: int = 1, prefill: bool = False, obj_size: int = 1
) -> ExportInfo:
    """Stream the oracleGeneral file in blocks, last block first (next-access times come from the
    future), each written at its offset: memory stays at a few blocks, not the whole stream. Equal
    byte for byte to ``oracle_general_records`` (the in-memory reference)."""
    if not 1 <= obj_size <= 0xFFFFFFFF:
        fail(f"--obj-size: must be in [1, 4294967295] bytes, got {obj_size}")
    if batch < 1:
        fail(f"--batch: must be >= 1, got {batch}")
    if prefill and trace.prefill_experts is None:
        fail("--prefill: the trace has no prefill routing")
    if batch == 1 and not prefill:
        parts, total, steps, block = _blocks_batch1(trace)
    else:
        parts, total, steps, block = _blocks_groups(trace, batch, prefill)
    if steps > 1 << 32:
        fail(f"the trace replays {steps:,} layer-steps; oracleGeneral's uint32 clock_time holds 2^32")
    later = np.full(trace.meta.num_layers * trace.meta.num_experts, -1, np.int64)

    def write(tmp: Path) -> None:
        with open(tmp, "r+b") as fh:
            fh.truncate(total * ORACLE_GENERAL.itemsize)
            for i in reversed(range(len(parts))):
                b = block(i)
                rec = np.empty(len(b.keys), ORACLE_GENERAL)
                rec["clock_time"], rec["obj_id"], rec["obj_size"] = b.clock, b.keys, obj_size
                rec["next_access_vtime"] = _next_in_block(b, later)
                fh.seek(b.start * ORACLE_GENERAL.itemsize)
                fh.write(rec.tobytes())

    atomic_write_with(out, write)
    return ExportInfo(out, total, int((later >= 0).sum()))


def read_oracle_general(path: str | Path) -> np.ndarray:
    path = Path(path)
    size = path.stat().st_size
    if size % ORACLE_GENERAL.itemsize:
        fail(f"{path}: {size} bytes is not a whole number of 24-byte oracleGeneral records")
    return np.fromfile(path, dtype=ORACLE_GENERAL)


def export(
    trace: Trace, fmt: str, out: Path, batch: int = 1, prefill: bool = False, obj_size: int = 1
) -> ExportInfo:
    """Write ``trace`` to ``out`` in ``fmt`` (one of FORMATS); checks every option before writing."""
    if fmt == "parquet":
        if batch != 1 or prefill or obj_size != 1:
            fail(
                "--batch, --prefill and --obj-size apply to --format libcachesim (parquet keeps every access)"
            )
        return export_parquet(trace, out)
    if fmt == "libcachesim":
        return export_libcachesim(trace, out, batch, prefill, obj_size)
    fail(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    raise AssertionError  # unreachable
