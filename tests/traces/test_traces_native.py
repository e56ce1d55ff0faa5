"""Native .moetrace format: round trip, memory mapping, digest, atomic writes."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from trace_builders import small_trace

from moesim.errors import MoesimInputError
from moesim.traces import load_trace, save_trace, trace_digest
from moesim.traces.native import ARRAY_FILES
from moesim.traces.trace import Trace, TraceMeta

FIELDS = (
    "experts",
    "seq_offsets",
    "seq_domain",
    "weights",
    "token_ids",
    "prefill_experts",
    "prefill_offsets",
    "hidden_states",
    "router_inputs",
    "router_probs",
)


def test_round_trip_all_fields(tmp_path):
    tr = small_trace()
    out = save_trace(tr, tmp_path / "t.moetrace")
    back = load_trace(out)
    assert back.meta == tr.meta and back.meta.extra == tr.meta.extra
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(back, name), getattr(tr, name))
    assert back.path == out
    assert back.num_prefill_tokens == 3 and back.num_sequences == 3 and back.num_tokens == 12


def test_load_is_memory_mapped_and_read_only(tmp_path):
    save_trace(small_trace(), tmp_path / "t.moetrace")
    back = load_trace(tmp_path / "t.moetrace")
    assert isinstance(back.experts, np.memmap) and isinstance(back.weights, np.memmap)
    with pytest.raises(ValueError):
        back.experts[0, 0, 0] = 1


def test_on_disk_layout(tmp_path):
    tr = small_trace(prefill=None)
    tr.token_ids = None
    save_trace(tr, tmp_path / "t.moetrace")
    doc = json.loads((tmp_path / "t.moetrace" / "trace.json").read_text())
    assert doc["schema"] == "moesim.trace" and doc["version"] == 1
    assert set(doc["arrays"]) == {"experts", "seq_offsets", "seq_domain", "weights"}
    assert doc["arrays"]["experts"] == {"file": "experts.npy", "dtype": "<i2", "shape": [12, 3, 2]}
    assert doc["counts"] == {"sequences": 3, "tokens": 12, "prefill_tokens": 0}
    assert doc["meta"]["domains"] == ["a", "b"] and doc["meta"]["top_k"] == 2
    assert sorted(p.name for p in (tmp_path / "t.moetrace").iterdir()) == sorted(
        ["trace.json", "experts.npy", "seq_offsets.npy", "seq_domain.npy", "weights.npy"]
    )
    # Plain .npy with no pickles: numpy can read each file on its own.
    assert np.load(tmp_path / "t.moetrace" / "seq_offsets.npy", allow_pickle=False).dtype == np.dtype("<i8")


def test_wide_expert_ids_use_int32(tmp_path):
    tr = small_trace(prefill=None)
    tr.meta = replace(tr.meta, num_experts=40000)
    tr.experts = tr.experts.astype(np.int32) + 32760
    save_trace(tr, tmp_path / "t.moetrace")
    back = load_trace(tmp_path / "t.moetrace")
    assert back.experts.dtype == np.dtype("<i4")
    np.testing.assert_array_equal(back.experts, tr.experts)


def test_load_accepts_trace_json_path(tmp_path):
    save_trace(small_trace(), tmp_path / "t.moetrace")
    assert load_trace(tmp_path / "t.moetrace" / "trace.json").num_sequences == 3


def test_digest_same_for_trace_and_saved_copy(tmp_path):
    tr = small_trace()
    save_trace(tr, tmp_path / "t.moetrace")
    d = trace_digest(tr)
    assert d.startswith("sha256:") and len(d) == 7 + 64
    assert trace_digest(tmp_path / "t.moetrace") == d
    assert trace_digest(load_trace(tmp_path / "t.moetrace")) == d
    # in-memory dtype does not matter, content does
    tr64 = replace(tr, experts=tr.experts.astype(np.int64))
    assert trace_digest(tr64) == d
    changed = replace(tr, experts=tr.experts.copy())
    changed.experts[0, 0, 0] = (changed.experts[0, 0, 0] + 5) % 10
    if len(set(changed.experts[0, 0].tolist())) == 2:
        assert trace_digest(changed) != d
    assert trace_digest(replace(tr, meta=replace(tr.meta, model="other"))) != d


def test_digest_streams_in_chunks(tmp_path, monkeypatch):
    import moesim.traces.native as native

    tr = small_trace()
    whole = trace_digest(tr)
    monkeypatch.setattr(native, "_CHUNK_BYTES", 7)  # one row per chunk
    assert trace_digest(tr) == whole


def test_save_replaces_atomically_and_refuses_invalid(tmp_path):
    out = tmp_path / "t.moetrace"
    save_trace(small_trace(seed=1), out)
    bad = small_trace(seed=2)
    bad.experts[0, 0, 0] = 99
    with pytest.raises(MoesimInputError, match="expert id 99 >= E=10"):
        save_trace(bad, out)
    # the old trace is intact and no temp dirs are left behind
    assert trace_digest(out) == trace_digest(small_trace(seed=1))
    assert [p.name for p in tmp_path.iterdir()] == ["t.moetrace"]
    save_trace(small_trace(seed=3), out)
    assert trace_digest(out) == trace_digest(small_trace(seed=3))


def test_select_keeps_sequence_names():
    tr = small_trace()
    tr.meta.extra["sequence_names"] = ["x", "y", "z"]
    sub = tr.select([2, 0])
    assert [sub.sequence_name(i) for i in range(2)] == ["z", "x"]
    assert tr.sequence_name(1) == "y"


def test_array_files_cover_trace_fields():
    assert set(ARRAY_FILES) == set(FIELDS)


@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 6), min_size=1, max_size=5).filter(lambda ls: sum(ls) > 0),
    L=st.integers(1, 4),
    k=st.integers(1, 3),
    extra_e=st.integers(0, 5),
    with_weights=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_round_trip_property(tmp_path_factory, lengths, L, k, extra_e, with_weights, seed):
    E = k + extra_e
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    tr = Trace(
        meta=TraceMeta(model="p", num_layers=L, num_experts=E, top_k=k),
        experts=np.argsort(rng.random((n, L, E)), axis=-1)[..., :k],
        seq_offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        seq_domain=np.full(len(lengths), -1, np.int16),
        weights=-np.sort(-rng.random((n, L, k)), axis=-1).astype(np.float32) if with_weights else None,
    )
    out = save_trace(tr, tmp_path_factory.mktemp("rt") / "p.moetrace")
    back = load_trace(out)
    np.testing.assert_array_equal(back.experts, tr.experts)
    np.testing.assert_array_equal(back.seq_offsets, tr.seq_offsets)
    assert (back.weights is None) == (not with_weights)
    assert trace_digest(back) == trace_digest(tr)


def test_empty_trace_is_refused(tmp_path):
    tr = Trace(
        meta=TraceMeta(model="p", num_layers=2, num_experts=4, top_k=1),
        experts=np.zeros((0, 2, 1), np.int16),
        seq_offsets=np.zeros(2, np.int64),
        seq_domain=np.full(1, -1, np.int16),
    )
    with pytest.raises(MoesimInputError, match="no decode tokens"):
        save_trace(tr, tmp_path / "e.moetrace")
    assert not (tmp_path / "e.moetrace").exists()


def test_save_never_replaces_a_non_trace(tmp_path):
    victim = tmp_path / "data"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep")
    with pytest.raises(MoesimInputError, match="exists and is not a moesim trace"):
        save_trace(small_trace(), victim)
    assert (victim / "precious.txt").read_text() == "keep"
