"""Residency of one memory tier: capacity, scope and pins.

Scopes: ``global`` (one pool for every layer), ``per-layer`` (``capacity`` slots for each layer) and
``split`` (``capacity`` slots in total, divided among the layers by a sizing rule, see
``moesim/policies/sizing.py``). The pool asks its policy for a victim and commits the eviction
itself, so no policy can exceed capacity or evict a pinned expert (the contract tests check both
through this one door). A policy's fused ``fast_insert`` stands in for that composition only where
tests/policies/test_fast_paths.py shows it behaves identically.

The hot path's calls are attributes bound at construction: ``contains(key)``, ``hit(key, pos)``,
``hit_key(key)`` (or None) and ``insert(key, pos, prefetch, pinned, evicted, score=None) -> bool``
(see ``_inserter``).
"""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import replace

from moesim.errors import fail
from moesim.policies.caches.base import CacheContext, CachePolicy

SCOPES = ("global", "per-layer", "split")


class ExpertPool:
    def __init__(
        self,
        policy_cls: type[CachePolicy],
        capacity: int,
        scope: str,
        ctx: CacheContext,
        min_slots: int,
        capacities: list[int] | None = None,
        bypass: bool = False,
    ):
        if scope not in SCOPES:
            fail(f"cache.scope: unknown scope {scope!r}; choose one of: {', '.join(SCOPES)}")
        if scope == "split":
            if capacities is None or len(capacities) != ctx.num_layers:
                raise ValueError("scope 'split' needs one capacity per layer")
            caps = list(capacities)
        else:
            caps = [capacity] * (ctx.num_layers if scope == "per-layer" else 1)
        floor = 1 if bypass else min_slots
        if min(caps) < floor:
            where = "in total" if scope == "global" else "per layer"
            fail(
                f"cache.capacity: {min(caps)} slots {where} cannot hold one layer-step's {min_slots} experts; "
                f"set cache.capacity >= {min_slots}, or cache.bypass=true to stream what does not fit"
            )
        self.scope = scope
        self.capacities = caps
        self.capacity = sum(caps)
        self.num_experts = ctx.num_experts
        self._per_layer = scope != "global"
        # Each pool's context names the layer it serves (pin-hot pins that layer's hottest) and the
        # slots a layer-step needs evictable.
        reserve = 0 if bypass else min_slots
        self._pools = [
            policy_cls(c, replace(ctx, layer=i if self._per_layer else None, min_slots=reserve))
            for i, c in enumerate(caps)
        ]
        # The hot path's calls, bound once: with one pool they skip the per-key dispatch (and for
        # dict-backed policies reach the dict's own C methods).
        self._inserters = [pol.fast_insert() or _inserter(pol) for pol in self._pools]
        if self._per_layer:
            self.contains = self.__contains__
            self.hit = self._hit_dispatch
            self.hit_key = None
            self.insert = self._insert_dispatch
        else:
            self.contains = self._pools[0].fast_contains()
            self.hit = self._pools[0].on_hit
            self.hit_key = self._pools[0].fast_hit()
            self.insert = self._inserters[0]  # type: ignore[assignment]
        self.preloaded: list[int] = []
        for pol in self._pools:
            for key in pol.preload():
                if key not in pol and len(pol) < pol.capacity:
                    pol.admit(key, 0, True)
                    self.preloaded.append(key)

    def policy_for(self, key: int) -> CachePolicy:
        return self._pools[key // self.num_experts] if self._per_layer else self._pools[0]

    @property
    def policies(self) -> list[CachePolicy]:
        return self._pools

    def __contains__(self, key: int) -> bool:
        return key in self.policy_for(key)

    def __len__(self) -> int:
        return sum(len(p) for p in self._pools)

    def _hit_dispatch(self, key: int, pos: int) -> None:
        self.policy_for(key).on_hit(key, pos)

    def _insert_dispatch(
        self,
        key: int,
        pos: int,
        prefetch: bool,
        pinned: Container[int],
        evicted: list[int],
        score: float | None = None,
    ) -> bool:
        return self._inserters[key // self.num_experts](key, pos, prefetch, pinned, evicted, score)


Inserter = Callable[[int, int, bool, Container[int], list[int], "float | None"], bool]


def _inserter(pol: CachePolicy) -> Inserter:
    """``ExpertPool.insert`` for one policy from its parts: ``insert(key, pos, prefetch, pinned, evicted, score=None)``.

    Makes room (appending victims to ``evicted``) and admits ``key``. Returns False, admitting
    nothing, when every resident is pinned: a prefetch is then dropped and a demand miss streams
    through (``cache.bypass``; otherwise the capacity check makes this impossible). The policy's
    methods are bound once: this is the simulator's most frequent call.
    """
    size, cap = pol.fast_len(), pol.capacity
    incoming = pol.incoming if type(pol).incoming is not CachePolicy.incoming else None
    victim, evict, admit = pol.victim, pol.evict, pol.admit

    def insert(key, pos, prefetch, pinned, evicted, score=None) -> bool:
        if size() >= cap:
            if incoming is not None:
                incoming(key, prefetch)
            v = victim(pinned)
            if v is None:
                return False
            evict(v)
            evicted.append(v)
        admit(key, pos, prefetch, score)
        return True

    return insert
