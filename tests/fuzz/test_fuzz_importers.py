"""Fuzz every importer through ``moesim trace import``: malformed variants of a valid source are
either imported as a valid trace or refused in one line naming the source, with nothing written."""

from __future__ import annotations

import csv
import io
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from fuzzkit import assert_contract, byte_mutation, dump_json, fuzz, json_mutation, run_cli
from hypothesis import given, reject
from hypothesis import strategies as st

from moesim.traces.native import load_trace

N_EXAMPLES = 50


# -- valid sources --------------------------------------------------------------------------------------
def table_records() -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    out = []
    for s in range(2):
        for t in range(3):
            for layer in range(2):
                ex = rng.permutation(8)[:2].tolist()
                w = sorted(rng.random(2).round(4).tolist(), reverse=True)
                out.append(
                    {
                        "sequence": f"s{s}",
                        "token": t,
                        "layer": layer,
                        "experts": ex,
                        "weights": w,
                        "domain": "a" if s == 0 else "b",
                        "token_id": 100 + t,
                    }
                )
    return out


def table_csv_rows() -> list[list[str]]:
    recs = table_records()
    header = list(recs[0])
    rows = [header]
    for r in recs:
        rows.append([json.dumps(r[h]) if isinstance(r[h], list) else str(r[h]) for h in header])
    return rows


def write_csv_rows(rows: list[list[str]], path: Path) -> None:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")


def mixtral_records(raw: bool = False) -> list[dict[str, Any]]:
    rng = np.random.default_rng(1)
    out = []
    for t in range(4):
        for layer in range(3):
            p = round(float(rng.random()), 4)
            rec = {
                "dataset": "gsm8k",
                "problem_id": 7,
                "layer": layer,
                "experts": rng.permutation(8)[:2].tolist(),
                "gating_probs": sorted([p, round(1 - p, 4)], reverse=True),
            }
            rec["token_pos" if raw else "token_idx"] = 0 if raw and t > 0 else t
            out.append(rec)
    return out


def qwen_doc() -> dict[str, Any]:
    rng = np.random.default_rng(2)
    routes = []
    for pos in range(4):
        layers = {}
        for layer in range(2):
            w = sorted(rng.random(2).round(4).tolist(), reverse=True)
            layers[str(layer)] = {"experts": rng.permutation(8)[:2].tolist(), "weights": w}
        routes.append(
            {
                "token_pos": pos,
                "phase": "prefill" if pos < 2 else "decode",
                "token_id": 50 + pos,
                "layers": layers,
            }
        )
    meta = {"model_id": "org/qwen-test", "num_moe_layers": 2, "num_experts": 8, "top_k": 2, "backend": "hf"}
    return {"meta": meta, "routes": routes}


OLMOE_META = {
    "schema_version": "olmoe_decode_atomic_routing_v1",
    "domains": ["general", "coding"],
    "layer_indices": [0, 1],
    "num_experts": 8,
    "top_k": 2,
}


def olmoe_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    T, L, k = 3, 2, 2
    n = T * L
    return {
        "schema_version": np.array("olmoe_decode_atomic_routing_v1"),
        "sequence_id": np.zeros(n, np.int32),
        "domain_id": np.ones(n, np.int8),
        "generated_token_index": np.repeat(np.arange(T), L).astype(np.int32),
        "layer_index": np.tile(np.arange(L), T).astype(np.int16),
        "requested_expert_ids": np.stack([rng.permutation(8)[:k] for _ in range(n)]).astype(np.int16),
        "router_weights": -np.sort(-rng.random((n, k)), axis=1).astype(np.float32),
        "token_id": np.repeat(np.arange(T) + 10, L).astype(np.int32),
    }


def write_olmoe(root: Path, arrays: dict[str, np.ndarray], meta_text: str) -> Path:
    d = root / "chunks" / "coding"
    d.mkdir(parents=True)
    np.savez_compressed(d / "sequence_0000.npz", **arrays)
    (d / "sequence_0000.metadata.json").write_text(meta_text, encoding="utf-8")
    return root / "chunks"


def _import(fmt: str, src: Path, out: Path, *extra: str) -> bool:
    res = run_cli(["trace", "import", "-f", fmt, str(src), "--out", str(out), *extra])
    accepted = assert_contract(res, str(src.parent if src.is_file() else src), written=out)
    if accepted:
        tr = load_trace(out)  # what was written is a valid trace with at least one token
        assert tr.num_tokens > 0
    return accepted


