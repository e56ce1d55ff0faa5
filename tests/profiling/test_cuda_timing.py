"""The CUDA timing logic, on a CPU through a fake ``torch.cuda`` (tests/profiling/fake_cuda.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from moesim.profiling import timing
from moesim.profiling.profiler import Profiler, host_provenance, host_provenance_2d
from moesim.profiling.timing import Sample, time_calls
from tests.profiling.fake_cuda import FakeCuda

CUDA_DEV = SimpleNamespace(is_cuda=True, torch_device="cuda:0")


def _op(cuda: FakeCuda, ms_of):
    calls: list[int] = []

    def fn(i: int) -> None:
        calls.append(i)
        cuda.kernel(ms_of(i))

    return fn, calls


def test_gpu_time_is_each_calls_kernel_time_and_host_time_is_kept():
    cuda = FakeCuda()
    fn, calls = _op(cuda, lambda i: 0.5 + 0.01 * i)
    s = time_calls(CUDA_DEV, fn, repeats=5, warmup=2, cuda=cuda)
    # warm-up 0,1; host pass 2..6; GPU pass continues the rotation at 7..11
    assert calls == list(range(12))
    assert s.n == 5 and s.busy is True
    assert s.median == pytest.approx(0.5 + 0.01 * 9)
    assert s.p10 == pytest.approx(0.5 + 0.01 * 7.4)
    assert s.host is not None and s.host.n == 5 and s.host.median >= 0
    # the sleep ran before the GPU pass and is not in any interval
    assert len(cuda.sleeps) == 1 and cuda.sleeps[0] >= timing.SLEEP_CYCLES_PER_MS
    # each host-timed launch met a drained queue (one stream sync per call, then one before the GPU pass)
    assert cuda.syncs == ["stream"] * 6


def test_gpu_pass_retries_with_a_longer_sleep_until_the_queue_is_busy():
    cuda = FakeCuda(caught_up=2)
    fn, _ = _op(cuda, lambda i: 1.0)
    s = time_calls(CUDA_DEV, fn, repeats=3, warmup=0, cuda=cuda)
    assert s.busy is True and s.median == pytest.approx(1.0)
    assert len(cuda.sleeps) == 3
    assert cuda.sleeps[1] == 4 * cuda.sleeps[0] and cuda.sleeps[2] == 16 * cuda.sleeps[0]


def test_a_never_busy_queue_is_flagged():
    cuda = FakeCuda(caught_up=10)
    fn, _ = _op(cuda, lambda i: 1.0)
    s = time_calls(CUDA_DEV, fn, repeats=3, warmup=0, cuda=cuda)
    assert s.busy is False and len(cuda.sleeps) == timing.BUSY_TRIES
    assert host_provenance([s])["gpu_queue_busy"] is False


def test_unqueued_calls_are_timed_whole_on_the_host():
    cuda = FakeCuda()
    fn, calls = _op(cuda, lambda i: 1.0)
    s = time_calls(CUDA_DEV, fn, repeats=4, warmup=1, cuda=cuda, queued=False)
    assert calls == [0, 1, 2, 3, 4] and s.n == 4 and s.host is None and not cuda.sleeps
    assert cuda.syncs == ["stream"] * 5  # one before, one inside each timed call


def test_cpu_timing_is_unchanged_and_carries_no_host_fields():
    cpu = SimpleNamespace(is_cuda=False)
    seen: list[int] = []
    s = time_calls(cpu, seen.append, repeats=4, warmup=2)
    assert seen == [0, 1, 2, 3, 4, 5] and s.n == 4 and s.host is None
    assert host_provenance([s]) == {} and host_provenance_2d([[s]]) == {}


def test_host_provenance_lists_host_times_beside_gpu_times():
    a = Sample(1.0, 0.9, 1.1, 5, host=Sample(0.2, 0.1, 0.3, 5), busy=True)
    b = Sample(2.0, 1.9, 2.1, 5, host=Sample(0.4, 0.3, 0.5, 5), busy=True)
    p = host_provenance([a, b])
    assert p["host_median_ms"] == [0.2, 0.4] and p["host_p90_ms"] == [0.3, 0.5]
    assert p["gpu_queue_busy"] is True
    p2 = host_provenance_2d([[a, b], [b, a]])
    assert p2["host_median_ms"] == [[0.2, 0.4], [0.4, 0.2]]


def test_contention_times_compute_on_its_own_stream_not_device_wide(monkeypatch):
    """A device-wide synchronize would wait for the copy stream too (FakeCuda raises on it)."""
    cuda = FakeCuda()
    for name in ("current_stream", "Event", "stream", "_sleep", "synchronize"):
        monkeypatch.setattr(torch.cuda, name, getattr(cuda, name))
    fake = SimpleNamespace(dev=CUDA_DEV)
    fn, calls = _op(cuda, lambda i: 0.25 * (1 + i % 2))
    out = Profiler._ffn_chunk(fake, fn, range(4, 8), lambda: 0.0)
    assert calls == [4, 5, 6, 7]
    assert out == pytest.approx([0.25, 0.5, 0.25, 0.5])
    assert len(cuda.sleeps) == 1


def test_host_fields_round_trip_through_a_saved_profile(tmp_path):
    from moesim.hardware.profile import LatencyProfile
    from moesim.hardware.profile_io import read_profile
    from moesim.hardware.table import Table

    a = Sample(1.0, 0.9, 1.1, 5, host=Sample(0.2, 0.1, 0.3, 5), busy=True)
    prov = {
        "kind": "measured",
        "device": "gpu",
        "driver": "1",
        "torch": "2",
        "date": "d",
        **host_provenance([a]),
    }
    t = Table("norm", ("tokens",), ((1.0,),), (1.0,), prov)
    LatencyProfile("p", "gpu", [t]).save(tmp_path / "p.yaml")
    back = read_profile(str(tmp_path / "p.yaml")).tables["norm"].provenance
    assert back["host_median_ms"] == [0.2] and back["gpu_queue_busy"] is True
