"""Hand-made corpus of bad inputs, one per known failure or refusal rule.

Each case builds its files, runs the CLI in-process and expects: exit 2, one stderr line naming
the file (or flag) and holding the given words (the field and the rule), no traceback, nothing
written. Cases marked "altered" were once accepted with the value silently changed.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fuzzkit import OLMOE_CONFIG, assert_refused, run_cli
from test_fuzz_files import PROPHET_CFG, prophet_tensors
from test_fuzz_importers import (
    OLMOE_META,
    mixtral_records,
    olmoe_arrays,
    qwen_doc,
    table_csv_rows,
    table_records,
    write_csv_rows,
    write_olmoe,
)

# A case: (tmp dir, base files) -> (argv, what the line must name, the --out that must not appear).
Case = Callable[[Path, dict], tuple[list[Any], str, Path | None]]
CASES: dict[str, tuple[Case, list[str]]] = {}


def case(name: str, *words: str) -> Callable[[Case], Case]:
    def deco(fn: Case) -> Case:
        CASES[name] = (fn, list(words))
        return fn

    return deco


# -- table CSV -------------------------------------------------------------------------------------------
COL = {"sequence": 0, "token": 1, "layer": 2, "experts": 3, "weights": 4, "domain": 5, "token_id": 6}


def _csv(tmp: Path, edits: dict[tuple[int, str], str], extra: tuple = ()) -> tuple[list, str, Path]:
    rows = table_csv_rows()
    for (r, col), v in edits.items():
        rows[r][COL[col]] = v
    src = tmp / "t.csv"
    write_csv_rows(rows, src)
    out = tmp / "o.moetrace"
    return ["trace", "import", "-f", "table", src, "--out", out, *extra], str(src), out


def _csv_case(name: str, edits: dict[tuple[int, str], str], *words: str, extra: tuple = ()) -> None:
    case(name, *words)(lambda tmp, base: _csv(tmp, edits, extra))


_csv_case("csv-experts-unbracketed", {(3, "experts"): "3, 4"}, "line 4", "experts", "JSON array")  # altered
_csv_case("csv-fractional-layer", {(2, "layer"): "1.5"}, "line 3", "layer", "expected an integer")  # altered
_csv_case("csv-fractional-expert", {(1, "experts"): "[1.5, 2]"}, "line 2", "expert id 1.5", "not an integer")
_csv_case("csv-boolean-expert", {(1, "experts"): "[true, 2]"}, "line 2", "experts", "JSON array")  # altered
_csv_case("csv-boolean-layer", {(1, "layer"): "true"}, "line 2", "layer", "expected an integer")
_csv_case(
    "csv-token-id-beyond-int32", {(1, "token_id"): "3000000000"}, "line 2", "token_id", "outside"
)  # altered
_csv_case("csv-huge-expert-id", {(1, "experts"): "[1e30, 2]"}, "line 2", "expert id 1e+30")
_csv_case("csv-huge-token", {(1, "token"): "99999999999999999999"}, "line 2", "token", "outside")
_csv_case("csv-token-typo-gap", {(12, "token"): "99999"}, "sequence s1", "no row")
_csv_case("csv-nan-expert", {(1, "experts"): "[NaN, 2]"}, "line 2", "not an integer")
_csv_case("csv-empty-experts", {(1, "experts"): "[]"}, "experts", "empty")
_csv_case("csv-nested-experts", {(1, "experts"): "[[1], [2]]"}, "line 2", "JSON array")
_csv_case("csv-negative-layer", {(1, "layer"): "-1"}, "line 2", "layer", "outside")
_csv_case(
    "csv-expert-beyond-E",
    {(1, "experts"): "[9, 2]"},
    "line 2",
    "expert id 9",
    ">= E=8",
    extra=("--num-experts", "8"),
)
_csv_case("csv-duplicate-ids", {(1, "experts"): "[2, 2]"}, "line 2", "repeat an id")
_csv_case("csv-weights-text", {(1, "weights"): "[high, 0.1]"}, "line 2", "weights", "JSON array")
_csv_case("csv-k-changes", {(5, "experts"): "[1, 2, 3]"}, "line 6", "3 entries")


@case("csv-binary-file", "cannot read as csv", "UnicodeDecodeError")
def _(tmp, base):
    src = tmp / "t.csv"
    src.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    return ["trace", "import", "-f", "table", src, "--out", tmp / "o"], str(src), tmp / "o"


@case("csv-header-only", "no rows")
def _(tmp, base):
    src = tmp / "t.csv"
    src.write_text("sequence,token,layer,experts\n")
    return ["trace", "import", "-f", "table", src, "--out", tmp / "o"], str(src), tmp / "o"


@case("csv-only-prefill-is-empty-trace", "no decode tokens")  # once: a trace that "runs" with TPOT 0
def _(tmp, base):
    rows = table_csv_rows()
    rows[0].append("phase")
    for r in rows[1:]:
        r.append("prefill")
    src = tmp / "t.csv"
    write_csv_rows(rows, src)
    return ["trace", "import", "-f", "table", src, "--out", tmp / "o"], str(src), tmp / "o"


# -- table JSONL / Parquet -----------------------------------------------------------------------------------
def _jsonl_case(name: str, i: int, key: str, value: Any, *words: str) -> None:
    def build(tmp, base):
        recs = table_records()
        recs[i][key] = value
        src = tmp / "t.jsonl"
        src.write_text("\n".join(json.dumps(r) for r in recs))
        return ["trace", "import", "-f", "table", src, "--out", tmp / "o"], str(src), tmp / "o"

    case(name, *words)(build)


_jsonl_case("jsonl-token-as-string", 1, "token", "3", "line 2", "token", "expected an integer")  # altered
_jsonl_case("jsonl-layer-boolean", 1, "layer", True, "line 2", "layer", "expected an integer")  # altered
_jsonl_case(
    "jsonl-experts-as-string", 1, "experts", "01", "line 2", "experts", "not a list of numbers"
)  # altered
_jsonl_case("jsonl-experts-booleans", 1, "experts", [True, False], "line 2", "not a list of numbers")
_jsonl_case("jsonl-experts-strings", 1, "experts", ["1", "2"], "line 2", "not a list of numbers")  # altered


@case("jsonl-deep-nesting", "line 3", "nested deeper")
def _(tmp, base):
    lines = [json.dumps(r) for r in table_records()]
    lines[2] = "[" * 100_000 + "]" * 100_000
    src = tmp / "t.jsonl"
    src.write_text("\n".join(lines))
    return ["trace", "import", "-f", "table", src, "--out", tmp / "o"], str(src), tmp / "o"


@case("jsonl-line-not-object", "line 1", "JSON object")
def _(tmp, base):
    src = tmp / "t.jsonl"
    src.write_text("[1, 2]\n")
    return ["trace", "import", "-f", "table", src, "--out", tmp / "o"], str(src), tmp / "o"


def _parquet_case(name: str, mutate: Callable[[pd.DataFrame], pd.DataFrame], *words: str) -> None:
    def build(tmp, base):
        src = tmp / "t.parquet"
        mutate(pd.DataFrame.from_records(table_records())).to_parquet(src)
        return ["trace", "import", "-f", "table", src, "--out", tmp / "o"], str(src), tmp / "o"

    case(name, *words)(build)


_parquet_case("parquet-bool-layer", lambda df: df.assign(layer=df["layer"] > 0), "row 0", "layer", "integer")
_parquet_case(
    "parquet-string-experts", lambda df: df.assign(experts=[["1", "2"]] * len(df)), "not a list of numbers"
)
_parquet_case(
    "parquet-float-token", lambda df: df.assign(token=df["token"] + 0.5), "token", "expected an integer"
)


@case("parquet-corrupt-bytes", "cannot read as parquet")
def _(tmp, base):
    buf = io.BytesIO()
    pd.DataFrame.from_records(table_records()).to_parquet(buf)
    src = tmp / "t.parquet"
    src.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return ["trace", "import", "-f", "table", src, "--out", tmp / "o"], str(src), tmp / "o"


# -- mixtral-jsonl -----------------------------------------------------------------------------------------
def _mixtral_case(name: str, i: int, key: str, value: Any, *words: str, extra: tuple = ()) -> None:
    def build(tmp, base):
        recs = mixtral_records()
        recs[i][key] = value
        src = tmp / "x_routing.jsonl"
        src.write_text("\n".join(json.dumps(r, allow_nan=True) for r in recs))
        return (
            ["trace", "import", "-f", "mixtral-jsonl", src, "--out", tmp / "o", *extra],
            str(src),
            tmp / "o",
        )

    case(name, *words)(build)


_mixtral_case(
    "mixtral-experts-as-string", 0, "experts", "01", "line 1", "experts", "list of integers"
)  # altered
_mixtral_case(
    "mixtral-fractional-layer", 0, "layer", 1.5, "line 1", "layer", "expected an integer"
)  # altered
_mixtral_case("mixtral-integral-float-layer", 0, "layer", 1.0, "line 1", "layer", "expected an integer")
_mixtral_case("mixtral-boolean-layer", 0, "layer", True, "line 1", "layer", "expected an integer")  # altered
_mixtral_case("mixtral-boolean-expert", 0, "experts", [True, 2], "line 1", "experts[0]", "integer")  # altered
_mixtral_case("mixtral-token-idx-typo", 11, "token_idx", 199_999, "token 4", "refusing to invent")  # invented
_mixtral_case("mixtral-layer-typo", 11, "layer", 999_999, "layer", "no record")
_mixtral_case("mixtral-probs-strings", 0, "gating_probs", ["a", "b"], "line 1", "gating_probs[0]", "number")
_mixtral_case(
    "mixtral-probs-nan", 0, "gating_probs", [float("nan"), 0.5], "line 1", "gating_probs[0]", "finite"
)
_mixtral_case("mixtral-huge-expert", 0, "experts", [10**30, 1], "line 1", "experts[0]", "outside")
_mixtral_case("mixtral-expert-beyond-E", 0, "experts", [9, 1], "line 1", "expert id 9")
_mixtral_case("mixtral-missing-cell-error", 0, "layer", 1, "line 2", "repeats line 1")


@case("mixtral-empty-file", "no records")
def _(tmp, base):
    src = tmp / "x_routing.jsonl"
    src.write_text("\n\n")
    return ["trace", "import", "-f", "mixtral-jsonl", src, "--out", tmp / "o"], str(src), tmp / "o"


@case("mixtral-binary", "not UTF-8")
def _(tmp, base):
    src = tmp / "x_routing.jsonl"
    src.write_bytes(b'{"a": 1}\n\xff\xfe\x00garbage')
    return ["trace", "import", "-f", "mixtral-jsonl", src, "--out", tmp / "o"], str(src), tmp / "o"


# -- qwen-routes -------------------------------------------------------------------------------------------
def _qwen_case(name: str, mutate: Callable[[dict], Any], *words: str) -> None:
    def build(tmp, base):
        doc = qwen_doc()
        mutate(doc)
        src = tmp / "q.routing.json"
        src.write_text(json.dumps(doc))
        return ["trace", "import", "-f", "qwen-routes", src, "--out", tmp / "o"], str(src), tmp / "o"

    case(name, *words)(build)


_qwen_case(
    "qwen-num-experts-string", lambda d: d["meta"].update(num_experts="8"), "meta.num_experts", "integer"
)
_qwen_case("qwen-top-k-boolean", lambda d: d["meta"].update(top_k=True), "meta.top_k", "integer")  # altered
_qwen_case(
    "qwen-layers-huge", lambda d: d["meta"].update(num_moe_layers=10**9), "meta.num_moe_layers", "outside"
)
_qwen_case(
    "qwen-fractional-expert",
    lambda d: d["routes"][2]["layers"]["0"].update(experts=[1.0, 2]),
    "experts[0]",
    "integer",
)
_qwen_case("qwen-no-routes", lambda d: d.update(routes=[]), "routes is empty")
_qwen_case(
    "qwen-token-id-beyond-int32", lambda d: d["routes"][2].update(token_id=2**40), "token_id", "outside"
)  # altered
_qwen_case("qwen-missing-layer", lambda d: d["routes"][3]["layers"].pop("1"), "layer 1", "missing")
_qwen_case("qwen-model-id-not-string", lambda d: d["meta"].update(model_id=["x"]), "meta.model_id", "string")


@case("qwen-deep-nesting", "nested deeper")
def _(tmp, base):
    src = tmp / "q.routing.json"
    src.write_text('{"meta": ' + "[" * 200_000 + "]" * 200_000 + "}")
    return ["trace", "import", "-f", "qwen-routes", src, "--out", tmp / "o"], str(src), tmp / "o"


# -- olmoe-npz ---------------------------------------------------------------------------------------------
def _olmoe_case(name: str, meta: dict | None, arrays: dict | None, *words: str) -> None:
    def build(tmp, base):
        a = olmoe_arrays()
        a.update(arrays or {})
        src = write_olmoe(tmp / "src", a, json.dumps({**OLMOE_META, **(meta or {})}))
        return ["trace", "import", "-f", "olmoe-npz", src, "--out", tmp / "o"], str(src), tmp / "o"

    case(name, *words)(build)


_olmoe_case(
    "olmoe-no-layers", {"layer_indices": []}, None, "layer_indices", "empty"
)  # once ZeroDivisionError
_olmoe_case("olmoe-num-experts-string", {"num_experts": "64"}, None, "num_experts", "integer")
_olmoe_case(
    "olmoe-token-id-float", None, {"token_id": np.full(6, 10.7)}, "token_id", "dtype float64"
)  # altered
_olmoe_case(
    "olmoe-token-id-beyond-int32", None, {"token_id": np.full(6, 2**40)}, "token_id", "int32"
)  # altered
_olmoe_case("olmoe-domains-not-strings", {"domains": [1, 2]}, None, "domains", "strings")


@case("olmoe-truncated-npz", "cannot read NPZ")
def _(tmp, base):
    src = write_olmoe(tmp / "src", olmoe_arrays(), json.dumps(OLMOE_META))
    f = src / "coding" / "sequence_0000.npz"
    f.write_bytes(f.read_bytes()[:300])
    return ["trace", "import", "-f", "olmoe-npz", src, "--out", tmp / "o"], str(src), tmp / "o"


@case("olmoe-corrupt-deflate-stream", "cannot read NPZ")  # once a raw zlib.error
def _(tmp, base):
    src = write_olmoe(tmp / "src", olmoe_arrays(), json.dumps(OLMOE_META))
    f = src / "coding" / "sequence_0000.npz"
    with zipfile.ZipFile(f) as zf:
        info = zf.getinfo("requested_expert_ids.npy")
    blob = bytearray(f.read_bytes())
    name_len, extra_len = struct.unpack("<HH", blob[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len  # the deflate stream
    for j in range(start, start + min(16, info.compress_size)):
        blob[j] ^= 0xA5
    f.write_bytes(bytes(blob))
    return ["trace", "import", "-f", "olmoe-npz", src, "--out", tmp / "o"], str(src), tmp / "o"


# -- native trace ------------------------------------------------------------------------------------------
def _native_case(name: str, mutate: Callable[[Path, dict], Any], *words: str) -> None:
    def build(tmp, base):
        t = tmp / "t.moetrace"
        shutil.copytree(base["trace"], t)
        doc = json.loads((t / "trace.json").read_text())
        text = mutate(t, doc)
        (t / "trace.json").write_text(text if isinstance(text, str) else json.dumps(doc))
        return ["trace", "info", t], str(t), None

    case(name, *words)(build)


_native_case(
    "native-file-outside",
    lambda t, d: d["arrays"]["experts"].update(file="../x.npy"),
    "arrays.experts.file",
    "inside",
)
_native_case(
    "native-absolute-file",
    lambda t, d: d["arrays"]["experts"].update(file="/etc/passwd"),
    "arrays.experts.file",
    "inside",
)
_native_case(
    "native-wrong-dtype",
    lambda t, d: d["arrays"]["experts"].update(dtype="<f8"),
    "arrays.experts.dtype",
    "<i2",
)
_native_case(
    "native-garbage-dtype", lambda t, d: d["arrays"]["experts"].update(dtype="zz"), "arrays.experts.dtype"
)
_native_case(
    "native-shape-bool",
    lambda t, d: d["arrays"]["experts"].update(shape=[True, 16, 8]),
    "shape[0]",
    "integer",
)
_native_case(
    "native-shape-huge",
    lambda t, d: d["arrays"]["experts"].update(shape=[10**30, 16, 8]),
    "shape[0]",
    "outside",
)
_native_case(
    "native-num-layers-string", lambda t, d: d["meta"].update(num_layers="16"), "meta.num_layers", "integer"
)
_native_case(
    "native-layer-indices-fraction",
    lambda t, d: d["meta"].update(layer_indices=[0.5] * 16),
    "layer_indices[0]",
    "integer",
)  # altered
_native_case(
    "native-domains-not-strings", lambda t, d: d["meta"].update(domains=[1]), "meta.domains", "strings"
)  # altered
_native_case("native-counts-boolean", lambda t, d: d["counts"].update(tokens=True), "counts.tokens")
_native_case("native-deep-json", lambda t, d: "[" * 100_000 + "]" * 100_000, "nested deeper")
_native_case(
    "native-truncated-npy",
    lambda t, d: (t / "experts.npy").write_bytes((t / "experts.npy").read_bytes()[:150]),
    "experts.npy",
    "truncated",
)
_native_case(
    "native-header-claims-more",
    lambda t, d: np.save(t / "experts.npy", np.zeros((1, 16, 8), np.int16)),
    "experts.npy",
    "shape (1, 16, 8)",
)


@case("native-binary-manifest", "not UTF-8")
def _(tmp, base):
    t = tmp / "t.moetrace"
    shutil.copytree(base["trace"], t)
    (t / "trace.json").write_bytes(b"\xff\xfe\x00\x01binary")
    return ["trace", "info", t], str(t), None


# -- profile YAML and config.json (through moesim run) --------------------------------------------------------
def _run_case(name: str, key: str, fname: str, make: Callable[[dict], bytes], *words: str) -> None:
    def build(tmp, base):
        p = tmp / fname
        p.write_bytes(make(base))
        return (
            ["run", base["scenario"], "--set", f"{key}={p}", "--out", tmp / "out", "--quiet"],
            str(p),
            tmp / "out",
        )

    case(name, *words)(build)


def _profile_text(base: dict) -> str:
    return base["profile"].read_text()


_run_case(
    "profile-duplicate-key",
    "hardware.profile",
    "p.yaml",
    lambda b: _profile_text(b).replace("name: ", "name: x\nname: ", 1).encode(),
    "duplicate key 'name'",
)
_run_case(
    "profile-alias",
    "hardware.profile",
    "p.yaml",
    lambda b: (
        _profile_text(b)
        .replace("provenance:\n", "provenance: &p\n", 1)
        .replace("extrapolation: flag", "extrapolation: *p")
        .encode()
    ),
    "alias",
)
_run_case("profile-binary", "hardware.profile", "p.yaml", lambda b: b"\x89PNG\x00\xff" * 10, "not UTF-8")
_run_case(
    "profile-deep",
    "hardware.profile",
    "p.yaml",
    lambda b: ("x: " + "[" * 50_000 + "]" * 50_000).encode(),
    "nested too deeply",
)
_run_case(
    "profile-huge-int",
    "hardware.profile",
    "p.yaml",
    lambda b: _profile_text(b).replace("version: 1", "version: " + "9" * 5000).encode(),
    "YAML value",
)
_run_case(
    "profile-ms-string",
    "hardware.profile",
    "p.yaml",
    lambda b: re.sub(r"(?m)^(\s+)ms: .*$", r"\1ms: fast", _profile_text(b), count=1).encode(),
    "ms must be a non-empty list of numbers",
)
_run_case(
    "config-model-type-list",
    "model.config",
    "config.json",
    lambda b: json.dumps({**OLMOE_CONFIG, "model_type": []}).encode(),
    "model_type",
)
_run_case(
    "config-layers-huge",
    "model.config",
    "config.json",
    lambda b: json.dumps({**OLMOE_CONFIG, "num_hidden_layers": 10**12}).encode(),
    "num_hidden_layers",
    "<=",
)
_run_case(
    "config-experts-boolean",
    "model.config",
    "config.json",
    lambda b: json.dumps({**OLMOE_CONFIG, "num_experts": True}).encode(),
    "num_experts",
    "integer",
)
_run_case(
    "config-deep",
    "model.config",
    "config.json",
    lambda b: ("[" * 100_000 + "]" * 100_000).encode(),
    "nested deeper",
)
_run_case("config-binary", "model.config", "config.json", lambda b: b"\xff\xd8\xff\xe0JFIF", "not UTF-8")


# -- predictor model files ---------------------------------------------------------------------------------
def _model_case(name: str, write: Callable[[Path], None], suffix: str, *words: str) -> None:
    def build(tmp, base):
        p = tmp / f"m{suffix}"
        write(p)
        argv = ["predictor", "eval", "prophet", "--trace", base["trace"], "--model", p, "--out", tmp / "ev"]
        return argv, str(p), tmp / "ev"

    case(name, *words)(build)


def _save(cfg: dict) -> Callable[[Path], None]:
    from moesim.policies.predictors._common import save_model_file

    return lambda p: save_model_file(p, prophet_tensors(PROPHET_CFG), cfg)


def _pickle_pt(p: Path) -> None:
    import torch

    torch.save({"state_dict": {}, "config_json": "{}", "evil": object()}, p)


_model_case(
    "model-threads-string", _save({**PROPHET_CFG, "threads": "1"}), ".safetensors", "threads", "integer"
)
_model_case(
    "model-config-too-big",
    _save({**PROPHET_CFG, "E": 2_000_000, "L": 1000}),
    ".safetensors",
    "do not match its config",
)
_model_case("model-empty-file", lambda p: p.write_bytes(b""), ".safetensors", "cannot read predictor model")
_model_case("model-pickled-object", _pickle_pt, ".pt", "cannot read predictor model")
_model_case(
    "model-temperatures-wrong",
    _save({**PROPHET_CFG, "temperatures": ["hot"]}),
    ".safetensors",
    "temperatures",
)


# -- result directories read by `moesim report` -------------------------------------------------------------
def _report_case(name: str, mutate: Callable[[Path], Any], *words: str) -> None:
    def build(tmp, base):
        run = tmp / "run"
        shutil.copytree(base["run"], run)
        mutate(run)
        return ["report", run, "--out", tmp / "rep", "--quiet"], str(run), tmp / "rep"

    case(name, *words)(build)


def _edit_summary(fn: Callable[[dict], Any]) -> Callable[[Path], None]:
    def go(run: Path) -> None:
        doc = json.loads((run / "summary.json").read_text())
        fn(doc)
        (run / "summary.json").write_text(json.dumps(doc))

    return go


_report_case(
    "report-corrupt-parquet",
    lambda r: (r / "tokens.parquet").write_bytes(b"PAR1garbagePAR1"),
    "tokens.parquet",
    "cannot read result table",
)  # once ArrowInvalid
_report_case(
    "report-summary-deep",
    lambda r: (r / "summary.json").write_text("[" * 100_000 + "]" * 100_000),
    "summary.json",
    "nested deeper",
)
_report_case(
    "report-summary-binary",
    lambda r: (r / "summary.json").write_bytes(b"\xff\x00\xfe"),
    "summary.json",
    "not UTF-8",
)
_report_case(
    "report-summary-no-traffic",
    _edit_summary(lambda d: d.pop("traffic")),
    "field 'traffic.bytes_h2d'",
    "missing",
)
_report_case(
    "report-summary-string-bytes",
    _edit_summary(lambda d: d["traffic"].update(bytes_prefetch="12")),
    "traffic.bytes_prefetch",
    "str",
)
_report_case(
    "report-summary-list",
    lambda r: (r / "summary.json").write_text("[1, 2]"),
    "summary.json",
    "expected an object",
)
_report_case(
    "report-layers-strings",
    lambda r: pd.read_parquet(r / "layers.parquet").astype({"misses": str}).to_parquet(r / "layers.parquet"),
    "layers.parquet",
    "'misses'",
)


@case("report-sweep-missing-status", "results.parquet", "'status'", "missing")
def _(tmp, base):
    sweep = tmp / "sweep"
    sweep.mkdir()
    pd.DataFrame({"point": [0, 1], "error": [None, None]}).to_parquet(sweep / "results.parquet")
    return ["report", sweep, "--out", tmp / "rep", "--quiet"], str(sweep), tmp / "rep"


@case("report-sweep-corrupt-parquet", "results.parquet", "cannot read result table")
def _(tmp, base):
    sweep = tmp / "sweep"
    sweep.mkdir()
    (sweep / "results.parquet").write_bytes(b"PAR1" + bytes(100) + b"PAR1")
    return ["report", sweep, "--out", tmp / "rep", "--quiet"], str(sweep), tmp / "rep"


# -- CLI flags ---------------------------------------------------------------------------------------------
def _flag_case(name: str, argv: list[str], flag: str) -> None:
    case(name, flag)(lambda tmp, base: (argv[:3] + [tmp / "o"] + argv[3:], flag, tmp / "o"))


_flag_case("flag-synth-tokens-zero", ["trace", "synth", "--out", "--tokens", "0"], "--tokens")
_flag_case("flag-synth-seed-negative", ["trace", "synth", "--out", "--seed=-1"], "--seed")
_flag_case(
    "flag-synth-too-big",
    ["trace", "synth", "--out", "--tokens", "1000000", "--sequences", "1000"],
    "--tokens",
)
_flag_case(
    "flag-synth-topk-above-experts", ["trace", "synth", "--out", "--top-k", "9", "--experts", "8"], "--top-k"
)


@case("flag-import-num-experts-zero", "--num-experts")
def _(tmp, base):
    src = tmp / "t.csv"
    write_csv_rows(table_csv_rows(), src)
    return (
        ["trace", "import", "-f", "table", src, "--out", tmp / "o", "--num-experts", "0"],
        "--num-experts",
        tmp / "o",
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_corpus_case(name, base, tmp_path):
    build, words = CASES[name]
    argv, names, out = build(tmp_path, base)
    line = assert_refused(run_cli(argv), names, out)
    for w in words:
        assert w in line, f"{w!r} not in: {line}"


def test_corpus_has_at_least_60_cases():
    assert len(CASES) >= 60