def test_valid_sources_import(tmp_path):
    write_csv_rows(table_csv_rows(), tmp_path / "t.csv")
    assert _import("table", tmp_path / "t.csv", tmp_path / "csv.moetrace")
    pd.DataFrame.from_records(table_records()).to_parquet(tmp_path / "t.parquet")
    assert _import("table", tmp_path / "t.parquet", tmp_path / "pq.moetrace")
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in table_records()))
    assert _import("table", tmp_path / "t.jsonl", tmp_path / "jl.moetrace")
    for raw in (False, True):
        p = tmp_path / f"m{int(raw)}_routing.jsonl"
        p.write_text("\n".join(json.dumps(r) for r in mixtral_records(raw)))
        assert _import("mixtral-jsonl", p, tmp_path / f"m{int(raw)}.moetrace")
    (tmp_path / "q.routing.json").write_text(json.dumps(qwen_doc()))
    assert _import("qwen-routes", tmp_path / "q.routing.json", tmp_path / "q.moetrace")
    src = write_olmoe(tmp_path / "o", olmoe_arrays(), json.dumps(OLMOE_META))
    assert _import("olmoe-npz", src, tmp_path / "o.moetrace")


# -- table: CSV ------------------------------------------------------------------------------------------
CSV_CELLS = [
    "",
    "x",
    "1.5",
    "true",
    "True",
    "1e30",
    "-1",
    "99999999999999999999",
    "[1]",
    "[1, 2, 3]",
    "[[1], [2]]",
    "[true, 1]",
    "NaN",
    "inf",
    "[1, 1]",
    "[9999999999, 1]",
    "[1e400, 2]",
    "[0.5, 1]",
    "3, 4",
    "[1, 2",
    "{}",
    "prefill",
    "\u00e9",
]


@fuzz(N_EXAMPLES)
@given(
    row=st.integers(1, 12),
    col=st.integers(0, 6),
    cell=st.sampled_from(CSV_CELLS),
    extra=st.sampled_from([[], ["--num-experts", "8"], ["--sort-by-weight"]]),
)
def test_fuzz_table_csv_cells(row, col, cell, extra):
    rows = table_csv_rows()
    rows[row][col] = cell
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "t.csv"
        write_csv_rows(rows, src)
        _import("table", src, Path(d) / "out.moetrace", *extra)


@fuzz(N_EXAMPLES)
@given(data=st.data())
def test_fuzz_table_csv_bytes(data):
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(table_csv_rows())
    blob = data.draw(byte_mutation(buf.getvalue().encode()))
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "t.csv"
        src.write_bytes(blob)
        _import("table", src, Path(d) / "out.moetrace")


# -- table: Parquet ----------------------------------------------------------------------------------------
PARQUET_SWAPS = [
    "bool",
    "str",
    "fraction",
    "huge",
    "negative",
    "null",
    "list_str",
    "nested",
    "scalar_list",
    "empty",
]


def _swap(df: pd.DataFrame, col: str, kind: str, row: int) -> pd.DataFrame:
    df = df.copy()
    v = df[col].astype(object).to_numpy().copy()
    if kind == "bool":
        v[row] = True if col not in ("experts", "weights") else [True, False]
    elif kind == "str":
        v[row] = "3" if col not in ("experts", "weights") else ["3", "4"]
    elif kind == "fraction":
        v[row] = 1.5 if col not in ("experts", "weights") else [1.5, 2.0]
    elif kind == "huge":
        v[row] = 2**62 if col not in ("experts", "weights") else [2**62, 1]
    elif kind == "negative":
        v[row] = -5 if col not in ("experts", "weights") else [-5, 1]
    elif kind == "null":
        v[row] = None
    elif kind == "list_str":
        v[row] = ["a", "b"]
    elif kind == "nested":
        v[row] = [[1], [2]]
    elif kind == "scalar_list":
        v[row] = [1, 2]
    else:
        return df.iloc[:0]
    df[col] = v
    return df


@fuzz(N_EXAMPLES)
@given(
    col=st.sampled_from(["sequence", "token", "layer", "experts", "weights", "domain", "token_id"]),
    kind=st.sampled_from(PARQUET_SWAPS),
    row=st.integers(0, 11),
)
def test_fuzz_table_parquet_types(col, kind, row):
    df = _swap(pd.DataFrame.from_records(table_records()), col, kind, row)
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "t.parquet"
        try:
            df.to_parquet(src)
        except Exception:  # pyarrow cannot store this mix of types at all
            reject()
        _import("table", src, Path(d) / "out.moetrace")


@fuzz(N_EXAMPLES)
@given(data=st.data())
def test_fuzz_table_parquet_bytes(data):
    buf = io.BytesIO()
    pd.DataFrame.from_records(table_records()).to_parquet(buf)
    blob = data.draw(byte_mutation(buf.getvalue()))
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "t.parquet"
        src.write_bytes(blob)
        _import("table", src, Path(d) / "out.moetrace")


# -- table: JSONL ------------------------------------------------------------------------------------------
@fuzz(N_EXAMPLES)
@given(data=st.data(), i=st.integers(0, 11))
def test_fuzz_table_jsonl_records(data, i):
    recs = table_records()
    recs[i] = data.draw(json_mutation(recs[i]))
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "t.jsonl"
        src.write_text("\n".join(dump_json(r) for r in recs), encoding="utf-8")
        _import("table", src, Path(d) / "out.moetrace")


