"""``moesim trace export``: Parquet and libCacheSim oracleGeneral round trips, and libCacheSim's own
LRU and Belady on the exported file agreeing with moesim's demand-only caches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from moesim.cli.main import main
from moesim.engine.decisions import run_decisions
from moesim.experiments.run import build_core
from moesim.hardware import load_profile
from moesim.traces.export import (
    export_libcachesim,
    export_parquet,
    load_parquet_export,
    next_access_vtime,
    read_oracle_general,
    request_stream,
)
from moesim.traces.native import save_trace
from moesim.traces.replay import access_stream, iter_groups
from tests.helpers import make_model, prepared, random_trace

L, E = 6, 32


def _trace(k: int = 2, seqs: int = 5, tokens=40, seed: int = 1):
    t = random_trace(np.random.default_rng(seed), seqs, tokens, L, E, k, skew=0.8)
    t.hidden_states = None
    return t


def _with_extras(t):
    rng = np.random.default_rng(7)
    t.meta = type(t.meta)(t.meta.model, L, E, t.meta.top_k, domains=("a", "b"), source="test")
    t.seq_domain = np.array([0, 1, -1, 1, 0], np.int16)
    t.weights = rng.random(t.experts.shape, dtype=np.float32)
    pre = random_trace(rng, 5, [3, 1, 4, 2, 5], L, E, t.meta.top_k)
    t.prefill_experts, t.prefill_offsets = pre.experts, pre.seq_offsets
    return t


def test_parquet_round_trip(tmp_path):
    import pandas as pd

    t = _with_extras(_trace())
    info = export_parquet(t, tmp_path / "t.parquet")
    k = t.meta.top_k
    assert info.records == (len(t.experts) + len(t.prefill_experts)) * L * k
    back = load_parquet_export(tmp_path / "t.parquet")
    for name in ("experts", "seq_offsets", "seq_domain", "weights", "prefill_experts", "prefill_offsets"):
        assert np.array_equal(getattr(back, name), getattr(t, name)), name
    assert back.meta.domains == ("a", "b") and (back.meta.num_experts, back.meta.top_k) == (E, k)
    df = pd.read_parquet(tmp_path / "t.parquet")
    dec = df[df["phase"] == "decode"]
    row = dec.iloc[len(dec) // 2 + 1]
    n = int(t.seq_offsets[row["sequence"]]) + int(row["token"])
    assert t.experts[n, row["layer"], row["rank"]] == row["expert"]
    assert row["key"] == row["layer"] * E + row["expert"]
    assert np.isclose(t.weights[n, row["layer"], row["rank"]], row["weight"])
    assert dec["domain"].isna().sum() == (t.seq_offsets[3] - t.seq_offsets[2]) * L * k  # domain -1
    assert set(dec[dec["sequence"] == 1]["domain"]) == {"b"}


def test_parquet_export_is_deterministic(tmp_path):
    t = _trace()
    export_parquet(t, tmp_path / "a.parquet")
    export_parquet(t, tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def _reference_next(keys: list[int]) -> list[int]:
    out = []
    for i, key in enumerate(keys):
        j = next((j for j in range(i + 1, len(keys)) if keys[j] == key), None)
        out.append(-1 if j is None else j + 1)  # libCacheSim: 1-based request count
    return out


def test_next_access_vtime_matches_a_brute_force_reference():
    keys = np.random.default_rng(0).integers(0, 9, size=300)
    assert next_access_vtime(keys).tolist() == _reference_next(keys.tolist())
    assert next_access_vtime(np.array([5])).tolist() == [-1]


@pytest.mark.parametrize("batch,prefill", [(1, False), (2, False), (3, True)])
def test_oracle_general_round_trip(tmp_path, batch, prefill):
    t = _with_extras(_trace()) if prefill else _trace()
    info = export_libcachesim(t, tmp_path / "t.bin", batch=batch, prefill=prefill, obj_size=7)
    rec = read_oracle_general(tmp_path / "t.bin")
    assert (tmp_path / "t.bin").stat().st_size == 24 * len(rec) == 24 * info.records
    assert np.array_equal(rec["obj_id"], access_stream(t, batch, prefill))  # moesim's replay order
    assert (rec["obj_size"] == 7).all()
    assert rec["next_access_vtime"].tolist() == _reference_next(rec["obj_id"].tolist())
    steps = [st for g in iter_groups(t, batch, prefill) for st in g.steps]
    assert np.array_equal(rec["clock_time"], np.repeat(np.arange(len(steps)), [len(s) for s in steps]))
    keys, clock = request_stream(t, batch, prefill)
    assert np.array_equal(keys, rec["obj_id"]) and np.array_equal(clock, rec["clock_time"])


def test_libcachesim_reads_the_records(tmp_path):
    lcs = pytest.importorskip("libcachesim")
    t = _trace()
    export_libcachesim(t, tmp_path / "t.bin")
    rec = read_oracle_general(tmp_path / "t.bin")
    reader = lcs.TraceReader(str(tmp_path / "t.bin"), lcs.TraceType.ORACLE_GENERAL_TRACE)
    assert reader.get_num_of_req() == len(rec)
    got = [(q.clock_time, q.obj_id, q.obj_size) for q in reader]
    assert got == list(zip(rec["clock_time"].tolist(), rec["obj_id"].tolist(), rec["obj_size"].tolist()))


def _libcachesim_hits(path: Path, policy: str, capacity: int) -> int:
    lcs = pytest.importorskip("libcachesim")
    cache = getattr(lcs, policy)(capacity)  # objects of size 1: capacity in objects
    return sum(bool(cache.get(q)) for q in lcs.TraceReader(str(path), lcs.TraceType.ORACLE_GENERAL_TRACE))


@pytest.mark.parametrize("capacity", [6, 16, 50, 100, 150])
def test_top1_lru_and_belady_hits_equal_moesim(tmp_path, capacity):
    """Top-1: one access per layer-step, so moesim's step pinning never differs from plain LRU."""
    t = _trace(k=1, tokens=120)
    export_libcachesim(t, tmp_path / "t.bin")
    model = make_model(L, E, 1)
    profile = load_profile("estimated:h100-pcie", model)
    for ours, theirs in (("lru", "LRU"), ("belady", "Belady")):
        core = build_core(prepared(t, model, profile, policy=ours, capacity=capacity))
        run_decisions(core, iter_groups(t, 1))
        assert core.present == _libcachesim_hits(tmp_path / "t.bin", theirs, capacity), ours
        assert 0 < core.present < core.accesses


