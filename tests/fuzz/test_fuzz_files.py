"""Fuzz the files moesim reads besides importer sources: the native trace (trace.json + .npy),
profile YAML, a model's config.json, predictor model files and result directories read by
``moesim report``. Each malformed variant is accepted or refused per the contract (fuzzkit)."""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import yaml
from fuzzkit import OLMOE_CONFIG, assert_contract, byte_mutation, dump_json, fuzz, json_mutation, run_cli
from hypothesis import given, reject
from hypothesis import strategies as st

from moesim.traces.native import ARRAY_FILES


# -- native trace ------------------------------------------------------------------------------------------
def _info(trace_dir: Path) -> None:
    before = sorted((p.name, p.stat().st_size) for p in trace_dir.iterdir())
    res = run_cli(["trace", "info", trace_dir, "--digest"])
    assert_contract(res, str(trace_dir))
    assert sorted((p.name, p.stat().st_size) for p in trace_dir.iterdir()) == before  # reading writes nothing


@fuzz(60)
@given(data=st.data())
def test_fuzz_trace_manifest(base, data):
    doc = json.loads((base["trace"] / "trace.json").read_text())
    doc = data.draw(json_mutation(doc))
    with tempfile.TemporaryDirectory() as d:
        t = Path(d) / "t.moetrace"
        shutil.copytree(base["trace"], t)
        (t / "trace.json").write_text(dump_json(doc, indent=1), encoding="utf-8")
        _info(t)


@fuzz(50)
@given(data=st.data(), name=st.sampled_from(["experts", "seq_offsets", "seq_domain", "weights", "token_ids"]))
def test_fuzz_trace_npy_bytes(base, data, name):
    with tempfile.TemporaryDirectory() as d:
        t = Path(d) / "t.moetrace"
        shutil.copytree(base["trace"], t)
        f = t / ARRAY_FILES[name]
        f.write_bytes(data.draw(byte_mutation(f.read_bytes())))
        _info(t)


@fuzz(40)
@given(
    name=st.sampled_from(["experts", "seq_offsets", "seq_domain", "weights", "token_ids"]),
    kind=st.sampled_from(
        ["int64", "float64", "bool", "big_endian", "shape", "huge_values", "object", "empty"]
    ),
)
def test_fuzz_trace_npy_arrays(base, name, kind):
    with tempfile.TemporaryDirectory() as d:
        t = Path(d) / "t.moetrace"
        shutil.copytree(base["trace"], t)
        f = t / ARRAY_FILES[name]
        a = np.load(f)
        if kind == "object":
            np.save(f, np.array([{"x": 1}] * max(1, len(a)), dtype=object), allow_pickle=True)
        else:
            b = {
                "int64": lambda: a.astype(np.int64),
                "float64": lambda: a.astype(np.float64) + 0.5,
                "bool": lambda: a.astype(bool),
                "big_endian": lambda: a.astype(a.dtype.newbyteorder(">")),
                "shape": lambda: a.reshape(-1),
                "huge_values": lambda: np.full(
                    a.shape, np.iinfo(a.dtype).max if a.dtype.kind in "iu" else 1e30, a.dtype
                ),
                "empty": lambda: a[:0],
            }[kind]()
            np.save(f, b)
        _info(t)


def test_manifest_cannot_reach_outside_its_directory(base, tmp_path):
    outside = tmp_path / "secret.npy"
    np.save(outside, np.zeros((18, 16, 8), np.int16))
    t = tmp_path / "t.moetrace"
    shutil.copytree(base["trace"], t)
    doc = json.loads((t / "trace.json").read_text())
    for file in ("../secret.npy", str(outside)):
        doc["arrays"]["experts"]["file"] = file
        (t / "trace.json").write_text(json.dumps(doc))
        line = run_cli(["trace", "info", t]).err
        assert "arrays.experts.file" in line and "inside the trace directory" in line
    (t / "experts.npy").unlink()
    (t / "experts.npy").symlink_to(outside)
    doc["arrays"]["experts"]["file"] = "experts.npy"
    (t / "trace.json").write_text(json.dumps(doc))
    res = run_cli(["trace", "info", t])
    assert res.code == 2 and "is a link" in res.err


