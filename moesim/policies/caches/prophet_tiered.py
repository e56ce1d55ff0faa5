from __future__ import annotations

from collections import OrderedDict
from collections.abc import Container

from moesim.errors import fail
from moesim.policies.caches.base import CacheContext, CachePolicy
from moesim.policies.params import Param, ParamSchema
from moesim.policies.registries import CACHES


@CACHES.register
class ProphetTiered(CachePolicy):
    """Prophet's confidence-tiered placement: a protected L1 and a probationary L2 in one pool.

    L1 takes experts prefetched with a predictor score >= ``confidence`` and, with
    ``promote_on_hit``, experts that a demand access found in L2; everything else (demand misses,
    low-confidence prefetches, prefetches that carry no score) enters L2. L1 holds at most
    ``l1_fraction`` x capacity experts: when it overflows, its least recently used one is demoted to
    L2's most recent end (it keeps its slot; nothing is evicted by a demotion). Victims come from
    L2's least recently used end first and from L1 only when every L2 resident is pinned or L2 is
    empty, so a confident prediction or a re-used expert survives a burst of one-off misses.

    The seed reviews (seeds/000, 001) describe Prophet's "confidence-tiered L1/L2 GPU caching" only
    at this level; the segmented-LRU mechanics here (sizes, demotion, promotion) are ours.
    """

    name = "prophet-tiered"
    params = ParamSchema(
        confidence=Param(0.5, "float"),
        l1_fraction=Param(0.5, "float", 0.0, 1.0),
        promote_on_hit=Param(True, "bool"),
    )

    def __init__(self, capacity: int, ctx: CacheContext):
        super().__init__(capacity, ctx)
        self._confidence = float(self.param("confidence"))
        frac = float(self.param("l1_fraction"))
        if not 0.0 <= frac <= 1.0:
            fail(f"cache.params.l1_fraction: must be in [0, 1], got {frac}")
        self._l1_cap = int(frac * capacity)
        self._promote = bool(self.param("promote_on_hit"))
        self._l1: OrderedDict[int, None] = OrderedDict()  # oldest first
        self._l2: OrderedDict[int, None] = OrderedDict()

    def __contains__(self, key: int) -> bool:
        return key in self._l1 or key in self._l2

    def __len__(self) -> int:
        return len(self._l1) + len(self._l2)

    def tier(self, key: int) -> int | None:
        """1 or 2 for a resident (for per-tier statistics and tests), None otherwise."""
        return 1 if key in self._l1 else 2 if key in self._l2 else None

    def _to_l1(self, key: int) -> None:
        l1 = self._l1
        l1[key] = None
        if len(l1) > self._l1_cap:
            old, _ = l1.popitem(last=False)
            self._l2[old] = None

    def on_hit(self, key: int, pos: int) -> None:
        if key in self._l1:
            self._l1.move_to_end(key)
        elif self._promote:
            del self._l2[key]
            self._to_l1(key)
        else:
            self._l2.move_to_end(key)

    def admit(self, key: int, pos: int, prefetch: bool, score: float | None = None) -> None:
        if prefetch and score is not None and score >= self._confidence:
            self._to_l1(key)
        else:
            self._l2[key] = None

    def victim(self, pinned: Container[int]) -> int | None:
        for key in self._l2:  # oldest first; at most |pinned| keys are skipped
            if key not in pinned:
                return key
        for key in self._l1:
            if key not in pinned:
                return key
        return None

    def evict(self, key: int) -> None:
        if key in self._l2:
            del self._l2[key]
        else:
            del self._l1[key]
