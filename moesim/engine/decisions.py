"""Drive the policy core with no clock at all: the decision sequence alone.

Used for the on-demand baseline of ``ratio_bytes_vs_on_demand``, for golden hit counts, and as
the reference the executors' decision logs must equal. It runs the executors' own call sequence
(``moesim.engine.protocol.layer_steps``) with no hooks.
"""

from __future__ import annotations

from collections.abc import Iterable

from moesim.engine.protocol import StepPhases, layer_steps
from moesim.policies.core import PolicyCore
from moesim.traces.replay import Group

_NO_CLOCK = StepPhases()


def run_decisions(core: PolicyCore, groups: Iterable[Group]) -> PolicyCore:
    for group in groups:
        for _ in layer_steps(core, group, _NO_CLOCK):
            pass
    core.finish()
    return core
