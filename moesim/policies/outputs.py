"""What the policy core's last call decided: one object, reused from call to call.

The core never returns fresh objects on its hot path; it fills the lists of one ``StepOutputs``
(``PolicyCore.out``), clearing them as each call starts. Which lists a call fills, and how long they
stay valid, is fixed by the call sequence (``moesim.engine.protocol``):

=================  ==========================================================================
call               lists it fills (every other list is empty after it, except where noted)
=================  ==========================================================================
``start_group``    ``loads`` (+ ``load_from_ssd``), ``evicted``, ``evicted_prefetch`` of the
                   group's first predictions; ``flushed`` (prefetches dropped with the pool by
                   a per-sequence reset; valid until the next ``start_group``)
``pre_attention``  ``loads`` (+ ``load_from_ssd``), ``evicted``, ``evicted_prefetch``
``gate``           ``hit_keys`` / ``hit_was_prefetch`` (parallel), ``miss_keys`` (+
                   ``miss_from_ssd``), ``cpu_keys`` (+ ``cpu_from_ssd``), ``substitutes``, and the
                   ``evicted`` / ``evicted_prefetch`` of the demand inserts and stale drops
``after_gate``     ``loads`` (+ ``load_from_ssd``), ``evicted``, ``evicted_prefetch``; the gate's
                   lists (hits, misses, CPU, substitutes) are left as the gate set them, so an
                   executor may read them until the next ``pre_attention``, ``gate`` or group
=================  ==========================================================================

``evicted_prefetch`` is the subset of ``evicted`` that were prefetched and never demanded (an
executor cancels or wastes their copies). The ``*_from_ssd`` lists are parallel to the list they
name and filled only with a DRAM tier; ``cpu_*`` and ``substitutes`` only under a miss handler other
than plain fetch. When ``PolicyCore.simple`` is true (fetch every miss, no DRAM tier) these five lists
are never touched, so an executor may skip them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True, eq=False)
class StepOutputs:
    hit_keys: list[int] = field(default_factory=list)  # demanded and resident (in access order)
    hit_was_prefetch: list[bool] = field(default_factory=list)  # per hit: first demand of a prefetch
    miss_keys: list[int] = field(default_factory=list)  # demanded, not resident: fetched to the GPU
    miss_from_ssd: list[bool] = field(default_factory=list)  # per miss: read from SSD first
    cpu_keys: list[int] = field(default_factory=list)  # missed experts computed on the CPU
    cpu_from_ssd: list[bool] = field(default_factory=list)
    substitutes: list[int] = field(default_factory=list)  # resident experts computed in place of misses
    loads: list[int] = field(default_factory=list)  # prefetch transfers to issue
    load_from_ssd: list[bool] = field(default_factory=list)
    evicted: list[int] = field(default_factory=list)
    evicted_prefetch: list[int] = field(default_factory=list)  # of ``evicted``: undemanded prefetches
    flushed: list[int] = field(default_factory=list)  # set by start_group (see the module docstring)

    def clear_plan(self) -> None:
        """Before a planning call (``after_gate``): the gate's results stay readable."""
        self.loads.clear()
        self.evicted.clear()
        self.evicted_prefetch.clear()

    def clear(self, simple: bool) -> None:
        """Before ``start_group``, ``pre_attention`` and ``gate``."""
        self.hit_keys.clear()
        self.hit_was_prefetch.clear()
        self.miss_keys.clear()
        self.loads.clear()
        self.evicted.clear()
        self.evicted_prefetch.clear()
        if not simple:
            self.miss_from_ssd.clear()
            self.load_from_ssd.clear()
            self.cpu_keys.clear()
            self.cpu_from_ssd.clear()
            self.substitutes.clear()