# -- profile YAML ------------------------------------------------------------------------------------------
def _run_with(base: dict[str, Path], d: str, key: str, value: Path) -> None:
    out = Path(d) / "out"
    res = run_cli(["run", base["scenario"], "--set", f"{key}={value}", "--out", out, "--quiet"])
    assert_contract(res, str(value), written=out)


@fuzz(20)
@given(data=st.data())
def test_fuzz_profile_yaml_tree(base, data):
    doc = yaml.safe_load(base["profile"].read_text())
    doc = data.draw(json_mutation(doc))
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "p.yaml"
        text = yaml.safe_dump(doc, sort_keys=False)
        p.write_text(text.replace("__DEEP_NESTING__", "[" * 5000 + "]" * 5000), encoding="utf-8")
        _run_with(base, d, "hardware.profile", p)


YAML_TEXT_OPS = ["duplicate_key", "alias", "tab", "binary", "bytes"]


@fuzz(25)
@given(op=st.sampled_from(YAML_TEXT_OPS), data=st.data())
def test_fuzz_profile_yaml_text(base, op, data):
    text = base["profile"].read_text()
    if op == "duplicate_key":
        blob = text.replace("name: ", "name: dup\nname: ", 1).encode()
    elif op == "alias":
        blob = (
            text.replace("provenance:\n", "provenance: &p\n", 1)
            .replace("extrapolation: flag", "extrapolation: *p")
            .encode()
        )
    elif op == "tab":
        blob = text.replace("  ", "\t", 3).encode()
    elif op == "binary":
        blob = b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe" + text.encode()
    else:
        blob = data.draw(byte_mutation(text.encode()))
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "p.yaml"
        p.write_bytes(blob)
        _run_with(base, d, "hardware.profile", p)


# -- model config.json -------------------------------------------------------------------------------------
@fuzz(40)
@given(data=st.data())
def test_fuzz_model_config(base, data):
    doc = data.draw(json_mutation(OLMOE_CONFIG))
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "config.json"
        p.write_text(dump_json(doc), encoding="utf-8")
        _run_with(base, d, "model.config", p)


@fuzz(15)
@given(data=st.data())
def test_fuzz_model_config_bytes(base, data):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "config.json"
        p.write_bytes(data.draw(byte_mutation(json.dumps(OLMOE_CONFIG).encode())))
        _run_with(base, d, "model.config", p)


# -- predictor model files ---------------------------------------------------------------------------------
PROPHET_CFG = {
    "E": 64,
    "L": 16,
    "k": 8,
    "attn_heads": 1,
    "context": 2,
    "d_model": 8,
    "dropout": 0.1,
    "ff": 8,
    "heads": 1,
    "layers": 1,
    "predictor": "prophet",
    "temperatures": [1.0],
    "threads": 1,
    "info": {},
}


def prophet_tensors(cfg: dict) -> dict[str, np.ndarray]:
    from moesim.policies.predictors._nets import state_to_numpy
    from moesim.policies.predictors.prophet import _build_net

    return state_to_numpy(_build_net(cfg))


def _eval(base: dict[str, Path], d: str, model: Path) -> None:
    out = Path(d) / "ev"
    res = run_cli(["predictor", "eval", "prophet", "--trace", base["trace"], "--model", model, "--out", out])
    assert_contract(res, str(model), written=out)


@fuzz(25)
@given(data=st.data())
def test_fuzz_predictor_config(base, data):
    from moesim.policies.predictors._common import save_model_file

    cfg = data.draw(json_mutation(PROPHET_CFG))
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "m.safetensors"
        try:
            save_model_file(p, prophet_tensors(PROPHET_CFG), cfg)
        except (TypeError, ValueError):  # not JSON-serialisable: cannot be written at all
            reject()
        _eval(base, d, p)


