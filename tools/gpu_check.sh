#!/usr/bin/env bash
# gpu_check.sh -- first run of moesim's CUDA path on one GPU (written for one H200, ~8 min wall).
#
# Copy this file into the moesim checkout and run it from the repository root:
#     bash gpu_check.sh                      # GPU machine
#     DEVICE=cpu QUICK=1 bash gpu_check.sh   # smoke test of the script itself on a CPU machine
#
# Steps (each time-boxed; a failing or timed-out step never stops the others):
#   0 env      pick a Python with torch (CUDA build wanted), install missing deps + the project
#   1 facts    nvidia-smi / PCIe link / NUMA / CPU / memory facts
#   2 pytest   python -m pytest -m gpu tests/live
#   3 bench    raw pinned H2D bandwidth for expert-sized copies vs PCIe Gen5 peak (63.0 GB/s) and
#              moesim's assumed 50.4 GB/s; the pinned H2D peak (8 samples of 8 x 256 MiB back to
#              back) against the link's theoretical rate (nvidia-smi link gen/width), i.e. the
#              efficiency moesim/hardware/pcie.py lacks for Gen5 host-to-device; host enqueue cost;
#              2 streams; H2D+D2H; pageable; copy/compute HBM contention; op timing split
#   4 profile  moesim profile --device cuda for olmoe-1b-7b and deepseek-v2-lite: every op, with the
#              host (issue) time beside the GPU time (provenance host_median_ms) and the whole-token
#              ops (embedding, dense_ffn, lm_head, sampling)
#   5 calib    moesim calibrate, 2 models x 3 predictors (none, prev-token, oracle) x 2-3 capacities,
#              --layers 4, 2 sequences (256 decode tokens), split into small invocations so that a
#              timeout loses one slice only; interleaved by model
#   6 summary  $OUT/summary.md (+ all_calibration.csv) and $OUT/gpu_check.tar.gz (every log/report);
#              summary.md opens with "Numbers to commit" (PCIe efficiency, host vs GPU ms per op)
#
# The repository keeps this script as tools/gpu_check.sh (adapted from ../shared/gpu/gpu_check.sh;
# what changed is listed in docs/live-executor.md, section "GPU check").
#
# Knobs (environment, all optional):
#   OUT=./gpu_check_out  BUDGET_S=450  DEVICE=cuda  QUICK=0  PYTHON=<auto>  INSTALL=1
#   WHEELS=.whl (offline wheels, e.g. simpy, for a machine without network)  TORCH_SPEC=torch==2.13.0
#   CAL_REPEATS=2  CAL_LAYERS=4  CAL_SEQS=2  PROF_REPEATS=15  CAL_CAP_S=75 (per calibrate slice)
#   MIN_RUN=20 (a step with less time left than this is skipped, not started)
#   QUICK=1 (CPU smoke test): small grids, and the calibrations replay short synthetic traces of the
#   models' shapes (1 sequence x QUICK_TOKENS=12 decode tokens, prompt 64) so a loaded CPU finishes;
#   its defaults are BUDGET_S=600 CAL_CAP_S=140 (the first two or three slices run)
# At most 8 files are written directly under $OUT (the device tool returns <= 8 files).
set -uo pipefail

REPO=$(pwd)
if [[ ! -f "$REPO/pyproject.toml" || ! -d "$REPO/moesim" ]]; then
  echo "run me from the moesim repository root" >&2
  exit 2
