"""Timing of one op: warm-up, then timed calls, summarised as median and p10/p90.

CPU: ``perf_counter_ns`` around each call (the ops here take tens of microseconds or more, far
above its resolution); host and device time are the same thing.

CUDA: two times, because a launch-bound step costs the host's issue time, a bandwidth-bound one the
GPU's. An event pair around one call on an idle stream measures neither (the events also catch the
host's launch gaps), so:

- host (issue) time: ``perf_counter_ns`` around each call on a drained queue, no sync inside;
- GPU time: the calls are queued back to back behind a ``torch.cuda._sleep`` with an event between
  consecutive calls, so the GPU runs them with no host gap and each event interval is one call's
  device time. The queue counts as busy when the first event has not completed by the time the
  last call is enqueued; if it has, the sleep is lengthened and the pass retried.

Each call gets its call index so the caller can rotate buffers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from moesim.engine.live.device import LiveDevice

# torch.cuda._sleep spins for a number of GPU clock cycles; 2e6 per ms is a GPU at 2 GHz, so a
# slower clock only sleeps longer (harmless) and a faster one is caught by the busy check.
SLEEP_CYCLES_PER_MS = 2_000_000
BUSY_TRIES = 3


@dataclass(frozen=True)
class Sample:
    """Summary of one measured point, in milliseconds.

    On CUDA ``median``/``p10``/``p90`` are GPU time, ``host`` the issue time and ``busy`` whether the
    GPU pass ran with its queue full (False: the GPU times may include host gaps)."""

    median: float
    p10: float
    p90: float
    n: int
    host: Sample | None = None
    busy: bool | None = None

    @classmethod
    def of(cls, samples_ms: list[float] | np.ndarray) -> Sample:
        a = np.asarray(samples_ms, dtype=np.float64)
        if len(a) == 0:
            raise ValueError("no samples")
        p10, p50, p90 = np.percentile(a, [10, 50, 90])
        return cls(float(p50), float(p10), float(p90), int(len(a)))


def time_calls(
    dev: LiveDevice,
    fn: Callable[[int], object],
    repeats: int,
    warmup: int,
    cuda: Any = None,
    queued: bool = True,
) -> Sample:
    """``queued=False`` (CUDA): calls that block the host anyway (a pageable copy) are timed whole on
    the host, each followed by a stream sync inside the timed region."""
    for i in range(warmup):
        fn(i)
    calls = range(warmup, warmup + repeats)
    if not dev.is_cuda:
        return Sample.of(_host_times(fn, calls, None))
    cuda = cuda or torch.cuda
    if not queued:
        stream = cuda.current_stream(dev.torch_device)
        stream.synchronize()

        def whole(i: int) -> None:
            fn(i)
            stream.synchronize()

        return Sample.of(_host_times(whole, calls, None))
    return _time_cuda(dev, fn, repeats, warmup, cuda)


def _host_times(fn: Callable[[int], object], calls: range, drain: Callable[[], object] | None) -> list[float]:
    clock = time.perf_counter_ns
    out = []
    for i in calls:
        if drain is not None:
            drain()  # outside the timed region: each launch meets an empty queue
        t = clock()
        fn(i)
        out.append((clock() - t) * 1e-6)
    return out


def _time_cuda(dev: LiveDevice, fn: Callable[[int], object], repeats: int, warmup: int, cuda: Any) -> Sample:
    stream = cuda.current_stream(dev.torch_device)
    host = _host_times(fn, range(warmup, warmup + repeats), stream.synchronize)
    stream.synchronize()
    # Sleep long enough to cover enqueueing every call, with margin; each retry sleeps exactly 4x
    # longer (whole cycles, so the factor is not lost to rounding).
    cycles = int((2.0 * sum(host) + 1.0) * SLEEP_CYCLES_PER_MS)
    first = warmup + repeats
    for _ in range(BUSY_TRIES):
        gpu, busy = gpu_pass(stream, fn, range(first, first + repeats), cycles / SLEEP_CYCLES_PER_MS, cuda)
        if busy:
            break
        cycles *= 4
    return replace(Sample.of(gpu), host=Sample.of(host), busy=busy)


def gpu_pass(
    stream: Any, fn: Callable[[int], object], calls: range, lead_ms: float, cuda: Any
) -> tuple[list[float], bool]:
    """Device time of each call, queued back to back behind a sleep; and whether the queue stayed
    busy (the first event still pending once every call was enqueued)."""
    events = [cuda.Event(enable_timing=True) for _ in range(len(calls) + 1)]
    with cuda.stream(stream):
        cuda._sleep(round(lead_ms * SLEEP_CYCLES_PER_MS))
        events[0].record(stream)
        for j, i in enumerate(calls):
            fn(i)
            events[j + 1].record(stream)
    busy = not events[0].query()
    events[-1].synchronize()
    return [float(a.elapsed_time(b)) for a, b in zip(events, events[1:])], busy
