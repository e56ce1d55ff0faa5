"""The executor protocol: the one call sequence (layer_steps) and the phase rules of core.out."""

from __future__ import annotations

import numpy as np
import pytest

from moesim.engine.decisions import run_decisions
from moesim.engine.protocol import WAIT, StepPhases, layer_steps
from moesim.experiments.run import build_core
from moesim.hardware import estimate_profile
from moesim.traces.replay import Group
from tests.helpers import make_model, prepared, random_trace

L, E, K = 3, 12, 2
CORE_CALLS = ("start_group", "pre_attention", "gate", "after_gate", "end_step", "end_group")


@pytest.fixture(scope="module")
def setting():
    model = make_model(L, E, K)
    trace = random_trace(np.random.default_rng(3), 3, [6, 4, 5], L, E, K)
    return trace, model, estimate_profile(model, "h100-pcie")


class _Recorder(StepPhases):
    def __init__(self, calls: list):
        self.calls = calls

    def group_started(self, group):
        self.calls.append(("group_started", group.index))

    def begin_step(self, s):
        self.calls.append(("begin_step", s))

    def prefetch_early(self, s):
        self.calls.append(("prefetch_early", s))

    def attend(self, s):
        self.calls.append(("attend", s))

    def gated(self, s):
        self.calls.append(("gated", s))

    def compute(self, s):
        self.calls.append(("compute", s))


def _recording_core(p, calls: list, predictor: str):
    core = build_core(p, predictor_name=predictor)
    for name in CORE_CALLS:
        orig = getattr(core, name)

        def wrapped(*args, _orig=orig, _name=name):
            calls.append((_name, args[0].index if _name == "start_group" else (args[0] if args else None)))
            return _orig(*args)

        setattr(core, name, wrapped)
    return core


def _expected(group: Group, fires: bool) -> list:
    seq = [("start_group", group.index), ("group_started", group.index)]
    for s in range(len(group.steps)):
        seq.append(("begin_step", s))
        if fires:
            seq += [("pre_attention", s), ("prefetch_early", s)]
        seq += [("attend", s), ("gate", s), ("gated", s), ("after_gate", s), ("compute", s)]
        seq += [("end_step", s), ("yield", s)]
    return seq + [("end_group", None)]


@pytest.mark.parametrize("fires", [False, True])
def test_layer_steps_calls_the_core_and_the_phases_in_the_documented_order(setting, fires):
    trace, model, profile = setting
    p = prepared(trace, model, profile, predictor="oracle", horizon=2, capacity=6)
    calls: list = []
    core = _recording_core(p, calls, "oracle")
    core.pre_attention_fires = fires
    expected: list = []
    for group in p.groups():
        for s in layer_steps(core, group, _Recorder(calls)):
            calls.append(("yield", s))
        expected += _expected(group, fires)
    assert calls == expected


def test_more_steps_waits_then_continues_then_ends(setting):
    """Continuous batching's contract: a positive delay yields WAIT and asks again; 0 continues."""
    trace, model, profile = setting
    p = prepared(trace, model, profile, capacity=6)
    core = build_core(p)
    full = next(iter(p.groups()))
    group = Group(0, (), [], None, [], L, dynamic=True)
    answers = [2.5, 0.0, 1.0, 0.0, None]  # wait, add a block, wait, add a block, done

    class Growing(StepPhases):
        def more_steps(self):
            wait = answers.pop(0)
            if wait == 0.0:
                n = len(group.steps)
                group.steps.extend(full.steps[n : n + L])
                group.active.append(1)
            return wait

    seen = list(layer_steps(core, group, Growing()))
    assert seen == [WAIT, 0, 1, 2, WAIT, 3, 4, 5]
    assert answers == [] and core.accesses == 2 * L * K


def test_gate_outputs_stay_readable_until_the_next_step(setting):
    """core.out's phase rules: after_gate replaces only the plan lists (loads, evictions)."""
    trace, model, profile = setting
    p = prepared(trace, model, profile, predictor="oracle", horizon=1, capacity=4)
    core = build_core(p)
    checked = 0

    class Check(StepPhases):
        def gated(self, s):
            out = core.out
            self.gate_view = (list(out.hit_keys), list(out.hit_was_prefetch), list(out.miss_keys))
            assert not out.loads, "gate never plans prefetches"
            assert sorted(out.hit_keys + out.miss_keys) == sorted(core.group.steps[s])

        def compute(self, s):
            nonlocal checked
            out = core.out
            assert (list(out.hit_keys), list(out.hit_was_prefetch), list(out.miss_keys)) == self.gate_view
            assert set(out.evicted_prefetch) <= set(out.evicted)
            checked += bool(out.loads)

    for group in p.groups():
        for _ in layer_steps(core, group, Check()):
            pass
    assert checked > 0  # the oracle did plan prefetches after some gates


def test_decision_replay_equals_the_executors_log(setting):
    """run_decisions (no hooks) and the simulator (every hook) make the same decisions."""
    from moesim.experiments.run import run_prepared

    trace, model, profile = setting
    p = prepared(trace, model, profile, predictor="oracle", horizon=2, capacity=5)
    replay = run_decisions(build_core(p, record=True), p.groups())
    sim = run_prepared(p, record=True)
    assert replay.log and [tuple(x) for x in sim.decisions] == replay.log
