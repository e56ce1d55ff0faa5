"""The cache-policy interface (one tier, one pool).

Following libCacheSim, choosing a victim (``victim``, a pure peek) is separate from evicting it
(``evict``), so callers can veto or account before committing. The pool (``moesim.policies.pool``)
owns capacity and pinning; a policy only orders its residents.

Keys are ints: ``layer * E + expert``. ``pos`` is the global position of the current demand access
in replay order; policies that look at the future (Belady) use it with ``CacheContext.next_use``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

NEVER = 1 << 62  # "next use" of an expert never accessed again


@dataclass(frozen=True)
class CacheContext:
    num_layers: int
    num_experts: int
    # next_use(key, pos): first demand position >= pos that accesses key (NEVER if none).
    # Only provided when the policy class sets ``needs_future``.
    next_use: Callable[[int, int], int] | None = None
    # (L, E) demand counts from the training trace; only when the policy sets ``needs_counts``.
    counts: np.ndarray | None = None
    params: dict[str, Any] = field(default_factory=dict)  # ``cache.params``, defaults filled in
    # Set by ExpertPool for each pool it builds: the layer a per-layer / split pool serves (None for
    # a global pool), and how many of its slots one layer-step needs at once (0 under cache.bypass),
    # which a policy that pins experts of its own must leave evictable.
    layer: int | None = None
    min_slots: int = 0


class CachePolicy(ABC):
    name: ClassVar[str]
    needs_future: ClassVar[bool] = False  # True = offline policy that reads the trace's future
    needs_counts: ClassVar[bool] = False  # True = reads expert popularity from the training trace
    params: ClassVar[dict[str, Any]] = {}  # accepted ``cache.params`` keys and their defaults

    def __init__(self, capacity: int, ctx: CacheContext):
        self.capacity = capacity
        self.ctx = ctx

    def param(self, name: str) -> Any:
        return self.ctx.params.get(name, self.params[name])

    def preload(self) -> list[int]:
        """Experts resident from the start (loaded with the model, no transfer counted)."""
        return []

    def pinned(self) -> frozenset[int]:
        """Experts this policy never evicts (on top of the pool's per-step pins)."""
        return frozenset()

    @abstractmethod
    def __contains__(self, key: int) -> bool: ...

    def fast_contains(self):
        """The membership test to bind on the hot path (a dict-backed policy returns its dict's)."""
        return self.__contains__

    @abstractmethod
    def __len__(self) -> int: ...

    def fast_len(self):
        """The size function to bind on the hot path (a dict-backed policy returns its dict's)."""
        return self.__len__

    def fast_hit(self):
        """Optionally, ``on_hit`` as a one-argument callable (key) for policies that ignore ``pos``
        (a dict-backed LRU returns its dict's ``move_to_end``). None: the pool calls ``on_hit``."""
        return None

    def fast_insert(self):
        """Optionally, ``ExpertPool.insert`` fused for this policy (make room, admit) as one call,
        which must behave exactly as the pool's composition of ``incoming``, ``victim``, ``evict``
        and ``admit`` (tests/policies/test_fast_paths.py checks it). None: the pool composes them."""
        return None

    @abstractmethod
    def on_hit(self, key: int, pos: int) -> None:
        """A demand access found ``key`` resident."""

    @abstractmethod
    def admit(self, key: int, pos: int, prefetch: bool, score: float | None = None) -> None:
        """Insert ``key`` (the pool has made room). ``prefetch`` tells demand and prefetch admissions
        apart; ``score`` is the predictor's confidence for a prefetch, when it gave one."""

    def incoming(self, key: int, prefetch: bool) -> None:  # noqa: B027  (optional hook, no-op by default)
        """Hint: the pool is about to ask ``victim`` to make room for ``key``.

        Policies whose choice depends on the arriving key (ARC's ghost hits, Least-Stale's current
        layer) read it here; ``victim`` itself stays a pure peek. The default ignores it.
        """

    @abstractmethod
    def victim(self, pinned: Container[int]) -> int | None:
        """The key this policy would evict now, skipping ``pinned``; None if every resident is pinned."""

    @abstractmethod
    def evict(self, key: int) -> None:
        """Remove ``key`` (normally the one ``victim`` returned)."""
