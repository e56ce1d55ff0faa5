from __future__ import annotations

from collections.abc import Container

from moesim.policies.caches.base import CacheContext, CachePolicy
from moesim.policies.caches.lazy_heap import heap_victim, push_bounded
from moesim.policies.registries import CACHES


@CACHES.register
class LFU(CachePolicy):
    """Least frequently used among residents; ties go to the least recently used.

    Frequency counts demand accesses while resident (it restarts at 1 on re-admission, which keeps
    one early burst from pinning an expert forever). A lazily-invalidated heap keeps eviction
    O(log n) instead of a scan of the pool.
    """

    name = "lfu"

    def __init__(self, capacity: int, ctx: CacheContext):
        super().__init__(capacity, ctx)
        self._state: dict[int, tuple[int, int]] = {}  # key -> (freq, last access tick)
        self._heap: list[tuple[int, int, int]] = []
        self._tick = 0

    def __contains__(self, key: int) -> bool:
        return key in self._state

    def __len__(self) -> int:
        return len(self._state)

    def _touch(self, key: int, freq: int) -> None:
        self._tick += 1
        self._state[key] = (freq, self._tick)
        push_bounded(self._heap, (freq, self._tick, key), len(self._state), self._live)

    def _live(self):
        return ((f, t, k) for k, (f, t) in self._state.items())

    def on_hit(self, key: int, pos: int) -> None:
        self._touch(key, self._state[key][0] + 1)

    def admit(self, key: int, pos: int, prefetch: bool, score: float | None = None) -> None:
        # A prefetch is not an access: it enters with frequency 0 so a wrong guess leaves first.
        self._touch(key, 0 if prefetch else 1)

    def victim(self, pinned: Container[int]) -> int | None:
        state = self._state
        return heap_victim(self._heap, lambda e: state.get(e[2]) == (e[0], e[1]), pinned)

    def evict(self, key: int) -> None:
        del self._state[key]