fi
OUT=${OUT:-$REPO/gpu_check_out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
W=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")   # work dir; packed into $OUT at the end
mkdir -p "$W/logs"
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
if [[ "$QUICK" == 1 ]]; then  # a CPU smoke test: real-shaped bf16 kernels on a (loaded) CPU are slow
  BUDGET_S=${BUDGET_S:-600} CAL_CAP_S=${CAL_CAP_S:-140}
fi
BUDGET_S=${BUDGET_S:-450}
INSTALL=${INSTALL:-1}
WHEELS=${WHEELS:-$REPO/.whl}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
CAL_REPEATS=${CAL_REPEATS:-2}
CAL_LAYERS=${CAL_LAYERS:-4}
CAL_SEQS=${CAL_SEQS:-2}
PROF_REPEATS=${PROF_REPEATS:-15}
CAL_CAP_S=${CAL_CAP_S:-75}
if [[ "$QUICK" == 1 ]]; then
  CAL_REPEATS=1 CAL_LAYERS=2 CAL_SEQS=1 PROF_REPEATS=3
fi
export PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1 PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"   # the checkout wins over any installed copy
export MPLBACKEND=Agg
T0=$(date +%s)
LOG="$OUT/log.txt"
: >"$LOG"
: >"$W/steps.tsv"

say() { echo "[gpu_check +$(( $(date +%s) - T0 ))s] $*" | tee -a "$LOG"; }
left() { echo $(( BUDGET_S - ($(date +%s) - T0) )); }

# step NAME CAP MIN_AFTER CMD...: run CMD with timeout min(CAP, time left - MIN_AFTER); the rest of
# the plan needs MIN_AFTER seconds. SIGABRT at the timeout makes Python dump every thread's stack
# (PYTHONFAULTHANDLER), which is what we want from a hung copy thread.
step() {
  local name=$1 cap=$2 after=$3
  shift 3
  if declare -F "$1" >/dev/null; then  # a shell function: run it in a child bash (exported below)
    set -- bash -c '"$@"' _ "$@"
  fi
  local t=$(( $(left) - after ))
  (( t > cap )) && t=$cap
  if (( t < ${MIN_RUN:-20} )); then
    say "SKIP $name (budget spent)"
    printf '%s\t%s\t%s\t%s\n' "$name" skipped 0 0 >>"$W/steps.tsv"
    return 99
  fi
  say "START $name (timeout ${t}s)"
  local s=$(date +%s)
  timeout -s ABRT -k 10 "$t" "$@" >"$W/logs/$name.log" 2>&1
  local rc=$?
  local d=$(( $(date +%s) - s ))
  local what=ok
  (( rc != 0 )) && what=FAILED
  (( rc == 124 || rc == 134 || rc == 137 )) && what=TIMEOUT
  say "END   $name rc=$rc $what ${d}s   (log: logs/$name.log)"
  tail -n 3 "$W/logs/$name.log" | sed 's/^/    /' | tee -a "$LOG" >/dev/null
  printf '%s\t%s\t%s\t%s\n' "$name" "$what" "$rc" "$d" >>"$W/steps.tsv"
  return $rc
}

DMON_PID=
finish() {
  if [[ -n "$DMON_PID" ]]; then kill "$DMON_PID" 2>/dev/null; wait "$DMON_PID" 2>/dev/null; fi
  say "summary"
  if [[ -n "${PY:-}" ]]; then
    "$PY" "$W/summarize.py" "$W" "$OUT" >"$W/logs/summary.log" 2>&1 || say "summary script failed (logs/summary.log)"
  fi
  [[ -f "$OUT/summary.md" ]] || cp "$LOG" "$OUT/summary.md"
  cp "$W/all_calibration.csv" "$OUT/" 2>/dev/null
  cp "$LOG" "$W/log.txt" 2>/dev/null
  tar -czf "$OUT/gpu_check.tar.gz" -C "$W" . 2>/dev/null
  ls -la "$OUT" | tee -a "$LOG"
  say "done in $(( $(date +%s) - T0 ))s; read $OUT/summary.md; everything: $OUT/gpu_check.tar.gz"
}

# ------------------------------------------------------------------------------------------------
# helper programs, written once into the work dir
# ------------------------------------------------------------------------------------------------
cat >"$W/bench.py" <<'PYEOF'
"""Raw PCIe / copy-engine / op-timing facts, to set beside the profile moesim measures."""
import json
import statistics as st
import sys
import time

import torch

out = sys.argv[1]
R = {"torch": torch.__version__, "cuda": torch.version.cuda}
PEAK = 32 * 16 * 128 / 130 / 8  # PCIe Gen5 x16, one direction, GB/s (63.0)
MOESIM = PEAK * 0.8  # what devices.yaml assumes (50.4)
R["pcie_gen5_x16_peak_gbps"] = round(PEAK, 2)
R["moesim_assumed_h2d_gbps"] = round(MOESIM, 2)


def save():
    with open(out, "w") as fh:
        json.dump(R, fh, indent=1)


if not torch.cuda.is_available():
    R["skipped"] = "no CUDA device"
    save()
    print("bench: no CUDA device, skipped")
    sys.exit(0)

dev = torch.device("cuda")
props = torch.cuda.get_device_properties(dev)
R["device"] = props.name
R["sms"] = props.multi_processor_count
R["mem_gib"] = round(props.total_memory / 2**30, 1)
R["l2_mib"] = round(getattr(props, "L2_cache_size", 0) / 2**20, 1)
try:
    import cupy

    R["async_engine_count"] = int(cupy.cuda.runtime.getDeviceProperties(0)["asyncEngineCount"])
except Exception as exc:  # noqa: BLE001
    R["async_engine_count"] = f"n/a ({type(exc).__name__})"
MiB = 1 << 20
SLEEP = int(4e6)  # ~2 ms of GPU spin at ~2 GHz: the host enqueues while the stream is blocked


def ev():
    return torch.cuda.Event(enable_timing=True)


def med(xs):
    return float(st.median(xs))


# pinned allocation (exactly 2 GiB: the caching host allocator rounds sizes up to a power of two)
t = time.perf_counter()
src = torch.empty(2 << 30, dtype=torch.uint8, pin_memory=True)
R["pin_alloc_2GiB_s"] = round(time.perf_counter() - t, 3)
t = time.perf_counter()
src.fill_(1)
R["pin_fill_2GiB_s"] = round(time.perf_counter() - t, 3)
R["pinned_is_pinned"] = bool(src[123:456].is_pinned())
dst = torch.empty(1 << 30, dtype=torch.uint8, device=dev)
back = torch.empty(512 * MiB, dtype=torch.uint8, pin_memory=True)
s1, s2 = torch.cuda.Stream(), torch.cuda.Stream()
comp = torch.cuda.current_stream()


def slot(buf, i, size):
    k = max(1, buf.numel() // size)
    o = (i % k) * size
    return buf[o : o + size]


# warm the link (PCIe may sit at a low link speed while idle)
with torch.cuda.stream(s1):
    for i in range(8):
        slot(dst, i, 256 * MiB).copy_(slot(src, i, 256 * MiB), non_blocking=True)
torch.cuda.synchronize()

sizes = [256 << 10, 1 * MiB, 4 * MiB, 12582912, 17301504, 64 * MiB, 256 * MiB]
rows = []
for size in sizes:
    n = max(8, min(40, int(1.5e9 // size)))
    iso = []
    for i in range(n):  # one copy at a time, event-timed on the copy stream
        a, b = ev(), ev()
        a.record(s1)
        with torch.cuda.stream(s1):
            slot(dst, i, size).copy_(slot(src, i, size), non_blocking=True)
        b.record(s1)
        b.synchronize()
        iso.append(a.elapsed_time(b))
    # host cost of one torch copy_ (cudaMemcpyAsync + torch bookkeeping), stream blocked by a spin
    with torch.cuda.stream(s1):
        torch.cuda._sleep(SLEEP)
        t = time.perf_counter_ns()
        for i in range(n):
            slot(dst, i, size).copy_(slot(src, i, size), non_blocking=True)
        host_us = (time.perf_counter_ns() - t) / 1e3 / n
    torch.cuda.synchronize()
    # back to back: n copies queued behind a spin, so the DMA engine never waits for the host
    a, b = ev(), ev()
    with torch.cuda.stream(s1):
        torch.cuda._sleep(SLEEP)
        a.record(s1)
        for i in range(n):
            slot(dst, i, size).copy_(slot(src, i, size), non_blocking=True)
        b.record(s1)
    b.synchronize()
    b2b = a.elapsed_time(b) / n
    rows.append(
        {
            "bytes": size,
            "isolated_ms_median": round(med(iso), 5),
            "isolated_gbps": round(size / med(iso) / 1e6, 2),
            "b2b_ms": round(b2b, 5),
            "b2b_gbps": round(size / b2b / 1e6, 2),
            "b2b_pct_of_peak": round(size / b2b / 1e6 / PEAK * 100, 1),
            "host_enqueue_us": round(host_us, 2),
        }
    )
    print(rows[-1], flush=True)
R["h2d_pinned"] = rows

# The pinned H2D peak, for moesim/hardware/pcie.py MEASUREMENTS (its Gen5 host-to-device figure is
# unmeasured): 8 samples, each 8 back-to-back 256 MiB copies on one copy stream behind a spin (as
# nvbandwidth's host_to_device_memcpy_ce: cudaMemcpyAsync from pinned memory, copy engine).
BIG = 256 * MiB
peak = []
for rep in range(8):
    a, b = ev(), ev()
    with torch.cuda.stream(s1):
        torch.cuda._sleep(SLEEP)
        a.record(s1)
        for i in range(8):
            slot(dst, i, BIG).copy_(slot(src, i, BIG), non_blocking=True)
        b.record(s1)
    b.synchronize()
    peak.append(round(8 * BIG / a.elapsed_time(b) / 1e6, 2))
R["h2d_peak_samples_gbps"] = peak
R["h2d_peak_gbps"] = round(med(peak), 2)


def link_facts():
    """The link's generation and width (max: what GPU and host agree on; current: right after the
    copies, as an idle link may train down) and its theoretical one-direction rate."""
    import subprocess

    q = "pcie.link.gen.max,pcie.link.width.max,pcie.link.gen.current,pcie.link.width.current"
    try:
        line = subprocess.run(
            ["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20,
        ).stdout.splitlines()[0]
        gmax, wmax, gcur, wcur = (int(v.strip()) for v in line.split(","))
    except Exception as exc:  # noqa: BLE001
        R["pcie_link"] = f"n/a ({exc!r}); assuming Gen5 x16"
        gmax, wmax, gcur, wcur = 5, 16, None, None
    else:
        R["pcie_link"] = {"gen_max": gmax, "width_max": wmax, "gen_current": gcur, "width_current": wcur}
    try:
        from moesim.hardware.pcie import PCIE_LANE_GBPS

        theo = PCIE_LANE_GBPS[gmax] * wmax
    except Exception:  # noqa: BLE001
        theo = PEAK
    R["pcie_gen"], R["pcie_lanes"] = gmax, wmax
    R["link_theoretical_gbps"] = round(theo, 3)
    R["h2d_peak_efficiency"] = round(med(peak) / theo, 4)


sys.path.insert(0, ".")
link_facts()
print("h2d peak", R["h2d_peak_samples_gbps"], R.get("pcie_link"), "efficiency", R["h2d_peak_efficiency"], flush=True)
save()

E = 12582912  # one OLMoE expert (bf16)
N = 60


def two_streams():
    a, b1, b2 = ev(), ev(), ev()
    with torch.cuda.stream(s1):
        torch.cuda._sleep(SLEEP)
        a.record(s1)
    s2.wait_event(a)
    for i in range(N):
        st_ = s1 if i % 2 == 0 else s2
        with torch.cuda.stream(st_):
            slot(dst, i, E).copy_(slot(src, i, E), non_blocking=True)
    b1.record(s1)
    b2.record(s2)
    torch.cuda.synchronize()
    t = max(a.elapsed_time(b1), a.elapsed_time(b2))
    return N * E / t / 1e6


R["h2d_two_streams_aggregate_gbps"] = round(two_streams(), 2)


def bidir():
    a, b1, b2 = ev(), ev(), ev()
    with torch.cuda.stream(s1):
        torch.cuda._sleep(SLEEP)
        a.record(s1)
    s2.wait_event(a)
    for i in range(N):
        with torch.cuda.stream(s1):
            slot(dst, i, E).copy_(slot(src, i, E), non_blocking=True)
        with torch.cuda.stream(s2):
            slot(back, i, E).copy_(slot(dst, i + 40, E), non_blocking=True)
    b1.record(s1)
    b2.record(s2)
    torch.cuda.synchronize()
    return N * E / a.elapsed_time(b1) / 1e6, N * E / a.elapsed_time(b2) / 1e6


h, d = bidir()
R["bidir_h2d_gbps"], R["bidir_d2h_gbps"] = round(h, 2), round(d, 2)

# pageable H2D (staged through a driver buffer, synchronous for the host)
pageable = torch.empty(256 * MiB, dtype=torch.uint8)
pageable.fill_(1)
pg = []
for i in range(10):
    torch.cuda.synchronize()
    t = time.perf_counter()
    slot(dst, i, E).copy_(slot(pageable, i, E))
    torch.cuda.synchronize()
    pg.append((time.perf_counter() - t) * 1e3)
R["h2d_pageable_expert_ms"] = round(med(pg), 4)
R["h2d_pageable_gbps"] = round(E / med(pg) / 1e6, 2)

# copy/compute contention: memory-bound GEMVs over 1 GiB of bf16 weights on the compute stream
def contention():
    Ws = [torch.randn(8192, 16384, device=dev, dtype=torch.bfloat16) for _ in range(4)]
    x = torch.randn(1, 8192, device=dev, dtype=torch.bfloat16)

    def gemv_loop(iters):
        a, b = ev(), ev()
        torch.cuda._sleep(SLEEP)
        a.record(comp)
        for _ in range(iters):
            for w in Ws:
                torch.matmul(x, w)
        b.record(comp)
        return a, b

    for _ in range(3):
        gemv_loop(2)
    torch.cuda.synchronize()
    a, b = gemv_loop(40)
    torch.cuda.synchronize()
    alone = a.elapsed_time(b) / 40
    R["gemv_1GiB_alone_ms"] = round(alone, 4)
    R["gemv_alone_TBps"] = round(4 * 8192 * 16384 * 2 / alone / 1e9, 3)
    ca, cb = ev(), ev()
    with torch.cuda.stream(s1):
        torch.cuda._sleep(SLEEP)
        ca.record(s1)
        for i in range(120):
            slot(dst, i, E).copy_(slot(src, i, E), non_blocking=True)
        cb.record(s1)
    a, b = gemv_loop(40)
    torch.cuda.synchronize()
    R["gemv_during_copies_ms"] = round(a.elapsed_time(b) / 40, 4)
    R["gemv_slowdown_x"] = round(a.elapsed_time(b) / 40 / alone, 3)
    R["h2d_during_gemv_gbps"] = round(120 * E / ca.elapsed_time(cb) / 1e6, 2)


contention()
torch.cuda.empty_cache()

# how long the live copy thread takes to issue a demand copy (submit -> cudaMemcpyAsync returned) while
# the main thread is idle, runs small torch ops (the live loop between kernels), or pure Python; the
# live executor sets a 50 us GIL switch interval, so do we
def gil_probe():
    from moesim.engine.live.copier import CopyWorker, LiveTransfer

    origin = time.perf_counter_ns()

    def clock():
        return (time.perf_counter_ns() - origin) * 1e-6

    cs = torch.cuda.Stream()
    issued_at = {}

    def issue(tr):
        with torch.cuda.stream(cs):
            a, b = ev(), ev()
            a.record(cs)
            slot(dst, tr.slot, E).copy_(slot(src, tr.key, E), non_blocking=True)
            b.record(cs)
        tr.start_evt, tr.end_evt = a, b
        issued_at[tr.key] = clock()

    old = sys.getswitchinterval()
    sys.setswitchinterval(5e-5)
    # the blocking lane (complete waits on the end event) and the pipelined one the live executor
    # uses on CUDA (arrived polls the end event; ExpertStore.copy_arrived)
    workers = {
        "": CopyWorker(issue, clock, lambda tr: tr.end_evt.synchronize(), name="gilprobe"),
        "pipelined_": CopyWorker(issue, clock, None, name="gilprobe-pipe", arrived=lambda tr: tr.end_evt.query()),
    }
    tiny = torch.zeros(16, device=dev)
    out = {}
    try:
        key = 0
        for (prefix, w), mode in [(x, m) for x in workers.items() for m in ("idle", "busy_torch_ops", "busy_python")]:
            lat = []
            for _ in range(25):
                time.sleep(3e-4)
                key += 1
                tr = LiveTransfer(key, key % 60, True, E, clock())
                t0 = clock()
                w.submit(tr)
                spins = 0
                if mode != "idle":
                    while key not in issued_at and spins < 200000:
                        spins += 1
                        if mode == "busy_torch_ops":
                            tiny.add_(1.0)
                        else:
                            sum(range(200))
                w.wait(tr)
                lat.append((issued_at[key] - t0) * 1e3)
            out[prefix + mode + "_issue_us_median"] = round(med(lat), 1)
            out[prefix + mode + "_issue_us_max"] = round(max(lat), 1)
    finally:
        for w in workers.values():
            w.close()
        sys.setswitchinterval(old)
    return out


try:
    R["copy_issue_latency"] = gil_probe()
except Exception as exc:  # noqa: BLE001
    R["copy_issue_latency"] = f"failed: {exc!r}"
print("copy issue latency", R["copy_issue_latency"], flush=True)
save()

# sync and event costs the live loop pays per layer-step
sync = []
for _ in range(50):
    e = torch.cuda.Event()
    t = time.perf_counter_ns()
    e.record(comp)
    e.synchronize()
    sync.append((time.perf_counter_ns() - t) / 1e3)
R["idle_event_record_sync_us"] = round(med(sync), 2)
mk = []
for _ in range(200):
    t = time.perf_counter_ns()
    torch.cuda.Event().record(comp)
    mk.append((time.perf_counter_ns() - t) / 1e3)
R["event_create_record_us"] = round(med(mk), 2)
save()

# op timing split with moesim's own kernels: what moesim's profiler records (events around the call
# on an idle stream, host launch included), the GPU's own time (call enqueued behind a spin), and
# the host's time to issue the call (stream blocked, no sync).
sys.path.insert(0, ".")
from moesim.engine.live.kernels import ModelKernels, expert_numel, fill_random  # noqa: E402
from moesim.models import get_model  # noqa: E402

def op_split(name):
    m = get_model(name)
    Lc = 8
    K = ModelKernels(m, Lc, dev, torch.bfloat16, 2, 512, 0)
    xs = fill_random(torch.empty(Lc, 2, m.hidden_size, device=dev, dtype=torch.bfloat16), 5)
    pool = fill_random(torch.empty(8, expert_numel(m), device=dev, dtype=torch.bfloat16), 3)
    ops = {
        "norm": lambda i: K.norm(i % Lc, xs[i % Lc, :1]),
        "attention_ctx320": lambda i: K.attention(i % Lc, xs[i % Lc, :1], 320),
        "gate": lambda i: K.gate(i % Lc, xs[i % Lc, :1]),
        "expert_ffn_1tok": lambda i: K.expert(pool[i % 8], xs[i % Lc, :1]),
    }
    if K.shared_I:
        ops["shared_1tok"] = lambda i: K.shared(i % Lc, xs[i % Lc, :1])
    res = {}
    for op, fn in ops.items():
        for i in range(5):
            fn(i)
        torch.cuda.synchronize()
        moesim_style, gpu_only, host_only = [], [], []
        for i in range(30):
            a, b = ev(), ev()
            a.record(comp)
            fn(i)
            b.record(comp)
            b.synchronize()
            moesim_style.append(a.elapsed_time(b))
            a, b = ev(), ev()
            torch.cuda._sleep(SLEEP)
            a.record(comp)
            t = time.perf_counter_ns()
            fn(i)
            host_only.append((time.perf_counter_ns() - t) / 1e6)
            b.record(comp)
            b.synchronize()
            gpu_only.append(a.elapsed_time(b))
        res[op] = {
            "moesim_profile_style_ms": round(med(moesim_style), 5),
            "gpu_only_ms": round(med(gpu_only), 5),
            "host_issue_ms": round(med(host_only), 5),
        }
        print(name, op, res[op], flush=True)
    return res


split = {}
for name in ("olmoe-1b-7b", "deepseek-v2-lite"):
    split[name] = op_split(name)
    torch.cuda.empty_cache()
R["op_split"] = split
save()
print("bench done")
PYEOF

cat >"$W/summarize.py" <<'PYEOF'
"""Merge everything the steps left in the work dir into summary.md and all_calibration.csv."""
import csv
import glob
import json
import os
import statistics as st
import sys

import yaml

W, OUT = sys.argv[1], sys.argv[2]
L = []


def p(s=""):
    L.append(s)


p("# moesim gpu_check summary")
p()
if os.path.exists(os.path.join(W, "SIMPY_SHIM_USED")):
    p("**WARNING: simpy was not installable; the simulator ran on gpu_check's one-process simpy stand-in.**")
    p()
p("## Steps")
p()
p("| step | result | rc | seconds |")
p("|---|---|---|---|")
with open(os.path.join(W, "steps.tsv")) as fh:
    for line in fh:
        parts = line.rstrip("\n").split("\t")
        if len(parts) == 4:
            p("| " + " | ".join(parts) + " |")
p()
facts = os.path.join(W, "logs", "facts.log")
if os.path.exists(facts):
    p("## Machine")
    p()
    p("```")
    keep = [x for x in open(facts).read().splitlines() if not x.startswith(("Flags:", "Vulnerability"))]
    p("\n".join(keep)[:6000])
    p("```")
    p()
pt = os.path.join(W, "logs", "pytest.log")
if os.path.exists(pt):
    tail = [x for x in open(pt).read().splitlines() if x.strip()][-15:]
    p("## pytest -m gpu tests/live (last lines)")
    p()
    p("```")
    p("\n".join(tail))
    p("```")
    p()
bj = os.path.join(W, "bench.json")
if os.path.exists(bj):
    B = json.load(open(bj))
    p("## Raw copy bandwidth and op timing (bench.json)")
    p()
    scal = {k: v for k, v in B.items() if not isinstance(v, (list, dict))}
    p("```")
    p(json.dumps(scal, indent=1))
    p("```")
    if B.get("h2d_pinned"):
        p()
        p("| bytes | isolated ms | isolated GB/s | back-to-back GB/s | % of 63.0 | host enqueue us |")
        p("|---|---|---|---|---|---|")
        for r in B["h2d_pinned"]:
            p(
                f"| {r['bytes']:,} | {r['isolated_ms_median']} | {r['isolated_gbps']} | {r['b2b_gbps']} "
                f"| {r['b2b_pct_of_peak']} | {r['host_enqueue_us']} |"
            )
    if B.get("op_split"):
        p()
        p("| model | op | moesim-profile-style ms | GPU-only ms | host issue ms |")
        p("|---|---|---|---|---|")
        for model, ops in B["op_split"].items():
            for op, v in ops.items():
                p(
                    f"| {model} | {op} | {v['moesim_profile_style_ms']} | {v['gpu_only_ms']} "
                    f"| {v['host_issue_ms']} |"
                )
    p()


def at(tab, vals, **axes):
    """``vals`` (nested like the table's ms) at the grid point nearest ``axes`` (enough for a summary)."""
    if tab is None or vals is None:
        return None
    for ax in tab["axes"]:
        g = tab["grid"][ax]
        want = axes.get(ax, g[0])
        i = min(range(len(g)), key=lambda j: abs(g[j] - want))
        vals = vals[i]
    return vals


def snap(tab, **axes):
    """The grid point ``at`` reads for ``axes`` (the nearest one per axis)."""
    return {ax: int(min(tab["grid"][ax], key=lambda g: abs(g - axes.get(ax, tab["grid"][ax][0])))) for ax in tab["axes"]}


def tval(tab, **axes):
    """GPU (CPU: the only) time of a profile table at a grid point."""
    return at(tab, tab and tab["ms"], **axes)


def hval(tab, **axes):
    """Host issue time (CUDA profiles: provenance host_median_ms) at a grid point; None elsewhere."""
    return at(tab, tab and tab.get("provenance", {}).get("host_median_ms"), **axes)


def fmt(v, nd=4):
    return "absent" if v is None else f"{v:.{nd}f}"


# The numbers the next session commits: they open the summary.
HOST_OPS = (
    ("attention", {"batch": 1, "context": 320}),
    ("norm", {"tokens": 1}),
    ("gate", {"tokens": 1}),
    ("expert_ffn", {"tokens": 1}),
    ("expert_ffn", {"tokens": 8}),
    ("shared_expert_ffn", {"tokens": 1}),
    ("embedding", {"tokens": 1}),
    ("dense_ffn", {"tokens": 1}),
    ("lm_head", {"tokens": 1}),
    ("sampling", {"batch": 1}),
)
bj0 = os.path.join(W, "bench.json")
B0 = json.load(open(bj0)) if os.path.exists(bj0) else {}
n0 = len(L)
p("## Numbers to commit")
p()
if B0.get("h2d_peak_samples_gbps"):
    gen, lanes = B0.get("pcie_gen"), B0.get("pcie_lanes")
    p(
        f"- **PCIe pinned H2D peak** ({B0.get('device')}, link Gen{gen} x{lanes}, {B0.get('pcie_link')}): "
        f"median **{B0['h2d_peak_gbps']} GB/s** over 8 samples of 8 back-to-back 256 MiB copies "
        f"{B0['h2d_peak_samples_gbps']}; theoretical {B0['link_theoretical_gbps']} GB/s -> efficiency "
        f"**{B0['h2d_peak_efficiency']}** (moesim/hardware/pcie.py: Gen5 host-to-device unmeasured; "
        "estimated profiles assume 0.8)."
    )
    if gen == 5 and lanes == 16:
        p(
            f"  For `MEASUREMENTS[5]`: `samples_gbps={tuple(B0['h2d_peak_samples_gbps'])}`, "
            "what='host-to-device, cudaMemcpyAsync from pinned memory on a copy stream (copy engine), "
            f"8 x 256 MiB back to back, {B0.get('device')}', source='moesim tools/gpu_check.sh, torch "
            f"{B0.get('torch')}, CUDA {B0.get('cuda')}'."
        )
    else:
        p(f"  The link is not Gen5 x16 (Gen{gen} x{lanes}): do not file it under MEASUREMENTS[5].")
else:
    p(f"- PCIe pinned H2D peak: not measured ({B0.get('skipped', 'bench.json missing or bench failed')}).")
for prof in sorted(glob.glob(os.path.join(W, "profile-*.yaml"))):
    d = yaml.safe_load(open(prof))
    T = d["tables"]
    p()
    p(f"- **{os.path.basename(prof)}** ({d.get('device')}, {d.get('model')}): GPU vs host (issue) time per op, ms")
    p()
    p("| op | point | GPU ms | host ms (host_median_ms) | host / GPU | GPU queue busy |")
    p("|---|---|---|---|---|---|")
    for op, axes in HOST_OPS:
        tab = T.get(op)
        if tab is None:
            p(f"| {op} | {axes} | absent | absent | | |")
            continue
        g, h = tval(tab, **axes), hval(tab, **axes)
        ratio = f"{h / g:.2f}" if g and h is not None else ""
        busy = tab.get("provenance", {}).get("gpu_queue_busy", "")
        p(f"| {op} | {snap(tab, **axes)} | {fmt(g)} | {fmt(h)} | {ratio} | {busy} |")
    eb = {"olmoe-1b-7b": 12582912, "deepseek-v2-lite": 17301504}.get(d.get("model"), 0)
    h = tval(T.get("h2d_pinned"), bytes=eb)
    raw = {r["bytes"]: r for r in B0.get("h2d_pinned", [])}
    if h and eb:
        gb = eb / h / 1e6
        line = f"  h2d_pinned through the live copy thread, one expert ({eb:,} B): {gb:.2f} GB/s"
        if B0.get("h2d_peak_gbps"):
            line += f" = {gb / B0['h2d_peak_gbps'] * 100:.1f}% of the pinned peak (issue 13 goal: >= 90%)"
        if eb in raw:
            line += f", {gb / raw[eb]['b2b_gbps'] * 100:.1f}% of raw back-to-back copies of that size"
        p()
        p(line)
    absent = [op for op in ("embedding", "dense_ffn", "lm_head", "sampling") if op not in T]
    if absent:
        p()
        p(f"  whole-token ops absent: {absent} (dense_ffn: only models with dense layers)")
    if not any(hval(T.get(op), **axes) is not None for op, axes in HOST_OPS):
        p()
        p("  no host times: host_median_ms is written by CUDA profiles only (on a CPU host = GPU time)")
p()
NUMBERS = L[n0:]
del L[n0:]


EXPERT = {"olmoe-1b-7b": 12582912, "deepseek-v2-lite": 17301504}
for prof in sorted(glob.glob(os.path.join(W, "profile-*.yaml"))):
    d = yaml.safe_load(open(prof))
    T = d["tables"]
    model = d.get("model")
    eb = EXPERT.get(model, 0)
    p(f"## Profile {os.path.basename(prof)} ({d.get('device')}, model {model})")
    p()
    p("| op | value (ms) |")
    p("|---|---|")
    for op, axes in (
        ("attention", {"batch": 1, "context": 256}),
        ("norm", {"tokens": 1}),
        ("gate", {"tokens": 1}),
        ("expert_ffn", {"tokens": 1}),
        ("shared_expert_ffn", {"tokens": 1}),
        ("cpu_expert_ffn", {"tokens": 1}),
        ("h2d_pinned", {"bytes": eb}),
        ("h2d_pageable", {"bytes": eb}),
        ("layer_overhead_pre_gate", {"batch": 1}),
        ("layer_overhead_post_gate", {"batch": 1}),
        ("copy_handoff", {}),
        ("h2d_pinned_during_compute", {"bytes": eb}),
        ("expert_ffn_during_copies", {"tokens": 1}),
    ):
        v = tval(T.get(op), **axes)
        p(f"| {op} {axes} | {v if v is not None else 'absent'} |")
    h = tval(T.get("h2d_pinned"), bytes=eb)
    if h:
        p(f"| h2d_pinned as GB/s (expert {eb:,} B) | {eb / h / 1e6:.2f} |")
    ov = T.get("layer_overhead_pre_gate")
    if ov:
        p(f"| layer_overhead steps_used (all-hit samples per batch) | {ov['provenance'].get('steps_used')} |")
        p(f"| layer_overhead raw medians | {ov['provenance'].get('raw_median_ms')} |")
    p()

# automatic checks of the known CUDA-path risks (see the fidelity review)
C = []
B = json.load(open(bj)) if os.path.exists(bj) else {}
if B.get("pinned_is_pinned") is False:
    C.append("ALARM: a slice of a pin_memory=True tensor reports is_pinned() False: copies would be synchronous")
raw = {r["bytes"]: r for r in B.get("h2d_pinned", [])}
for prof in sorted(glob.glob(os.path.join(W, "profile-*.yaml"))):
    d = yaml.safe_load(open(prof))
    T, model = d["tables"], d.get("model")
    eb = EXPERT.get(model, 0)
    tag = os.path.basename(prof)
    ov = T.get("layer_overhead_pre_gate")
    if ov is not None:
        used = ov["provenance"].get("steps_used") or []
        if not used or min(used) < 5:
            C.append(
                f"{tag}: layer_overhead_* rests on {used} all-hit tokens (CUDA needs whole miss-free tokens; "
                "overhead.py:_cuda_residuals); values of 0 mean 'not measured', so sim+loop == sim"
            )
    h = tval(T.get("h2d_pinned"), bytes=eb)
    if h and eb in raw:
        r = raw[eb]
        C.append(
            f"{tag}: h2d_pinned (copy thread, back to back) {h:.4f} ms = {eb / h / 1e6:.1f} GB/s vs raw DMA "
            f"back-to-back {r['b2b_ms']:.4f} ms = {r['b2b_gbps']} GB/s: x{h / r['b2b_ms']:.2f} (host gap per copy "
            f"{(h - r['b2b_ms']) * 1e3:.0f} us)"
        )
    e1, e2 = tval(T.get("expert_ffn"), tokens=1), tval(T.get("expert_ffn_during_copies"), tokens=1)
    if e1 and e2:
        C.append(
            f"{tag}: expert_ffn_during_copies / expert_ffn = x{e2 / e1:.1f}"
            + (" (a device-wide synchronize waits for the copy: profiler.py _contention, not contention)" if e2 / e1 > 2 else "")
        )
    h2, h1 = tval(T.get("h2d_pinned_during_compute"), bytes=eb), h
    if h1 and h2:
        C.append(f"{tag}: h2d_pinned_during_compute / h2d_pinned = x{h2 / h1:.2f}")
for model, ops in (B.get("op_split") or {}).items():
    for op, v in ops.items():
        g = v["gpu_only_ms"] or 1e-9
        C.append(
            f"op split {model} {op}: profile-style {v['moesim_profile_style_ms']:.4f} ms, GPU-only {v['gpu_only_ms']:.4f}, "
            f"host issue {v['host_issue_ms']:.4f} -> host-bound x{v['moesim_profile_style_ms'] / g:.1f}"
        )
if B.get("h2d_pinned"):
    best = max(r["b2b_gbps"] for r in B["h2d_pinned"])
    C.append(
        f"raw pinned H2D best {best} GB/s = {best / B['pcie_gen5_x16_peak_gbps'] * 100:.0f}% of PCIe Gen5 x16 "
        f"(63.0 GB/s); moesim's estimated profiles assume {B['moesim_assumed_h2d_gbps']} GB/s"
    )
if "copy_issue_latency" in B:
    C.append(f"live copy thread, submit -> copy issued (us): {B['copy_issue_latency']}")
for k in ("h2d_two_streams_aggregate_gbps", "bidir_h2d_gbps", "h2d_pageable_gbps", "gemv_slowdown_x",
          "h2d_during_gemv_gbps", "idle_event_record_sync_us", "event_create_record_us", "pin_alloc_2GiB_s"):
    if k in B:
        C.append(f"{k}: {B[k]}")
if C:
    p("## Checks")
    p()
    for c in C:
        p(f"- {c}")
    p()

rows = []
for f in sorted(glob.glob(os.path.join(W, "cal-*", "calibration.csv"))):
    tag = os.path.basename(os.path.dirname(f))
    with open(f) as fh:
        for r in csv.DictReader(fh):
            r = dict(r)
            r["slice"] = tag
            rows.append(r)
if rows:
    keys = ["slice"] + [k for k in rows[0] if k != "slice"]
    allk = list(dict.fromkeys(k for r in rows for k in keys + list(r)))
    with open(os.path.join(W, "all_calibration.csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=allk)
        w.writeheader()
        for r in rows:
            w.writerow(r)

    def f(r, k):
        try:
            return float(r.get(k, "nan"))
        except ValueError:
            return float("nan")

    p("## Calibration (sim vs live; signed error = (sim - live) / live, %)")
    p()
    p(
        "| slice | config | live TPOT ms | sim err % | sim+loop err % | stall live / sim ms | decisions "
        "| late agree | repeat spread % | noise |"
    )
    p("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        p(
            f"| {r['slice']} | {r['config']} | {f(r, 'live_tpot_mean_ms'):.3f} | {f(r, 'sim_err_mean_pct'):.1f} "
            f"| {f(r, 'simloop_err_mean_pct'):.1f} | {f(r, 'live_stall_ms'):.1f} / {f(r, 'sim_stall_ms'):.1f} "
            f"| {'identical' if r.get('decisions_identical') == 'True' else 'DIFFER ' + r.get('first_decision_difference', '')} "
            f"| {f(r, 'late_hit_step_agreement'):.2f} | {f(r, 'live_repeat_spread_pct'):.1f} "
            f"| {r.get('noise_verdict', '')} |"
        )
    p()
    groups = {}
    for r in rows:
        model = r["slice"].split("-")[1] if "-" in r["slice"] else "?"
        groups.setdefault(model, []).append(r)
    groups["ALL"] = rows
    p("| models | configs | median abs err sim (mean TPOT) | median abs err sim+loop | worst sim | decisions identical |")
    p("|---|---|---|---|---|---|")
    for g, rs in groups.items():
        e1 = [abs(f(r, "sim_err_mean_pct")) for r in rs if f(r, "sim_err_mean_pct") == f(r, "sim_err_mean_pct")]
        e2 = [abs(f(r, "simloop_err_mean_pct")) for r in rs if f(r, "simloop_err_mean_pct") == f(r, "simloop_err_mean_pct")]
        ok = all(r.get("decisions_identical") == "True" for r in rs)
        p(
            f"| {g} | {len(rs)} | {st.median(e1) if e1 else float('nan'):.1f} | "
            f"{st.median(e2) if e2 else float('nan'):.1f} | {max(e1) if e1 else float('nan'):.1f} | {ok} |"
        )
    p()
    p("Diagnostics per config (live copy ms / copy wait ms / loop residuals) are in all_calibration.csv.")
else:
    p("## Calibration: no calibration.csv was produced (see logs/cal-*.log)")
p()
p("Logs of every step, the profiles, the calibration reports (report.md, PNGs) and bench.json are in")
p("gpu_check.tar.gz.")
L[2:2] = NUMBERS  # right below the title
open(os.path.join(OUT, "summary.md"), "w").write("\n".join(L) + "\n")
print("\n".join(L))
PYEOF

# ------------------------------------------------------------------------------------------------
# 0. environment
# ------------------------------------------------------------------------------------------------
pick_python() {
  local c
  for c in ${PYTHON:-} python3 python; do
    [[ -z "$c" ]] && continue
    command -v "$c" >/dev/null 2>&1 || continue
    if "$c" -c "import torch" >/dev/null 2>&1; then echo "$c"; return 0; fi
  done
  for c in ${PYTHON:-} python3 python; do
    command -v "$c" >/dev/null 2>&1 && { echo "$c"; return 0; }
  done
  return 1
}

env_step() {
  set -x
  "$PY" --version
  "$PY" -m pip --version || true
  # torch: keep a CUDA build that is already there; else the project's pin. On Linux x86-64 PyPI's
  # default torch 2.13.0 wheel is the CUDA 13.0 build (nvidia-cuda-runtime 13.0.96, cudnn-cu13
  # 9.20, ~2.7 GB with its nvidia-* wheels; needs an NVIDIA driver >= 580). pyproject only asks
  # torch>=2.3; .ci/run pins torch==2.13.0 for the CPU CI.
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    if [[ "$DEVICE" != cpu ]]; then
      echo "no CUDA-capable torch importable: installing $TORCH_SPEC from the index"
      "$PY" -m pip install --quiet --retries 1 --timeout 20 "$TORCH_SPEC" || echo "torch install FAILED (no network?)"
    fi
  fi
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
  # runtime deps of moesim (pyproject [project.dependencies]) + pytest
  local missing=()
  local mod pkg
  for pair in simpy:simpy numpy:numpy pandas:pandas pyarrow:pyarrow matplotlib:matplotlib yaml:pyyaml rich:rich pytest:pytest; do
    mod=${pair%%:*} pkg=${pair##*:}
    "$PY" -c "import $mod" 2>/dev/null || missing+=("$pkg")
  done
  if (( ${#missing[@]} )); then
    echo "missing: ${missing[*]}"
    if [[ "$INSTALL" == 1 ]]; then
      if compgen -G "$WHEELS/*.whl" >/dev/null; then
        "$PY" -m pip install --quiet --no-index --find-links "$WHEELS" "${missing[@]}" ||
          "$PY" -m pip install --quiet --no-index --no-deps "$WHEELS"/*.whl || true
      fi
      for pkg in "${missing[@]}"; do
        "$PY" -c "import ${pkg/pyyaml/yaml}" 2>/dev/null || "$PY" -m pip install --quiet --retries 1 --timeout 10 "$pkg" || echo "could not install $pkg"
      done
    fi
  fi
  # the project itself: editable, no dependency resolution (which would try to move torch or
  # transformers); PYTHONPATH=$REPO is set anyway, so a failed install is not fatal
  if [[ "$INSTALL" == 1 ]]; then
    "$PY" -m pip install --quiet --no-deps --no-build-isolation -e "$REPO" || echo "editable install failed; using PYTHONPATH=$REPO"
  fi
  "$PY" -c "import moesim, simpy, torch; print('moesim from', moesim.__file__)"
  "$PY" -m moesim.cli.main --version
  "$PY" -m moesim.cli.main profile --help >/dev/null
  "$PY" -m moesim.cli.main calibrate --help >/dev/null
}

facts_step() {
  run_() { echo "== $*"; "$@" 2>&1 || echo "   (failed: rc=$?)"; }
  run_ nvidia-smi
  run_ nvidia-smi --query-gpu=name,driver_version,pci.bus_id,pcie.link.gen.current,pcie.link.gen.max,pcie.link.width.current,pcie.link.width.max,clocks.sm,clocks.max.sm,clocks.mem,power.draw,memory.used,memory.total --format=csv
  run_ nvidia-smi topo -m
  run_ cat /proc/driver/nvidia/version
  local bus
  bus=$(nvidia-smi --query-gpu=pci.bus_id --format=csv,noheader 2>/dev/null | head -1 | tr 'A-F' 'a-f')
  bus=${bus#0000}
  if [[ -n "$bus" ]]; then
    for f in numa_node current_link_speed current_link_width max_link_speed; do
      echo "== sysfs $f: $(cat /sys/bus/pci/devices/*"$bus"/$f 2>/dev/null)"
    done
  fi
  run_ lscpu
  run_ free -g
  run_ nproc
  echo "== ulimit -l: $(ulimit -l)"
  run_ uptime
  run_ df -h /tmp "$REPO"
  "$PY" - <<'PYEOF'
import torch
print("== torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("   device", p.name, "SMs", p.multi_processor_count, "mem GiB", round(p.total_memory / 2**30, 1),
          "L2 MiB", round(getattr(p, "L2_cache_size", 0) / 2**20, 1), "cc", f"{p.major}.{p.minor}")
    print("   cudnn", torch.backends.cudnn.version(), "threads", torch.get_num_threads())
PYEOF
}

PY=$(pick_python) || { say "no python found"; finish; exit 1; }
say "python: $PY   repo: $REPO   out: $OUT   work: $W   device: $DEVICE   budget: ${BUDGET_S}s"
MOESIM=("$PY" -m moesim.cli.main)
export PY DEVICE INSTALL WHEELS TORCH_SPEC REPO W CAL_LAYERS CAL_REPEATS
export -f env_step facts_step

step env 240 230 env_step
if ! "$PY" -c "import simpy" 2>/dev/null; then
  # No simpy and no way to install it (an offline machine without a carried wheel). SimExecutor
  # uses one SimPy process that only yields timeouts; this stand-in replays that exactly
  # (now += delay, the same float arithmetic). Flagged in the summary: carry simpy next time.
  mkdir -p "$W/shim/simpy"
  cat >"$W/shim/simpy/__init__.py" <<'PYEOF'
"""Stand-in for simpy written by gpu_check.sh (simpy could not be installed): one process, timeouts only."""
__version__ = "0-gpu_check-shim"


class _Timeout:
    __slots__ = ("delay",)

    def __init__(self, delay):
        if delay < 0:
            raise ValueError(f"negative delay {delay}")
        self.delay = delay


class Environment:
    def __init__(self, initial_time=0.0):
        self.now = initial_time
        self._procs = []

    def timeout(self, delay):
        return _Timeout(delay)

    def process(self, gen):
        if self._procs:
            raise NotImplementedError("gpu_check simpy shim: one process only")
        self._procs.append(gen)

    def run(self, until=None):
        if until is not None:
            raise NotImplementedError("gpu_check simpy shim: run(until=) not supported")
        for gen in self._procs:
            for ev in gen:
                if not isinstance(ev, _Timeout):
                    raise NotImplementedError("gpu_check simpy shim: timeouts only")
                self.now = self.now + ev.delay
        self._procs = []
PYEOF
  export PYTHONPATH="$PYTHONPATH:$W/shim"
  say "WARNING: simpy missing and not installable: using the gpu_check simpy stand-in ($W/shim); carry a simpy wheel in .whl/ next time"
  echo "simpy stand-in used" >"$W/SIMPY_SHIM_USED"
fi
if [[ "$DEVICE" != cpu ]] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  say "NO CUDA DEVICE VISIBLE TO TORCH: GPU steps will fail quickly; see logs/env.log"
fi
step facts 30 220 facts_step

# ------------------------------------------------------------------------------------------------
# 2. the GPU unit tests
# ------------------------------------------------------------------------------------------------
if [[ "$DEVICE" == cpu ]]; then
  step pytest 120 200 "$PY" -m pytest -m gpu tests/live -q -rs -p no:cacheprovider
else
  step pytest 120 200 "$PY" -m pytest -m gpu tests/live -v -rs -p no:cacheprovider \
    -o faulthandler_timeout=100 --junitxml="$W/pytest-gpu.xml"
fi

# ------------------------------------------------------------------------------------------------
# 3. raw bandwidth / op-split bench
# ------------------------------------------------------------------------------------------------
step bench 60 170 "$PY" "$W/bench.py" "$W/bench.json"

# ------------------------------------------------------------------------------------------------
# 4. profiles (the calibrations below reuse them)
# ------------------------------------------------------------------------------------------------
# Grids: calibration runs batch 1, prompt 256, <= 128 decode tokens: contexts 256..384.
PROF_ARGS=(--device "$DEVICE" --batches 1,2 --contexts 256,320,384 --tokens 1,2,4,8
  --repeats "$PROF_REPEATS" --warmup 3 --ssd-dir "$W/ssd")
if [[ "$QUICK" == 1 ]]; then
  PROF_ARGS=(--device "$DEVICE" --batches 1 --contexts 256,384 --tokens 1,2 --repeats 3 --warmup 1
    --sizes 1048576,12582912,17301504 --ssd-dir "$W/ssd"
    --ops attention,norm,gate,expert_ffn,shared_expert_ffn,cpu_expert_ffn,h2d_pinned,h2d_pageable,d2h,ssd_read,embedding,dense_ffn,lm_head,sampling)
fi
mkdir -p "$W/ssd"
if command -v nvidia-smi >/dev/null 2>&1; then  # clocks, power, PCIe rx/tx MB/s once a second
  nvidia-smi dmon -s puct -d 1 -o T >"$W/logs/dmon.log" 2>&1 &
  DMON_PID=$!
fi
step profile-olmoe 90 130 "${MOESIM[@]}" profile --model olmoe-1b-7b --out "$W/profile-olmoe.yaml" "${PROF_ARGS[@]}"
step profile-dsv2 90 100 "${MOESIM[@]}" profile --model deepseek-v2-lite --out "$W/profile-dsv2.yaml" "${PROF_ARGS[@]}"
rm -rf "$W/ssd"

# ------------------------------------------------------------------------------------------------
# 5. calibration: 2 models x 3 predictors x capacities, in slices of 3 configurations
# ------------------------------------------------------------------------------------------------
write_scenario() {  # name model trace capacity
  local trace=$REPO/traces/$3 prompt=256
  if [[ "$QUICK" == 1 ]]; then  # a loaded CPU cannot replay 128 real-shaped tokens per slice in time
    trace=$W/quick-$1.moetrace prompt=64
    local shape
    shape=$("$PY" -c "from moesim.traces import load_trace; m = load_trace('$REPO/traces/$3').meta
print(m.num_layers, m.num_experts, m.top_k, m.model)")
    read -r sL sE sK sM <<<"$shape"
    "$PY" -m moesim.cli.main trace synth --out "$trace" --sequences 1 --tokens "${QUICK_TOKENS:-12}" \
      --layers "$sL" --experts "$sE" --top-k "$sK" --model "$sM" --seed 0 --force \
      >>"$W/logs/quick-traces.log" 2>&1 || say "QUICK: trace synth for $1 failed (logs/quick-traces.log)"
  fi
  cat >"$W/sc-$1.yaml" <<EOF
# written by gpu_check.sh
name: gpu-$1
model:
  name: $2
trace:
  path: $trace
  max_sequences: $CAL_SEQS
hardware:
  profile: estimated:h200
predictor:
  name: none
  horizon: 1
cache:
  policy: lru
  capacity: $4
  scope: global
batch: 1
prompt_tokens: $prompt
seed: 0
EOF
}
write_scenario olmoe olmoe-1b-7b default.moetrace 64
write_scenario dsv2 deepseek-v2-lite deepseek-v2-lite-synth.moetrace 48

calib() {  # model-tag capacity
  local tag=$1 cap=$2
  local prof=()
  if [[ -s "$W/profile-$tag.yaml" ]]; then
    prof=(--profile "$W/profile-$tag.yaml")
  else
    prof=(--profile-repeats 5)   # no profile from step 4: calibrate measures its own (slower)
  fi
  "$PY" -m moesim.cli.main calibrate "$W/sc-$tag.yaml" --device "$DEVICE" --out "$W/cal-$tag-c$cap" "${prof[@]}" \
    --grid predictor.name=none,prev-token,oracle --set cache.capacity="$cap" \
    --layers "$CAL_LAYERS" --repeats "$CAL_REPEATS" --keep-runs
}
export -f calib
# capacity in experts over CAL_LAYERS layers x 64 experts: ~25% and ~50%, then ~75% if time is left
if [[ "$QUICK" == 1 ]]; then
  OL=(32 64) DS=(24 48) OL3=96 DS3=72
else
  OL=(64 128) DS=(48 96) OL3=192 DS3=160
fi
step cal-olmoe-c${OL[0]} "$CAL_CAP_S" 75 calib olmoe "${OL[0]}"
step cal-dsv2-c${DS[0]} "$CAL_CAP_S" 50 calib dsv2 "${DS[0]}"
step cal-olmoe-c${OL[1]} "$CAL_CAP_S" 25 calib olmoe "${OL[1]}"
step cal-dsv2-c${DS[1]} "$CAL_CAP_S" 10 calib dsv2 "${DS[1]}"
step cal-olmoe-c$OL3 "$CAL_CAP_S" 10 calib olmoe "$OL3"
step cal-dsv2-c$DS3 "$CAL_CAP_S" 10 calib dsv2 "$DS3"

finish