# -- mixtral-jsonl -----------------------------------------------------------------------------------------
@fuzz(N_EXAMPLES)
@given(data=st.data(), i=st.integers(0, 11), raw=st.booleans(), on_missing=st.sampled_from(["fill", "error"]))
def test_fuzz_mixtral_records(data, i, raw, on_missing):
    recs = mixtral_records(raw)
    recs[i] = data.draw(json_mutation(recs[i]))
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "x_routing.jsonl"
        src.write_text("\n".join(dump_json(r) for r in recs), encoding="utf-8")
        _import("mixtral-jsonl", src, Path(d) / "out.moetrace", "--on-missing", on_missing)


@fuzz(N_EXAMPLES)
@given(data=st.data())
def test_fuzz_mixtral_bytes(data):
    text = "\n".join(json.dumps(r) for r in mixtral_records())
    blob = data.draw(byte_mutation(text.encode()))
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "x_routing.jsonl"
        src.write_bytes(blob)
        _import("mixtral-jsonl", src, Path(d) / "out.moetrace")


# -- qwen-routes -------------------------------------------------------------------------------------------
@fuzz(N_EXAMPLES)
@given(data=st.data())
def test_fuzz_qwen_doc(data):
    doc = data.draw(json_mutation(qwen_doc()))
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "q.routing.json"
        src.write_text(dump_json(doc), encoding="utf-8")
        _import("qwen-routes", src, Path(d) / "out.moetrace")


@fuzz(N_EXAMPLES)
@given(data=st.data())
def test_fuzz_qwen_bytes(data):
    blob = data.draw(byte_mutation(json.dumps(qwen_doc()).encode()))
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "q.routing.json"
        src.write_bytes(blob)
        _import("qwen-routes", src, Path(d) / "out.moetrace")


# -- olmoe-npz ---------------------------------------------------------------------------------------------
ARRAY_SWAPS = ["float", "bool", "str", "2d", "empty", "huge", "negative", "short", "object_free_bytes"]


def _array_swap(a: np.ndarray, kind: str) -> np.ndarray:
    if kind == "float":
        return a.astype(np.float64) + 0.5
    if kind == "bool":
        return np.ones(a.shape, bool)
    if kind == "str":
        return a.astype(str)
    if kind == "2d":
        return np.stack([a, a], axis=-1)
    if kind == "empty":
        return a[:0]
    if kind == "huge":
        return np.full(a.shape, 2**40, np.int64)
    if kind == "negative":
        return np.full(a.shape, -3, np.int64)
    if kind == "short":
        return a[:-1]
    return np.frombuffer(b"\x01" * 24, np.uint8)


@fuzz(N_EXAMPLES)
@given(key=st.sampled_from(sorted(olmoe_arrays())), kind=st.sampled_from(ARRAY_SWAPS))
def test_fuzz_olmoe_arrays(key, kind):
    arrays = olmoe_arrays()
    try:
        arrays[key] = _array_swap(arrays[key], kind)
    except (ValueError, IndexError):  # not applicable to this array (e.g. the 0-d schema string)
        reject()
    with tempfile.TemporaryDirectory() as d:
        src = write_olmoe(Path(d), arrays, json.dumps(OLMOE_META))
        _import("olmoe-npz", src, Path(d) / "out.moetrace")


@fuzz(N_EXAMPLES)
@given(data=st.data())
def test_fuzz_olmoe_metadata(data):
    meta = data.draw(json_mutation(OLMOE_META))
    with tempfile.TemporaryDirectory() as d:
        src = write_olmoe(Path(d), olmoe_arrays(), dump_json(meta))
        _import("olmoe-npz", src, Path(d) / "out.moetrace")


@fuzz(N_EXAMPLES)
@given(data=st.data())
def test_fuzz_olmoe_npz_bytes(data):
    with tempfile.TemporaryDirectory() as d:
        src = write_olmoe(Path(d), olmoe_arrays(), json.dumps(OLMOE_META))
        npz = src / "coding" / "sequence_0000.npz"
        npz.write_bytes(data.draw(byte_mutation(npz.read_bytes())))
        _import("olmoe-npz", src, Path(d) / "out.moetrace")


def test_olmoe_header_claiming_huge_array_is_refused_before_allocation(tmp_path):
    """A member's .npy header claims 2**40 elements: refused from the header, not by a MemoryError."""
    src = write_olmoe(tmp_path, olmoe_arrays(), json.dumps(OLMOE_META))
    npz = src / "coding" / "sequence_0000.npz"
    with zipfile.ZipFile(npz) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    buf = io.BytesIO()
    header = {"descr": "<i4", "fortran_order": False, "shape": (2**40,)}
    np.lib.format.write_array_header_1_0(buf, header)
    members["token_id.npy"] = buf.getvalue() + bytes(24)
    with zipfile.ZipFile(npz, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
    res = run_cli(["trace", "import", "-f", "olmoe-npz", src, "--out", tmp_path / "o.moetrace"])
    assert res.code == 2 and "token_id" in res.err and "claims" in res.err
