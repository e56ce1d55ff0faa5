from __future__ import annotations

from collections.abc import Container

from moesim.policies.caches.base import CacheContext, CachePolicy
from moesim.policies.caches.lazy_heap import heap_victim, push_bounded
from moesim.policies.registries import CACHES


@CACHES.register
class Belady(CachePolicy):
    """Belady's OPT: evict the resident whose next demand access is farthest (never = infinite).

    Ties go to the lowest key, i.e. lowest (layer, expert id), as docs/design.md's reference fixes.
    An offline bound: it reads the trace's future through ``CacheContext.next_use`` (precomputed
    next-use positions, moesim.policies.future). Its heap holds at most ~2x its residents.
    """

    name = "belady"
    needs_future = True

    def __init__(self, capacity: int, ctx: CacheContext):
        super().__init__(capacity, ctx)
        assert ctx.next_use is not None, "Belady needs the future index"
        self._next_use = ctx.next_use
        self._next: dict[int, int] = {}
        self._heap: list[tuple[int, int]] = []  # (-next use, key), lazily invalidated, bounded

    def __contains__(self, key: int) -> bool:
        return key in self._next

    def __len__(self) -> int:
        return len(self._next)

    def _set(self, key: int, nxt: int) -> None:
        self._next[key] = nxt
        push_bounded(self._heap, (-nxt, key), len(self._next), self._live)

    def _live(self):
        return ((-v, k) for k, v in self._next.items())

    def on_hit(self, key: int, pos: int) -> None:
        self._set(key, self._next_use(key, pos + 1))

    def admit(self, key: int, pos: int, prefetch: bool, score: float | None = None) -> None:
        # A demand admission consumes the access at ``pos``; a prefetch waits for the next one.
        self._set(key, self._next_use(key, pos if prefetch else pos + 1))

    def victim(self, pinned: Container[int]) -> int | None:
        nxt = self._next
        return heap_victim(self._heap, lambda e: nxt.get(e[1]) == -e[0], pinned)

    def evict(self, key: int) -> None:
        del self._next[key]
