"""The noise a measurement ran under, on a machine shared with other work.

A live run's wall-clock times include whatever else the machine did: other processes on the
compute or copy core, the load around it. ``sample()`` before and ``between()`` after a measured
interval give

- the 1-minute load average at both ends (``os.getloadavg``);
- other processes' CPU time on this process's cores: busy jiffies of those cores (``/proc/stat``,
  user + nice + system + irq + softirq + steal) minus this process's own CPU time (``os.times``,
  all its threads, the spinning keep-awake ones included). On a core our threads keep busy, any
  other process's time was taken from them;
- how long this (the compute) thread waited on a run queue for a core
  (``/proc/thread-self/schedstat``, second field).

Figures the platform does not provide are NaN, never a guess.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user nice system irq softirq steal (guest is inside user)


@dataclass(frozen=True)
class CpuSample:
    wall_s: float
    busy_s: float  # busy time of this process's cores (NaN without /proc/stat)
    own_s: float  # this process's CPU time, all threads
    wait_s: float  # this thread's run-queue wait so far (NaN without schedstat)
    load1: float
    cores: int


@dataclass(frozen=True)
class Noise:
    load1_before: float
    load1_after: float
    other_cpu_s: float  # other processes' CPU time on this process's cores
    other_cpu_pct: float  # ... as a share of the interval's wall time x those cores
    compute_wait_ms: float  # this thread's run-queue wait over the interval
    wall_s: float
    cores: int

    def row(self) -> dict[str, float]:
        return {
            "load1_before": round(self.load1_before, 2),
            "load1_after": round(self.load1_after, 2),
            "other_cpu_s": self.other_cpu_s,
            "other_cpu_pct": self.other_cpu_pct,
            "compute_thread_wait_ms": self.compute_wait_ms,
        }


def _cores() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return set(range(os.cpu_count() or 1))


def busy_seconds(stat_text: str, cores: set[int], hz: float) -> float:
    """Busy seconds of ``cores`` from the text of ``/proc/stat``."""
    total = 0
    for line in stat_text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cores:
            continue
        vals = rest.split()
        total += sum(int(vals[i]) for i in _BUSY_FIELDS if i < len(vals))
    return total / hz


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read()
    except OSError:
        return None


def sample() -> CpuSample:
    cores = _cores()
    stat = _read("/proc/stat")
    hz = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
    busy = busy_seconds(stat, cores, hz) if stat else math.nan
    sched = _read("/proc/thread-self/schedstat")
    wait = int(sched.split()[1]) * 1e-9 if sched else math.nan
    t = os.times()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    return CpuSample(time.perf_counter(), busy, t.user + t.system, wait, load, len(cores))


def between(a: CpuSample, b: CpuSample) -> Noise:
    wall = b.wall_s - a.wall_s
    other = (b.busy_s - a.busy_s) - (b.own_s - a.own_s)
    other = other if math.isnan(other) else max(0.0, other)  # jiffies vs exact times: clip at 0
    share = other / (wall * a.cores) * 100.0 if wall > 0 else math.nan
    return Noise(a.load1, b.load1, other, share, (b.wait_s - a.wait_s) * 1e3, wall, a.cores)


def combine(parts: list[Noise]) -> Noise:
    """Several intervals as one (loads from the first and the last)."""
    wall = sum(n.wall_s for n in parts)
    other = sum(n.other_cpu_s for n in parts)
    cores = parts[0].cores
    share = other / (wall * cores) * 100.0 if wall > 0 else math.nan
    wait = sum(n.compute_wait_ms for n in parts)
    return Noise(parts[0].load1_before, parts[-1].load1_after, other, share, wait, wall, cores)
