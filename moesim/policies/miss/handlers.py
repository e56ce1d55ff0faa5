from __future__ import annotations

from moesim.policies.miss.base import CPU, FETCH, SKIP, SUBSTITUTE, MissHandler
from moesim.policies.registries import MISS_HANDLERS


@MISS_HANDLERS.register
class Fetch(MissHandler):
    """Copy the expert to the GPU now; the demand copy goes ahead of queued prefetches."""

    name = "fetch"

    def decide(self, key: int, tokens: int) -> int:
        return FETCH


@MISS_HANDLERS.register
class CpuExecute(MissHandler):
    """Always compute a missing expert on the CPU from host memory (its activations cross PCIe)."""

    name = "cpu"
    needs_cpu = True

    def decide(self, key: int, tokens: int) -> int:
        return CPU


@MISS_HANDLERS.register
class CostBased(MissHandler):
    """Fiddler's choice: run on the CPU when that (plus moving activations) beats copying the weights."""

    name = "cost"
    needs_cpu = True

    def decide(self, key: int, tokens: int) -> int:
        c = self.costs
        assert c is not None  # needs_cpu: the pipeline always passes costs
        return CPU if c.cpu_total(tokens) < c.h2d_ms else FETCH


@MISS_HANDLERS.register
class Skip(MissHandler):
    """Drop the missing expert's contribution (lossy: counted as a quality risk)."""

    name = "skip"
    lossy = True

    def decide(self, key: int, tokens: int) -> int:
        return SKIP


@MISS_HANDLERS.register
class Substitute(MissHandler):
    """Use the layer's most recently used resident expert instead (lossy; falls back to skip)."""

    name = "substitute"
    lossy = True

    def decide(self, key: int, tokens: int) -> int:
        return SUBSTITUTE
