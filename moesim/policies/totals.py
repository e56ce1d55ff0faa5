"""Run totals summed from per-layer counters: one definition for every holder of those counters
(the policy core, and the fast executor's counters that stand in for it)."""

from __future__ import annotations


class LayerTotals:
    layer_accesses: list[int]
    layer_present: list[int]
    layer_prefetch_issued: list[int]
    layer_prefetch_useful: list[int]
    layer_evictions: list[int]

    @property
    def accesses(self) -> int:
        return sum(self.layer_accesses)

    @property
    def present(self) -> int:
        return sum(self.layer_present)

    @property
    def misses(self) -> int:
        return self.accesses - self.present

    @property
    def prefetch_issued(self) -> int:
        return sum(self.layer_prefetch_issued)

    @property
    def prefetch_useful(self) -> int:
        return sum(self.layer_prefetch_useful)

    @property
    def evictions(self) -> int:
        return sum(self.layer_evictions)
