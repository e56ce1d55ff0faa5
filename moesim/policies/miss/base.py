"""Miss handling: what to do when the gate picks an expert that is not on the GPU.

A separate registered family (docs/design.md): fetch it (on demand), run it on the CPU (Fiddler,
KTransformers), or a lossy shortcut (skip it, or substitute a resident expert), which is counted
and reported as a quality risk. Decisions use static costs only (profile service times and the
token count), never the executor's clock, so both executors decide alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

FETCH, CPU, SKIP, SUBSTITUTE = 0, 1, 2, 3
ACTION_NAMES = {FETCH: "fetch", CPU: "cpu", SKIP: "skip", SUBSTITUTE: "substitute"}


@dataclass(frozen=True)
class MissCosts:
    """Static service times (ms) a handler may weigh."""

    h2d_ms: float  # one expert host -> GPU
    cpu_ms: dict[int, float]  # tokens -> CPU expert FFN time, for token counts 1..max batch
    activation_ms: dict[int, float]  # tokens -> hidden states GPU -> CPU and back

    def cpu_total(self, tokens: int) -> float:
        return self.cpu_ms[tokens] + self.activation_ms[tokens]


class MissHandler:
    name: ClassVar[str]
    lossy: ClassVar[bool] = False
    needs_cpu: ClassVar[bool] = False  # needs the profile's cpu_expert_ffn table
    # Declared parameters, as for predictors and caches (the scenario's miss section has none yet).
    params: ClassVar[dict[str, Any]] = {}

    def __init__(self, costs: MissCosts | None):
        self.costs = costs

    def decide(self, key: int, tokens: int) -> int:
        raise NotImplementedError
