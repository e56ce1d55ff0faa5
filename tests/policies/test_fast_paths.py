"""Policies may offer fused hot-path callables (``fast_insert``, ``fast_hit``, ``fast_contains``,
``fast_len``); each must behave exactly as the interface's parts composed by the pool."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.policies.caches.base import CacheContext, CachePolicy
from moesim.policies.caches.lru import LRU
from moesim.policies.pool import _inserter
from moesim.policies.registries import CACHES

FUSED = [name for name in CACHES.names() if CACHES.get(name).fast_insert is not CachePolicy.fast_insert]


def test_lru_and_fifo_offer_the_fused_paths():
    assert {"lru", "fifo"} <= set(FUSED)
    assert LRU(4, CacheContext(1, 16)).fast_hit() is not None
    assert CACHES.get("fifo")(4, CacheContext(1, 16)).fast_hit() is None  # FIFO's on_hit differs


def test_a_subclass_that_changes_a_part_gets_the_composed_path():
    class Pickier(LRU):
        def victim(self, pinned):
            return max((k for k in self._order if k not in pinned), default=None)

    assert Pickier(4, CacheContext(1, 16)).fast_insert() is None


@pytest.mark.parametrize("name", FUSED)
@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.integers(0, 15), st.booleans(), st.sets(st.integers(0, 15), max_size=4)), max_size=80
    ),
    capacity=st.integers(1, 6),
)
def test_fused_equals_composed(name, ops, capacity):
    cls = CACHES.get(name)
    fused, parts = cls(capacity, CacheContext(1, 16)), cls(capacity, CacheContext(1, 16))
    f_insert, p_insert = fused.fast_insert(), _inserter(parts)
    f_hit, f_contains, f_len = fused.fast_hit(), fused.fast_contains(), fused.fast_len()
    for pos, (key, prefetch, pinned) in enumerate(ops):
        if f_contains(key):
            assert key in parts
            if f_hit is not None:
                f_hit(key)
            else:
                fused.on_hit(key, pos)
            parts.on_hit(key, pos)
            continue
        f_ev: list[int] = []
        p_ev: list[int] = []
        assert f_insert(key, pos, prefetch, pinned, f_ev) == p_insert(key, pos, prefetch, pinned, p_ev)
        assert f_ev == p_ev
        assert f_len() == len(parts) <= capacity
        assert fused.victim(set()) == parts.victim(set())  # the same next victim
        assert [k for k in range(16) if k in fused] == [k for k in range(16) if k in parts]
