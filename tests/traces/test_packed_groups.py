"""Packed replay groups (flat arrays, what a RunCache keeps) unpack to exactly the groups
``iter_groups`` builds, and the cached access stream is ``access_stream``'s."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from moesim.traces.replay import access_stream, iter_groups, iter_packed, pack_group
from moesim.traces.synth import synthesize
from tests.helpers import random_trace


def _fields(g):
    return (g.index, g.seqs, g.steps, g.counts, g.active, g.num_layers, g.prefill_steps, g.prompt_tokens)


@pytest.mark.parametrize("batch", [1, 2, 3])
@pytest.mark.parametrize("prefill", [False, True])
def test_unpacked_groups_equal_built_groups(batch, prefill):
    trace = synthesize(5, 9, seed=2, prefill_tokens=4, num_layers=4, num_experts=16, top_k=3)
    trace = trace.select([0, 1, 2, 3, 4])
    built = list(iter_groups(trace, batch, prefill))
    packed = list(iter_packed(trace, batch, prefill))
    assert [_fields(p.unpack()) for p in packed] == [_fields(g) for g in built]
    for p, g in zip(packed, built):
        u = p.unpack()
        assert all(type(k) is int for st in u.steps for k in st)  # plain ints, as built
        assert u.flat is p.flat and p.num_steps == len(g.steps)
        for s in (0, len(g.steps) - 1):
            assert u.flat[u.offsets[s] : u.offsets[s + 1]].tolist() == g.steps[s]
        assert _fields(pack_group(g, 4 * 16).unpack()) == _fields(g)
    stream = np.concatenate([p.flat for p in packed]).astype(np.int32)
    assert np.array_equal(stream, access_stream(trace, batch, prefill))


def test_uneven_lengths_and_wide_keys():
    trace = random_trace(np.random.default_rng(0), 3, [5, 1, 3], 2, 40_000, 2, skew=0)
    for batch in (1, 2):
        packed = list(iter_packed(trace, batch))
        assert packed[0].flat.dtype == np.int32  # L * E = 80,000 keys do not fit int16
        assert [_fields(p.unpack()) for p in packed] == [_fields(g) for g in iter_groups(trace, batch)]


def test_lists_are_built_on_first_read_and_then_behave_as_attributes():
    from dataclasses import replace

    trace = synthesize(2, 6, seed=1, num_layers=2, num_experts=8, top_k=2)
    (built,) = list(iter_groups(trace, 2))
    (packed,) = list(iter_packed(trace, 2))
    u = packed.unpack()
    assert u.__dict__["steps"] is None and u.flat is packed.flat  # not built yet: only the arrays
    assert pickle.loads(pickle.dumps(u)).steps == built.steps
    assert u.steps == built.steps and u.counts == built.counts
    assert u.steps is u.steps  # built once
    u.steps = [[1]]
    assert u.steps == [[1]]
    assert replace(packed.unpack(), index=7).steps == built.steps
    assert packed.unpack().horizon == len(built.steps)