@fuzz(20)
@given(data=st.data(), suffix=st.sampled_from([".safetensors", ".pt"]))
def test_fuzz_predictor_file_bytes(base, data, suffix):
    from moesim.policies.predictors._common import save_model_file

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"m{suffix}"
        save_model_file(p, prophet_tensors(PROPHET_CFG), PROPHET_CFG)
        p.write_bytes(data.draw(byte_mutation(p.read_bytes())))
        _eval(base, d, p)


def test_crafted_model_config_is_refused_before_allocating(base, tmp_path):
    """The config asks for a (2e9 x 8) embedding; the file holds a small one: refused from the
    shapes, without building the network (which would allocate tens of GB)."""
    from moesim.policies.predictors._common import save_model_file

    cfg = dict(PROPHET_CFG, E=2_000_000, L=1000)  # a 2e9 x 8 float32 embedding: 64 GB
    p = tmp_path / "m.safetensors"
    save_model_file(p, prophet_tensors(PROPHET_CFG), cfg)
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res = run_cli(
        ["predictor", "eval", "prophet", "--trace", base["trace"], "--model", p, "--out", tmp_path / "e"]
    )
    assert res.code == 2 and "do not match its config" in res.err
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000  # KiB: under 0.5 GB


# -- result directories read by `moesim report` -------------------------------------------------------------
def _report(run: Path, d: str) -> None:
    out = Path(d) / "rep"
    res = run_cli(["report", run, "--out", out, "--quiet"])
    assert_contract(res, str(run), written=out)


@fuzz(10)
@given(data=st.data())
def test_fuzz_report_summary(base, data):
    doc = json.loads((base["run"] / "summary.json").read_text())
    for drop in ("provenance",):  # keep mutations on what the report computes with
        doc.pop(drop, None)
    mutated = data.draw(json_mutation(doc))
    with tempfile.TemporaryDirectory() as d:
        run = Path(d) / "run"
        shutil.copytree(base["run"], run)
        full = json.loads((run / "summary.json").read_text())
        if isinstance(mutated, dict):
            mutated["provenance"] = full["provenance"]
        (run / "summary.json").write_text(dump_json(mutated), encoding="utf-8")
        _report(run, d)


@fuzz(25)
@given(
    data=st.data(),
    name=st.sampled_from(["tokens.parquet", "layers.parquet", "run_extras.parquet", "summary.json"]),
)
def test_fuzz_report_file_bytes(base, data, name):
    with tempfile.TemporaryDirectory() as d:
        run = Path(d) / "run"
        shutil.copytree(base["run"], run)
        f = run / name
        blob = data.draw(byte_mutation(f.read_bytes()))
        if blob == f.read_bytes():
            reject()
        f.write_bytes(blob)
        _report(run, d)


@fuzz(10)
@given(
    name=st.sampled_from(["tokens", "layers"]),
    kind=st.sampled_from(["drop_column", "strings", "bools", "empty"]),
    col=st.integers(0, 20),
)
def test_fuzz_report_table_columns(base, name, kind, col):
    import pandas as pd

    with tempfile.TemporaryDirectory() as d:
        run = Path(d) / "run"
        shutil.copytree(base["run"], run)
        f = run / f"{name}.parquet"
        df = pd.read_parquet(f)
        c = df.columns[col % len(df.columns)]
        if kind == "drop_column":
            df = df.drop(columns=[c])
        elif kind == "strings":
            df[c] = df[c].astype(str)
        elif kind == "bools":
            df[c] = True
        else:
            df = df.iloc[:0]
        buf = io.BytesIO()
        df.to_parquet(buf)
        f.write_bytes(buf.getvalue())
        _report(run, d)