def test_export_cli(tmp_path, capsys):
    t = _trace()
    src = tmp_path / "t.moetrace"
    save_trace(t, src)
    out = tmp_path / "t.bin"
    assert main(["trace", "export", str(src), "--format", "libcachesim", "--out", str(out)]) == 0
    assert "requests" in capsys.readouterr().out
    first = out.read_bytes()
    assert main(["trace", "export", str(src), "--format", "libcachesim", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["trace", "export", str(src), "-f", "libcachesim", "--out", str(out), "--force"]) == 0
    assert out.read_bytes() == first
    inside = src / "x.parquet"
    assert main(["trace", "export", str(src), "-f", "parquet", "--out", str(inside)]) == 2
    assert not inside.exists()
    bad = tmp_path / "bad.parquet"
    assert main(["trace", "export", str(src), "-f", "parquet", "--batch", "2", "--out", str(bad)]) == 2
    assert main(["trace", "export", str(src), "-f", "libcachesim", "--batch", "0", "--out", str(bad)]) == 2
    assert not bad.exists()
    assert main(["trace", "export", str(src), "-f", "parquet", "--out", str(tmp_path / "p.parquet")]) == 0
    assert load_parquet_export(tmp_path / "p.parquet").num_tokens == t.num_tokens


@pytest.mark.parametrize("batch,prefill", [(1, False), (2, False), (3, True)])
@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 22])
def test_streamed_file_equals_the_in_memory_reference(tmp_path, monkeypatch, batch, prefill, chunk):
    """The writer works block by block from the end; any block size gives the reference's bytes."""
    from moesim.traces import export as ex

    monkeypatch.setattr(ex, "_CHUNK_REQUESTS", chunk)
    t = _with_extras(_trace(seqs=5, tokens=[9, 3, 14, 1, 6])) if prefill else _trace(tokens=[9, 3, 14, 1, 6])
    info = ex.export_libcachesim(t, tmp_path / "t.bin", batch=batch, prefill=prefill, obj_size=3)
    ref = ex.oracle_general_records(t, batch, prefill, obj_size=3)
    assert (tmp_path / "t.bin").read_bytes() == ref.tobytes()
    assert info.records == len(ref) and info.objects == len(np.unique(ref["obj_id"]))
