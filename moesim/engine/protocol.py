"""The executor protocol, and the one order in which an executor calls the policy core.

Every executor (the SimPy simulator, the live PyTorch executor, and the clock-less decision replay)
drives the core through ``layer_steps``, so they make the same decisions by construction; what they
add between the calls (a virtual clock, real kernels, nothing) is theirs. Per group:

1. ``core.start_group(group)``, then ``phases.group_started(group)`` (flushed prefetches, the first
   predictions' evictions and loads: ``core.out``).
2. Per layer-step ``s``:
   ``phases.begin_step(s)`` (the step's shape, anything before attention) ->
   [``core.pre_attention(s)`` -> ``phases.prefetch_early(s)``, only when the predictor fires before
   attention] -> ``phases.attend(s)`` (attention and the gate: when the routing is known) ->
   ``core.gate(s)`` -> ``phases.gated(s)`` (hits, late hits, misses, evictions, CPU experts) ->
   ``core.after_gate(s)`` -> ``phases.compute(s)`` (the planned copies, then expert compute) ->
   ``core.end_step(s)`` -> the iterator yields ``s``: the executor closes the step (its clock may
   advance there; a token ends after its last layer).
3. When the steps run out, ``phases.more_steps()`` may append more (continuous batching): ``None``
   ends the group, ``0.0`` continues, a positive delay makes the iterator yield ``WAIT`` first (the
   executor lets that much time pass) and ask again.
4. ``core.end_group()``. After the last group the executor calls ``core.finish()`` (the undemanded
   prefetches still resident are wasted).

Which of ``core.out``'s lists each core call fills is documented in ``moesim.policies.outputs``.
A hook left ``None`` on a ``StepPhases`` subclass is not called (the decision replay sets none).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from moesim.metrics.stats import RunStats
from moesim.policies.core import PolicyCore
from moesim.traces.replay import Group

WAIT = -1  # yielded by layer_steps when the executor must let time pass before more steps exist


class Executor(Protocol):
    """What the experiment pipeline needs of an executor."""

    name: str  # "sim" | "live": recorded in the summary

    def run(self, core: PolicyCore, groups: Iterable[Group]) -> RunStats:
        """Replay ``groups`` through ``core`` (via ``layer_steps``), timing what the core decides."""
        ...


class StepPhases:
    """What an executor does between the core's calls; see the module docstring for the order.

    Subclasses define the hooks they need as methods; the others stay ``None`` and cost nothing."""

    group_started: Callable[[Group], None] | None = None
    begin_step: Callable[[int], None] | None = None
    prefetch_early: Callable[[int], None] | None = None
    attend: Callable[[int], None] | None = None
    gated: Callable[[int], None] | None = None
    compute: Callable[[int], None] | None = None
    more_steps: Callable[[], float | None] | None = None


def layer_steps(core: PolicyCore, group: Group, phases: StepPhases) -> Iterator[int]:
    """Drive one group through the core in the protocol's order, yielding each finished step."""
    core.start_group(group)
    if phases.group_started is not None:
        phases.group_started(group)
    fires = core.pre_attention_fires
    begin, early, attend = phases.begin_step, phases.prefetch_early, phases.attend
    gated, compute, more = phases.gated, phases.compute, phases.more_steps
    pre_attention, gate, after_gate, end_step = core.pre_attention, core.gate, core.after_gate, core.end_step
    steps = group.steps  # may grow in place while the group runs (continuous batching)
    s = 0
    while True:
        if s == len(steps):
            wait = more() if more is not None else None
            if wait is None:
                break
            if wait > 0:
                yield WAIT
                continue
        if begin is not None:
            begin(s)
        if fires:
            pre_attention(s)
            if early is not None:
                early(s)
        if attend is not None:
            attend(s)
        gate(s)
        if gated is not None:
            gated(s)
        after_gate(s)
        if compute is not None:
            compute(s)
        end_step(s)
        yield s
        s += 1
    core.end_group()
