from __future__ import annotations

from collections import OrderedDict
from collections.abc import Container

import numpy as np

from moesim.errors import fail
from moesim.policies.caches.base import CacheContext, CachePolicy
from moesim.policies.params import Param, ParamSchema
from moesim.policies.registries import CACHES


@CACHES.register
class PinHot(CachePolicy):
    """Static placement of the hottest experts plus an LRU remainder.

    What llama.cpp users do with ``--n-cpu-moe`` / ``-ot`` and what KTransformers does: the most
    used experts live on the GPU for the whole run, loaded with the model. Here
    ``pin_fraction`` x capacity experts with the most demand accesses in the training trace
    (``CacheContext.counts``; ties by lowest key) are preloaded and never evicted; the other slots
    are an LRU cache. A global pool ranks every (layer, expert); a per-layer or split pool ranks its
    own layer's experts (``CacheContext.layer``), against its own capacity.

    Two limits keep the pins sane: experts never used in the training trace are not pinned (a slot
    holding one would be wasted), and, without ``cache.bypass``, at least one layer-step's experts
    (``CacheContext.min_slots``) stay evictable so a miss always has a victim.
    """

    name = "pin-hot"
    needs_counts = True
    params = ParamSchema(pin_fraction=Param(0.5, "float", 0.0, 1.0))

    def __init__(self, capacity: int, ctx: CacheContext):
        super().__init__(capacity, ctx)
        if ctx.counts is None:
            fail(
                "cache.policy: pin-hot needs expert popularity (CacheContext.counts from the training "
                "trace), and this pool was built without it"
            )
        frac = float(self.param("pin_fraction"))
        if not 0.0 <= frac <= 1.0:
            fail(f"cache.params.pin_fraction: must be in [0, 1], got {frac}")
        E = ctx.num_experts
        counts = np.asarray(ctx.counts, dtype=np.int64)
        if ctx.layer is None:
            flat, base = counts.reshape(-1), 0
        else:
            flat, base = counts[ctx.layer], ctx.layer * E
        n = min(int(frac * capacity), max(0, capacity - ctx.min_slots), int(np.count_nonzero(flat)))
        # a stable sort of -counts keeps the lowest key first among equal counts
        order = np.argsort(-flat, kind="stable")[:n]
        self._hot: list[int] = [base + int(i) for i in order]
        self._pins = frozenset(self._hot)
        self._pinned_resident: set[int] = set()
        self._lru: OrderedDict[int, None] = OrderedDict()  # the unpinned slots, oldest first

    def preload(self) -> list[int]:
        return list(self._hot)

    def pinned(self) -> frozenset[int]:
        return self._pins

    def __contains__(self, key: int) -> bool:
        return key in self._lru or key in self._pinned_resident

    def __len__(self) -> int:
        return len(self._lru) + len(self._pinned_resident)

    def on_hit(self, key: int, pos: int) -> None:
        if key in self._lru:
            self._lru.move_to_end(key)

    def admit(self, key: int, pos: int, prefetch: bool, score: float | None = None) -> None:
        if key in self._pins:
            self._pinned_resident.add(key)
        else:
            self._lru[key] = None

    def victim(self, pinned: Container[int]) -> int | None:
        # own pins never enter the LRU, so only the pool's pins need skipping
        for key in self._lru:
            if key not in pinned:
                return key
        return None

    def evict(self, key: int) -> None:
        del self._lru[key]
