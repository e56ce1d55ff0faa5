"""Mutation check of the differential tests: a one-off error injected into the fast executor's
timing pass must be caught by ``fastdiff.differences``, the very comparison the differential tests
(test_fast_differential.py) rely on. A comparison that let these through would prove nothing.

The timing pass is a numba kernel calling numba helpers (``moesim.engine.fast.timing``). To change
one step inside it, the kernel and its helpers run as plain Python (numba keeps each compiled
function's source as ``py_func``; the Python version looks its helpers up in the module at call
time, so a helper replaced there is the one called). ``test_interpreted_timing_is_faithful`` shows
that running it so changes no number. Each mutation then changes one thing, once:

- ``lane``: one copy starts on the wrong lane (the one free last instead of first);
- ``end-ulp``: one copy ends one ulp (unit in the last place of its float) later;
- ``cancel-as-wasted``: one evicted prefetch whose copy had not started counts as started;
- ``attention-step-off``: one decode step's attention is priced as the step before's;
- ``duration-ulp``: every copy takes one ulp longer (a constant of the kernel's input).

Each is applied at several positions (the n-th call that qualifies). A one-ulp error can vanish in
the rounding of what is computed after it (an equivalent mutant: no output can differ), so every
position must be either detected by the comparison or shown equivalent, the kernel's raw outputs
bit-identical to the unmutated run's; and at least one position must be detected.

This file knows the kernel's helper names and arguments; if the timing pass is restructured, the
mutations here must follow (the tests fail loudly, they do not skip).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from tests.engine.fastdiff import FAST, differences, executor_of, needs_fast, run, write_inputs
from tests.helpers import random_trace

pytestmark = needs_fast

# A saturated link (late hits, cancellations, demand copies queueing) with 2 copy lanes; batch 1
# takes the timing pass's short path, batch 2 its general path.
SCENARIOS = {
    "batch1": {"batch": 1, "cache.capacity": 4},
    "batch2": {"batch": 2, "cache.capacity": 6},
}
COMMON = {
    "predictor.name": "oracle",
    "predictor.horizon": 2,
    "predictor.overprovision": 2,
    "hardware.h2d_gbps": 0.2,
    "hardware.copy_engines": 2,
}
POSITIONS = 5  # positions tried per mutation and scenario, spread over the qualifying calls


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, Any]:
    trace = random_trace(np.random.default_rng(21), 3, [8, 6, 7], 3, 8, 2)
    return write_inputs(tmp_path_factory.mktemp("mutation"), trace)


def _modules():
    import moesim.engine.fast.executor as fx
    import moesim.engine.fast.timing as ft

    return fx, ft


def _arg(fn: Callable, name: str) -> int:
    params = list(inspect.signature(fn).parameters)
    assert name in params, f"{fn.__name__} has no argument {name!r}: update this mutation"
    return params.index(name)


def interpret(mp: pytest.MonkeyPatch) -> Any:
    """Every numba function of the timing module replaced by its Python source, and the executor
    calling the Python kernel. Returns the timing module."""
    fx, ft = _modules()
    jitted = [name for name, obj in vars(ft).items() if hasattr(obj, "py_func")]
    assert "timing" in jitted and fx.timing is ft.timing, "the executor no longer calls timing.timing"
    for name in jitted:
        mp.setattr(ft, name, getattr(ft, name).py_func)
    mp.setattr(fx, "timing", ft.timing)
    return ft


def capture(mp: pytest.MonkeyPatch) -> list[bytes]:
    """The raw outputs of each timing-pass call (every array and number, as bytes): what it returns
    but the copies it carries to a next chunk (these tests run one chunk: a copy's times past the
    run's end are no output), and the run totals it keeps in place (clock, counters, layer columns)."""
    fx, ft = _modules()
    kernel, seen = fx.timing, []
    source = getattr(ft.timing, "py_func", ft.timing)  # the kernel, or its Python source (interpret)
    totals = [_arg(source, name) for name in ("FS", "IS", "LS", "l_stall")]

    def flat(x: Any) -> list[bytes]:
        if isinstance(x, tuple):
            return [b for y in x for b in flat(y)]
        a = np.asarray(x)
        return [str(a.dtype).encode(), str(a.shape).encode(), a.tobytes()]

    def wrapper(*args):
        out = kernel(*args)
        seen.append(b"|".join(flat(out[:-2]) + flat(tuple(args[i] for i in totals))))
        return out

    mp.setattr(fx, "timing", wrapper)
    return seen


# -- the mutations ---------------------------------------------------------------------------------
@dataclass
class Mutation:
    """``install(mp, n)`` applies the error at the n-th qualifying call (n >= 1; 0 counts only) and
    returns a counter list whose [0] is the number of qualifying calls seen."""

    install: Callable[[pytest.MonkeyPatch, int], list[int]]
    interpreted: bool = True


def _helper(name: str, qualifies: Callable[..., bool], mutate: Callable[..., Any]) -> Mutation:
    """A one-off error in timing-module helper ``name``: ``mutate(original, *args)`` runs instead
    of the n-th call for which ``qualifies(ft, original, *args)`` holds."""

    def install(mp: pytest.MonkeyPatch, n: int) -> list[int]:
        ft = interpret(mp)
        original, count = getattr(ft, name), [0]

        def wrapper(*args):
            if qualifies(ft, original, *args):
                count[0] += 1
                if count[0] == n:
                    return mutate(ft, original, *args)
            return original(*args)

        mp.setattr(ft, name, wrapper)
        return count

    return Mutation(install)


def _wrong_lane(ft, original, free):
    return int(np.argmax(free))  # the lane free last


def _end_ulp(ft, original, *args):
    i_tr, i_free, i_times = (_arg(original, n) for n in ("tr", "free", "T"))
    original(*args)
    tr, free, times = args[i_tr], args[i_free], args[i_times]
    end = times[ft.END, tr]
    lane = int(np.flatnonzero(free == end)[0])
    times[ft.END, tr] = np.nextafter(end, np.inf)
    free[lane] = times[ft.END, tr]  # the lane is busy until the copy ends


def _evicted_copy(original, args) -> tuple[Any, int]:
    """(the transfer states, the evicted key's transfer) of an ``_evict`` call."""
    tr = args[_arg(original, "inflight")][args[_arg(original, "key")]]
    return args[_arg(original, "S")], int(tr)


def _pending(ft, original, *args) -> bool:
    states, tr = _evicted_copy(original, args)
    return tr >= 0 and states[tr] == ft.PENDING


def _as_started(ft, original, *args):
    states, tr = _evicted_copy(original, args)
    states[tr] = ft.STARTED  # wasted instead of cancelled
    return original(*args)


def _kernel_input(name: str, change: Callable[[Any, int], Any], positions: Callable[[Any], int]) -> Mutation:
    """The compiled kernel called with input ``name`` changed at position n (``change(value, n)``)."""

    def install(mp: pytest.MonkeyPatch, n: int) -> list[int]:
        fx, ft = _modules()
        kernel, i, count = fx.timing, _arg(ft.timing.py_func, name), [0]

        def wrapper(*args):
            args = list(args)
            count[0] = positions(args[i])
            if n:
                args[i] = change(args[i], n)
            return kernel(*args)

        mp.setattr(fx, "timing", wrapper)
        return count

    return Mutation(install, interpreted=False)


def _step_changes(c: np.ndarray) -> np.ndarray:
    return np.flatnonzero(c[1:] != c[:-1]) + 1  # steps priced differently from the one before


def _attention_step_off(c: np.ndarray, n: int) -> np.ndarray:
    c = np.array(c, copy=True)
    t = _step_changes(c)[n - 1]
    c[t] = c[t - 1]
    return c


MUTATIONS = {
    "lane": _helper("_lane", lambda ft, o, free: len(free) > 1 and free.max() > free.min(), _wrong_lane),
    "end-ulp": _helper("_schedule", lambda ft, o, *a: True, _end_ulp),
    "cancel-as-wasted": _helper("_evict", _pending, _as_started),
    "attention-step-off": _kernel_input("c_attn", _attention_step_off, lambda c: len(_step_changes(c))),
    "duration-ulp": _kernel_input("dur", lambda dur, n: float(np.nextafter(dur, np.inf)), lambda dur: 1),
}


def _fast_run(base: dict[str, Any], scenario: str, mutation: Mutation | None, n: int):
    """The fast run with the mutation at position n (None: unmutated, interpreted), its raw kernel
    outputs and the number of qualifying calls."""
    with pytest.MonkeyPatch.context() as mp:
        if mutation is None:
            interpret(mp)
            count = [0]
        else:
            count = mutation.install(mp, n)
        raw = capture(mp)
        result = run({**base, **COMMON, **SCENARIOS[scenario]}, "fast")
    assert executor_of(result) == FAST and len(raw) == 1
    return result, raw[0], count[0]


@pytest.fixture(scope="module")
def references(base) -> dict[str, tuple[Any, Any, bytes]]:
    """Per scenario: the simulator's run, the unmutated (interpreted) fast run, its raw outputs."""
    out = {}
    for scenario in SCENARIOS:
        sim = run({**base, **COMMON, **SCENARIOS[scenario]}, "sim")
        fast, raw, _ = _fast_run(base, scenario, None, 0)
        out[scenario] = (sim, fast, raw)
    return out


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_interpreted_timing_is_faithful(references, scenario):
    """The control: the timing pass run as Python, unmutated, equals the simulator (so what the
    mutations change is the mutation's doing), on a case with late hits and cancellations."""
    sim, fast, _ = references[scenario]
    assert differences(sim, fast) == []
    pf = sim.summary["prefetch"]
    assert pf["late"] > 0 and pf["cancelled"] > 0, pf


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_one_off_timing_error_is_detected(base, references, name, scenario):
    sim, _, raw0 = references[scenario]
    mutation = MUTATIONS[name]
    _, _, calls = _fast_run(base, scenario, mutation, 0)  # count the qualifying calls
    assert calls > 0, f"{name}: no call qualifies on {scenario}"
    positions = sorted({1 + (calls - 1) * i // max(1, POSITIONS - 1) for i in range(POSITIONS)})
    detected, equivalent = [], []
    for n in positions:
        fast, raw, _ = _fast_run(base, scenario, mutation, n)
        if differences(sim, fast):
            detected.append(n)
        else:  # not detected: allowed only if no output could differ
            assert raw == raw0, f"{name} at call {n} of {calls} changed the kernel's output unnoticed"
            equivalent.append(n)
    assert detected, (
        f"{name} on {scenario}: detected at calls {detected}, equivalent (absorbed) at {equivalent}"
    )


def test_the_compiled_kernel_is_back_after_the_mutations(base, references):
    fx, ft = _modules()
    assert fx.timing is ft.timing and hasattr(ft.timing, "py_func")
    sim, _, _ = references["batch2"]
    assert differences(sim, run({**base, **COMMON, **SCENARIOS["batch2"]}, "fast")) == []
