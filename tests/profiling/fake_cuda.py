"""A stand-in for ``torch.cuda`` with a modelled GPU queue, to test the CUDA timing logic on a CPU.

The fake stream runs work in order: ``_sleep(cycles)`` and each op (``FakeCuda.kernel(ms)``) add
their duration to the stream's queue; an event records the queue's completion time at that point.
``host_ahead`` says whether the host enqueued everything before the GPU reached the first event.
"""

from __future__ import annotations

from contextlib import contextmanager


class FakeStream:
    def __init__(self, cuda: FakeCuda):
        self.cuda = cuda
        self.t = 0.0  # device time at which everything queued so far completes

    def synchronize(self) -> None:
        self.cuda.syncs.append("stream")


class FakeEvent:
    def __init__(self, cuda: FakeCuda, enable_timing: bool = False):
        self.cuda = cuda
        self.t: float | None = None

    def record(self, stream: FakeStream) -> None:
        self.t = stream.t

    def query(self) -> bool:
        return self.cuda.gpu_caught_up()

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, other: FakeEvent) -> float:
        assert self.t is not None and other.t is not None
        return other.t - self.t


class FakeCuda:
    """``caught_up``: how many GPU passes find the GPU already past their first event (no busy queue)."""

    def __init__(self, caught_up: int = 0):
        self.stream_ = FakeStream(self)
        self.sleeps: list[int] = []
        self.syncs: list[str] = []
        self._caught_up = caught_up

    def gpu_caught_up(self) -> bool:
        if self._caught_up > 0:
            self._caught_up -= 1
            return True
        return False

    def current_stream(self, device=None) -> FakeStream:
        return self.stream_

    def Event(self, enable_timing: bool = False) -> FakeEvent:  # noqa: N802 - torch.cuda's name
        return FakeEvent(self, enable_timing)

    @contextmanager
    def stream(self, s: FakeStream):
        yield

    def _sleep(self, cycles: int) -> None:
        self.sleeps.append(cycles)
        self.stream_.t += cycles / 2e6

    def synchronize(self, device=None) -> None:
        raise AssertionError("a device-wide synchronize would also wait for other streams")

    def kernel(self, ms: float) -> None:
        self.stream_.t += ms
