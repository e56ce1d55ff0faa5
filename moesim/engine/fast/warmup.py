"""A tiny run through both compiled passes, with the argument types of a real run, so their
machine code is compiled (or loaded from numba's cache) before any real run needs it."""

from __future__ import annotations

from typing import Any

import numpy as np

from moesim.engine.fast import decide as _decide
from moesim.engine.fast import predictions as _predictions
from moesim.engine.fast import timing as _timing

# numba dispatchers, typed loosely (their call signature is the compiled function's)
decide: Any = _decide.decide
timing: Any = _timing.timing
_routing_plan: Any = _predictions._routing_plan
next_uses: Any = _decide.next_uses


def run_tiny() -> None:
    i64, i8 = np.int64, np.int8
    L, E = 2, 4
    step_ptr = np.array([0, 2, 4, 6, 8], i64)
    keys = np.array([0, 1, 4, 5, 2, 3, 6, 7], i64)
    step_layer = np.array([0, 1, 0, 1], i64)
    step_token = np.array([0, 0, 1, 1], i64)
    grp_step0 = np.array([0, 4], i64)
    grp_tok0 = np.array([0, 2], i64)
    ev_ptr = np.array([0, 2, 4, 4, 4, 4], i64)
    ev_keys = np.array([0, 1, 4, 6], i64)
    caps = np.array([4], i64)
    first = _decide.first_uses(keys, 0, L * E)
    nxt = next_uses(keys, 0, np.full(L * E, _decide.NEVER, i64))
    st = _decide.DecideState.new(L, E, 1, first)
    out = decide(
        step_ptr, keys, step_layer, step_token, grp_step0, grp_tok0, 0, ev_ptr, ev_keys, False, L, E, 0,
        False, caps, _decide.SCAN_MAX, 16, nxt, st.KS, st.K8, st.PS, st.SC, st.LC,
    )  # fmt: skip
    _routing_plan(step_ptr, keys, grp_step0, 0, 1, L, 8, np.zeros((1, 1), i64), np.zeros(1, i64))
    costs = [np.full(2, 0.01) for _ in range(5)]
    ts = _timing.TimingState.new(L, E, 1)
    timing(
        step_ptr, keys, out[0], out[1], np.ones(len(keys), i64), grp_step0, grp_tok0, np.zeros(1, i8),
        step_layer, step_token, out[2], out[3], out[4], out[5], out[6], out[7], out[8], out[9], *costs,
        False, False, False, L, E, 1, 0.5, 1000, 0.1, np.array([0.0, 0.1]), ts.FS, ts.IS, ts.free, ts.c, ts.inflight,
        ts.CT, ts.CS, ts.LS, ts.l_stall,
    )  # fmt: skip
