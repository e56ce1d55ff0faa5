from __future__ import annotations

from collections import OrderedDict
from collections.abc import Container

from moesim.policies.caches.base import CacheContext, CachePolicy
from moesim.policies.registries import CACHES


@CACHES.register
class LRU(CachePolicy):
    """Least recently used; admissions (demand or prefetch) enter as most recently used."""

    name = "lru"

    def __init__(self, capacity: int, ctx: CacheContext):
        super().__init__(capacity, ctx)
        self._order: OrderedDict[int, None] = OrderedDict()

    def __contains__(self, key: int) -> bool:
        return key in self._order

    def fast_contains(self):
        return self._order.__contains__

    def __len__(self) -> int:
        return len(self._order)

    def fast_len(self):
        return self._order.__len__

    def fast_insert(self):
        cls = type(self)
        if (cls.victim, cls.evict, cls.admit, cls.incoming) != (
            LRU.victim,
            LRU.evict,
            LRU.admit,
            CachePolicy.incoming,
        ):
            return None  # a subclass changed the parts: let the pool compose them
        order, cap = self._order, self.capacity

        def insert(key, pos, prefetch, pinned, evicted, score=None) -> bool:
            if len(order) >= cap:
                for victim in order:  # victim(), inlined
                    if victim not in pinned:
                        break
                else:
                    return False
                del order[victim]
                evicted.append(victim)
            order[key] = None
            return True

        return insert

    def fast_hit(self):
        return self._order.move_to_end if type(self).on_hit is LRU.on_hit else None

    def on_hit(self, key: int, pos: int) -> None:
        self._order.move_to_end(key)

    def admit(self, key: int, pos: int, prefetch: bool, score: float | None = None) -> None:
        self._order[key] = None

    def victim(self, pinned: Container[int]) -> int | None:
        for key in self._order:  # oldest first; at most |pinned| keys are skipped
            if key not in pinned:
                return key
        return None

    def evict(self, key: int) -> None:
        del self._order[key]
