"""The decision pass of one chunk beside the timing pass of the chunk before (``overlap``): every
chunk decided in order and timed in order, the timing on a second thread, the results those of the
two passes one after the other."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from moesim.engine.fast import chunks, overlap
from tests.engine.fastdiff import differences, executor_of, needs_fast, run, write_inputs
from tests.helpers import random_trace


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(overlap, "ENABLED", True)
    monkeypatch.setattr(overlap, "usable_cores", lambda: 2)


def _record(n: int, fail_at: int | None = None) -> tuple[list[tuple[str, int, str]], Any, Any]:
    log: list[tuple[str, int, str]] = []

    def decide(i: int) -> int:
        log.append(("decide", i, threading.current_thread().name))
        return i * 10

    def timed(i: int, d: int) -> None:
        time.sleep(0.002)  # the next chunk's decision gets ahead, if it may
        assert d == i * 10
        if i == fail_at:
            raise RuntimeError(f"chunk {i}")
        log.append(("time", i, threading.current_thread().name))

    return log, decide, timed


def test_chunks_are_decided_and_timed_in_order_the_timing_on_another_thread(two_cores):
    log, decide, timed = _record(6)
    overlap.overlapped(range(6), decide, timed)
    main = threading.current_thread().name
    assert [i for k, i, _ in log if k == "decide"] == list(range(6))
    assert [i for k, i, _ in log if k == "time"] == list(range(6))
    assert {t for k, _, t in log if k == "decide"} == {main}
    assert all(t != main for k, _, t in log if k == "time")
    at = {x[:2]: n for n, x in enumerate(log)}
    for i in range(4):  # at most one chunk ahead: chunk i+2 is decided after chunk i is timed
        assert at["time", i] < at["decide", i + 2]


def test_an_error_in_the_timing_is_raised_and_stops_the_run(two_cores):
    log, decide, timed = _record(6, fail_at=2)
    with pytest.raises(RuntimeError, match="chunk 2"):
        overlap.overlapped(range(6), decide, timed)
    assert max(i for k, i, _ in log if k == "decide") <= 3


@pytest.mark.parametrize("setting", ["off", "one core"])
def test_off_or_on_one_core_everything_runs_on_the_calling_thread(monkeypatch, setting):
    monkeypatch.setattr(overlap, "ENABLED", setting != "off")
    monkeypatch.setattr(overlap, "usable_cores", lambda: 1 if setting == "one core" else 2)
    log, decide, timed = _record(4)
    overlap.overlapped(range(4), decide, timed)
    assert [x[:2] for x in log] == [(k, i) for i in range(4) for k in ("decide", "time")]
    assert {t for _, _, t in log} == {threading.current_thread().name}


@needs_fast
@pytest.mark.parametrize(
    "over",
    [
        {"predictor.name": "oracle", "predictor.horizon": 2, "cache.capacity": 6, "hardware.h2d_gbps": 0.2},
        {"predictor.name": "popularity", "cache.policy": "belady", "cache.capacity": 5, "batch": 2},
    ],
)
def test_a_run_in_many_chunks_is_the_same_overlapped_or_not(tmp_path, monkeypatch, over):
    import moesim.engine.fast.executor as fx

    trace = random_trace(np.random.default_rng(5), 8, [9, 5, 12, 7, 3, 8, 6, 10], 3, 8, 2)
    base = write_inputs(tmp_path, trace)
    monkeypatch.setattr(chunks, "CHUNK_ACCESSES", 40)
    threads: list[str] = []
    kernel = fx.timing

    def spy(*args):
        threads.append(threading.current_thread().name)
        return kernel(*args)

    monkeypatch.setattr(fx, "timing", spy)
    results = {}
    for on in (False, True):
        monkeypatch.setattr(overlap, "ENABLED", on)
        monkeypatch.setattr(overlap, "usable_cores", lambda: 2)
        threads.clear()
        results[on] = run({**base, **over}, "fast")
        assert executor_of(results[on]) == "fast"
        assert len(threads) >= 4
        main = threading.current_thread().name
        assert all((t != main) == on for t in threads), threads
    assert not differences(results[False], results[True])
