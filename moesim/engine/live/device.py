"""The device a live run or a profile runs on: which torch device, dtype, threads, and who it is.

A CPU "device" is the host itself: its expert slots are a separate preallocated buffer pool and a
copy is a real memory copy done by the copy-engine thread. Compute threads default to one fewer
than the cores, so the copy thread has a core of its own the way a GPU's copy engine is separate
hardware (on a 2-core CI box: compute on one core, copies on the other).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from moesim.errors import fail
from moesim.host import usable_cores

TORCH_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}

# Python's default 5 ms GIL switch interval would let the interpreter thread that runs the policy
# loop hold the GIL for milliseconds while the copy thread waits to mark a copy done; every torch op
# releases the GIL anyway, so a short interval only bounds the pure-Python stretches.
DEFAULT_SWITCH_INTERVAL_S = 5e-5


@dataclass(frozen=True)
class LiveDevice:
    kind: str  # "cpu" | "cuda"
    torch_device: torch.device
    threads: int  # torch intra-op threads used for compute
    compute_cpus: frozenset[int] | None = None  # CPU device: cores of the compute thread(s)
    copy_cpus: frozenset[int] | None = None  # CPU device: the copy thread's own core

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"


def resolve_device(name: str, threads: int | None = None, pin: bool = True) -> LiveDevice:
    """``cpu``, ``cuda`` or ``cuda:N``; a missing GPU is an input error, not a crash. ``pin``: on
    the CPU, compute and copy threads on separate cores (see ``_split_cpus``)."""
    text = (name or "").strip().lower()
    if text == "cpu":
        n = threads if threads is not None else max(1, usable_cores() - 1)
        if n < 1:
            fail(f"--threads: must be >= 1, got {n}")
        compute, copy = _split_cpus(n) if pin else (None, None)
        return LiveDevice("cpu", torch.device("cpu"), n, compute, copy)
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            fail(
                f"--device {name}: no CUDA device is visible to torch {torch.__version__} "
                "(CPU build or no driver); use --device cpu"
            )
        dev = torch.device(text if ":" in text else "cuda:0")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            fail(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible")
        return LiveDevice("cuda", dev, threads if threads is not None else torch.get_num_threads())
    fail(f"--device {name!r}: use cpu, cuda or cuda:N")
    raise AssertionError  # unreachable


def _split_cpus(threads: int) -> tuple[frozenset[int] | None, frozenset[int] | None]:
    """Compute threads on the first cores, the copy thread alone on the last one.

    Why: left to itself the kernel wakes the copy thread on the core of the thread that woke it
    (wake-affine), where it time-shares with compute: on a 2-vCPU VM every copy then stalls the
    compute thread for its whole duration, which no GPU copy engine does. Pinned apart, compute is
    undisturbed and a copy only slows down when both compete for memory bandwidth.
    """
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    copy = frozenset(cpus[-1:])
    compute = frozenset(cpus[: max(1, min(threads, len(cpus) - 1))])
    return compute, copy


def pin_current_thread(cpus: frozenset[int] | None, realtime: bool = False) -> None:
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)  # 0 = the calling thread on Linux
    if realtime:
        set_realtime(True)


REALTIME_PRIORITY = 10  # SCHED_FIFO priority: above every ordinary process, below kernel threads


def set_realtime(on: bool) -> None:
    """Make the calling thread SCHED_FIFO (``on``) or ordinary again.

    Why: on a machine shared with other work, ordinary threads pinned to their cores wait behind
    whatever else runs there (measured on the CI VM under a load average of 8: TPOT x4, stalls x100).
    A real-time policy makes the run's threads preempt other processes, as on a dedicated machine;
    the kernel's real-time throttling still leaves others 5% of each core. Opt-in (--realtime).
    """
    if not hasattr(os, "SCHED_FIFO"):
        fail("--realtime: this platform has no SCHED_FIFO")
    try:
        if on:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(REALTIME_PRIORITY))
        else:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except PermissionError:
        fail("--realtime: setting SCHED_FIFO needs CAP_SYS_NICE (root); run without --realtime")


def torch_dtype(model_dtype: str, model_name: str) -> torch.dtype:
    dt = TORCH_DTYPES.get(model_dtype)
    if dt is None:
        fail(
            f"model {model_name}: the live executor runs fp32 / bf16 / fp16 experts, but this model stores "
            f"{model_dtype}; its packed kernels are not implemented (simulate it with a measured or "
            "estimated profile instead)"
        )
    return dt


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description(dev: LiveDevice) -> dict[str, Any]:
    """Who measured: the keys a ``measured`` provenance needs, plus host and versions."""
    info: dict[str, Any] = {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": str(torch.__version__),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "compute_threads": dev.threads,
        "compute_cpus": sorted(dev.compute_cpus) if dev.compute_cpus else None,
        "copy_cpus": sorted(dev.copy_cpus) if dev.copy_cpus else None,
        "cpu": f"{_cpu_name()} ({usable_cores()} cores)",
    }
    if dev.is_cuda:
        props = torch.cuda.get_device_properties(dev.torch_device)
        info["device"] = props.name
        info["cuda"] = str(torch.version.cuda)
        info["driver"] = _nvidia_driver()
        info["device_memory_gib"] = round(props.total_memory / 2**30, 1)
    else:
        info["device"] = f"cpu: {info['cpu']}"
        info["cuda"] = None
        info["driver"] = None
    return info


def _nvidia_driver() -> str | None:
    try:
        with open("/proc/driver/nvidia/version", encoding="utf-8") as fh:
            first = fh.readline()
    except OSError:
        return None
    parts = first.split("Kernel Module")
    return parts[1].split()[0] if len(parts) > 1 else first.strip()


# A spinner at SCHED_IDLE: it runs only when its core has nothing else to run, and dies with us.
_SPINNER = (
    "import ctypes, os, sys\n"
    "try:\n"
    "    ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG = SIGKILL\n"
    "except Exception:\n"
    "    pass\n"
    "os.sched_setaffinity(0, {int(sys.argv[1])})\n"
    "os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\n"
    "sys.stdout.write('ready\\n'); sys.stdout.flush()\n"
    "while True:\n"
    "    pass\n"
)
_awake_depth = 0


@contextmanager
def keep_awake(cpus: frozenset[int] | None):
    """Keep ``cpus`` from idling for the duration (a lowest-priority spinner process on each).

    Why: on a virtual machine an idle vCPU is halted and descheduled by the hypervisor, and waking
    it (the copy thread when a copy is queued, the compute thread when its copy arrives) then takes
    from tens of microseconds to milliseconds (measured on the 2-vCPU CI VM: p90 of a copy's round
    trip 2.8 ms instead of 0.2 ms). A SCHED_IDLE spinner yields to any real thread at once, so the
    cores stay awake without taking time from the run, like a GPU runtime's spin-waiting host thread.
    """
    global _awake_depth
    if not cpus or not hasattr(os, "SCHED_IDLE") or _awake_depth > 0:
        _awake_depth += 1
        try:
            yield
        finally:
            _awake_depth -= 1
        return
    import subprocess

    procs = []
    _awake_depth += 1
    try:
        for cpu in sorted(cpus):
            proc = subprocess.Popen(
                [sys.executable, "-c", _SPINNER, str(cpu)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
            )
            procs.append(proc)
        for proc in procs:
            assert proc.stdout is not None  # stdout=PIPE
            proc.stdout.readline()  # spinning from here on
        yield
    finally:
        _awake_depth -= 1
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()
            assert proc.stdout is not None  # stdout=PIPE
            proc.stdout.close()


_realtime_depth = 0


@contextmanager
def live_threads(
    dev: LiveDevice,
    switch_interval_s: float = DEFAULT_SWITCH_INTERVAL_S,
    awake: bool = True,
    realtime: bool = False,
):
    """Compute threads, core pinning, GIL switch interval, awake cores and (opt-in) a real-time
    policy for a live run or profile."""
    global _realtime_depth
    cpus = (dev.compute_cpus or frozenset()) | (dev.copy_cpus or frozenset()) if awake else None
    with keep_awake(cpus), _threads(dev, switch_interval_s):
        if not realtime:
            yield
            return
        set_realtime(True)
        _realtime_depth += 1
        try:
            yield
        finally:
            _realtime_depth -= 1
            if _realtime_depth == 0:
                set_realtime(False)


@contextmanager
def _threads(dev: LiveDevice, switch_interval_s: float):
    old_threads = torch.get_num_threads()
    old_switch = sys.getswitchinterval()
    old_cpus = os.sched_getaffinity(0) if dev.compute_cpus and hasattr(os, "sched_getaffinity") else None
    pin_current_thread(dev.compute_cpus)
    torch.set_num_threads(dev.threads)
    sys.setswitchinterval(switch_interval_s)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        sys.setswitchinterval(old_switch)
        if old_cpus is not None:
            os.sched_setaffinity(0, old_cpus)


def synchronize(dev: LiveDevice) -> None:
    if dev.is_cuda:
        torch.cuda.synchronize(dev.torch_device)
