"""What a process keeps between runs (loaded traces, replay groups, on-demand baselines) is reused
only while its inputs are unchanged, and never changes a result."""

from __future__ import annotations

import json

import numpy as np

from moesim.experiments.overrides import resolve_scenario
from moesim.experiments.run import on_demand_misses, prepare, provenance, run_prepared
from moesim.traces.native import save_trace
from tests.helpers import random_trace

L, E, K = 16, 64, 8  # olmoe-1b-7b's shape, so the catalog model fits the trace


def _scenario(path, **over):
    base = {"model.name": "olmoe-1b-7b", "trace.path": str(path), "hardware.profile": "estimated:h100-pcie"}
    return resolve_scenario(None, None, {**base, **over})


def test_trace_and_groups_are_reused_until_the_files_change(tmp_path):
    path = tmp_path / "t.moetrace"
    save_trace(random_trace(np.random.default_rng(1), 3, 6, L, E, K), path)
    a, b = prepare(_scenario(path)), prepare(_scenario(path, **{"cache.capacity": 128}))
    assert b.trace is a.trace and b.packed_groups() is a.packed_groups() is not None
    assert b.groups() is a.groups()  # a small trace's Group objects (and their lists) are kept too
    assert prepare(_scenario(path, **{"trace.max_sequences": 2})).trace is not a.trace  # another selection
    save_trace(random_trace(np.random.default_rng(2), 3, 7, L, E, K), path)  # replaces it atomically
    c = prepare(_scenario(path))
    assert c.trace is not a.trace and len(c.trace.experts) == 21
    assert sum(len(g.steps) for g in c.groups()) == 21 * L
    a.trace = a.trace.select([0])  # a caller's own trace is never served from the cache
    assert len(list(a.groups())) == 1


def test_baselines_left_in_a_directory_are_found_and_checked(tmp_path):
    path = tmp_path / "t.moetrace"
    save_trace(random_trace(np.random.default_rng(3), 2, 9, L, E, K), path)
    store = tmp_path / "baselines"
    none = run_prepared(
        prepare(_scenario(path, **{"predictor.name": "none", "cache.capacity": 64})), baselines=store
    )
    (f,) = store.iterdir()
    doc = json.loads(f.read_text())
    assert doc["misses"] == none.summary["counts"]["misses"]
    p = prepare(_scenario(path, **{"predictor.name": "oracle", "cache.capacity": 64}))
    from moesim.experiments import run as run_mod

    run_mod._BASELINES.clear()  # as in another worker process
    assert on_demand_misses(p, provenance(p, "sim", "x"), store) == doc["misses"]
    f.write_text(json.dumps({"key": "another run", "misses": 1}))  # not this run's: replayed instead
    run_mod._BASELINES.clear()
    assert on_demand_misses(p, provenance(p, "sim", "x"), store) == doc["misses"]


def test_trace_digest_is_hashed_once_per_file_and_again_when_it_changes(tmp_path, monkeypatch):
    import os

    from moesim.traces import native

    path = tmp_path / "t.moetrace"
    save_trace(random_trace(np.random.default_rng(4), 2, 5, L, E, K), path)
    calls = []
    real = native.trace_digest
    monkeypatch.setattr(native, "trace_digest", lambda t: calls.append(1) or real(t))
    a = prepare(_scenario(path))
    first = provenance(a, "sim", "x")["trace_sha256"]
    assert first == real(path) and len(calls) == 1
    b = prepare(_scenario(path, **{"cache.capacity": 128}))
    assert provenance(b, "sim", "x")["trace_sha256"] == first and len(calls) == 1  # not hashed again
    # Another file of the same size with the same modification times: a new digest (the inode changed).
    stamps = {f.name: f.stat().st_mtime_ns for f in path.iterdir()}
    save_trace(random_trace(np.random.default_rng(5), 2, 5, L, E, K), path)
    for f in path.iterdir():
        if f.name in stamps:
            os.utime(f, ns=(stamps[f.name], stamps[f.name]))
    c = prepare(_scenario(path))
    second = provenance(c, "sim", "x")["trace_sha256"]
    assert second != first and second == real(path) and len(calls) == 2
    c.trace = c.trace.select([0])  # a caller's own trace: hashed as it is
    assert provenance(c, "sim", "x")["trace_sha256"] == real(c.trace) and len(calls) == 3


def test_a_large_trace_keeps_only_arrays_and_replays_the_same(tmp_path):
    from moesim.experiments.cache import RunCache
    from moesim.traces.replay import iter_groups

    path = tmp_path / "t.moetrace"
    save_trace(random_trace(np.random.default_rng(6), 3, 6, L, E, K), path)
    small = RunCache(view_steps=0)  # as if the trace were larger than the lists the cache keeps
    a, b = prepare(_scenario(path, batch=2), small), prepare(_scenario(path, batch=2), small)
    assert b.packed_groups() is a.packed_groups() and not small.views
    first, second = list(a.groups()), list(b.groups())
    assert first[0] is not second[0] and first[0].flat is second[0].flat  # fresh lists, shared arrays
    built = list(iter_groups(a.trace, 2))
    assert [(g.steps, g.counts, g.active) for g in second] == [(g.steps, g.counts, g.active) for g in built]
    plain = run_prepared(prepare(_scenario(path, batch=2, **{"cache.capacity": 96}), small)).summary
    again = run_prepared(prepare(_scenario(path, batch=2, **{"cache.capacity": 96}))).summary
    plain.pop("wallclock", None), again.pop("wallclock", None)
    assert plain == again
