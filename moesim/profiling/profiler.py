"""``moesim profile``: measure every latency table of a model on this device, with the live executor's
own kernels and copy engine, into a profile that ``moesim.hardware.load_profile`` reads.

Every point: warm-up calls, then ``repeats`` timed calls; the table holds the median and its
provenance the p10/p90 spread. Weights, KV caches and copy sources/destinations rotate over buffers
larger than the last-level cache, so no sample finds its data already cached by the previous one.

Ops (``moesim.hardware.ops``): attention (batch x context), norm, gate, expert_ffn, shared_expert_ffn
(models with shared experts), cpu_expert_ffn (one expert on the host CPU), h2d_pinned (through the
live copy thread: the copy engine's service time per copy, back to back), h2d_pageable, d2h,
ssd_read (file reads with the page cache dropped); plus the live loop's own costs (see
``moesim.profiling.overhead``): ``layer_overhead_pre_gate`` / ``layer_overhead_post_gate`` (batch)
and ``copy_handoff``; and the whole token's ``embedding``, ``dense_ffn``, ``lm_head`` and
``sampling`` (``moesim.profiling.token_ops``).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from moesim.engine.live.copier import CopyWorker, LiveTransfer
from moesim.engine.live.device import (
    LiveDevice,
    device_description,
    live_threads,
    resolve_device,
    torch_dtype,
)
from moesim.engine.live.experts import _bytes_view, drop_page_cache, write_expert_file
from moesim.engine.live.kernels import ModelKernels, expert_numel, fill_random, swiglu
from moesim.errors import fail
from moesim.hardware.profile import LatencyProfile
from moesim.hardware.table import Table
from moesim.models.spec import ModelSpec
from moesim.profiling.driver import driver_version
from moesim.profiling.timing import Sample, gpu_pass, time_calls

MiB = 1 << 20
# Rotating buffers span at least this much: more than any CPU's last-level cache we expect to meet
# (and than an H100's 50 MB L2), so each sample reads memory the previous ones did not warm.
DEFAULT_ROTATE_BYTES = 96 * MiB

# CUDA contention: expert FFNs are timed in chunks queued behind a sleep long enough to enqueue them
CONTENTION_CHUNK = 8
CONTENTION_LEAD_MS_PER_CALL = 0.05

ALL_OPS = (
    "attention",
    "norm",
    "gate",
    "expert_ffn",
    "shared_expert_ffn",
    "cpu_expert_ffn",
    "h2d_pinned",
    "h2d_pageable",
    "d2h",
    "ssd_read",
    "overhead",
    # the whole token (runtime.whole_token): moesim.profiling.token_ops
    "embedding",
    "dense_ffn",
    "lm_head",
    "sampling",
)


@dataclass
class ProfileSettings:
    batches: tuple[int, ...] = (1, 2, 4)
    contexts: tuple[int, ...] = (128, 512, 2048)
    tokens: tuple[int, ...] = (1, 2, 4, 8, 16)
    sizes: tuple[int, ...] | None = None  # bytes; default: 256 KiB .. 16 MiB and the expert's size
    repeats: int = 30
    warmup: int = 5
    ops: tuple[str, ...] = ALL_OPS
    rotate_bytes: int = DEFAULT_ROTATE_BYTES
    ssd_dir: str | None = None  # where ssd_read's file goes (default: the temp directory)
    overhead_tokens: int = 24  # decode tokens per batch size in the loop-overhead measurement
    threads: int | None = None
    keep_awake: bool = True  # CPU: as the live executor (moesim.engine.live.device.keep_awake)
    realtime: bool = False  # SCHED_FIFO for the measuring threads (moesim.engine.live.device.set_realtime)
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        for name in ("batches", "contexts", "tokens"):
            vals = getattr(self, name)
            if not vals or any(v < 1 for v in vals):
                fail(f"--{name}: give positive integers, e.g. --{name} 1,2,4")
        if self.sizes is not None and (not self.sizes or any(v < 1 for v in self.sizes)):
            fail("--sizes: give positive byte counts, e.g. --sizes 1048576,4194304")
        if self.repeats < 3:
            fail(f"--repeats: need at least 3 for a median and spread, got {self.repeats}")
        if self.warmup < 0:
            fail(f"--warmup: must be >= 0, got {self.warmup}")
        unknown = sorted(set(self.ops) - set(ALL_OPS))
        if unknown:
            fail(f"--ops: unknown op {unknown[0]!r}; choose from {', '.join(ALL_OPS)}")


def default_sizes(model: ModelSpec, cuda: bool) -> tuple[int, ...]:
    top = 64 if cuda else 16
    sizes = {MiB // 4 * 4**i for i in range(10) if MiB // 4 * 4**i <= top * MiB}
    sizes.add(int(model.expert_bytes))
    return tuple(sorted(sizes))


def _grid_sorted(vals: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sorted(set(int(v) for v in vals)))


class Profiler:
    def __init__(
        self,
        model: ModelSpec,
        device: str,
        settings: ProfileSettings | None = None,
        log: Callable[[str], None] | None = None,
    ):
        self.model = model
        self.s = settings or ProfileSettings()
        self.s.check()
        self.dev: LiveDevice = resolve_device(device, self.s.threads)
        self.dtype = torch_dtype(model.dtype, model.name)
        self.elem = torch.tensor([], dtype=self.dtype).element_size()
        self.log = log or (lambda msg: None)
        self.info = device_description(self.dev)
        if self.dev.is_cuda:
            self.info["driver"] = driver_version() or self.info["driver"]
        self.tables: list[Table] = []
        self.notes: list[str] = []

    # -- helpers --------------------------------------------------------------------------------
    def _prov(self, what: str, samples: list[Sample], **extra: Any) -> dict[str, Any]:
        info = self.info
        prov: dict[str, Any] = {
            "kind": "measured",
            "device": info["device"],
            "driver": info["driver"],
            "cuda": info["cuda"],
            "torch": info["torch"],
            "date": info["date"],
            "host": info["host"],
            "method": what,
            "statistic": "median",
            "repeats": self.s.repeats,
            "warmup": self.s.warmup,
            "p10_ms": [round(x.p10, 6) for x in samples],
            "p90_ms": [round(x.p90, 6) for x in samples],
        }
        prov.update(host_provenance(samples))
        prov.update(extra)
        return prov

    def _rotation(self, bytes_each: int) -> int:
        return max(2, min(512, -(-self.s.rotate_bytes // max(1, bytes_each))))

    def _time(self, fn: Callable[[int], object]) -> Sample:
        return time_calls(self.dev, fn, self.s.repeats, self.s.warmup)

    def _table1(self, op: str, axis: str, grid: tuple[int, ...], samples: list[Sample], what: str, **kw):
        self.tables.append(
            Table(
                op,
                (axis,),
                (tuple(float(g) for g in grid),),
                tuple(round(x.median, 6) for x in samples),
                self._prov(what, samples, **kw),
            )
        )

    # -- compute ops ----------------------------------------------------------------------------
    def _kernels(self, copies: int, max_batch: int, max_context: int) -> ModelKernels:
        return ModelKernels(
            self.model, copies, self.dev.torch_device, self.dtype, max_batch, max_context, self.s.seed
        )

    def measure_compute(self) -> None:
        s, m = self.s, self.model
        batches, contexts = _grid_sorted(s.batches), _grid_sorted(s.contexts)
        tokens = _grid_sorted(s.tokens)
        max_b = max(max(batches), max(tokens))
        H = m.hidden_size
        # A live layer-step finds its layer's attention weights and KV cache as the previous token
        # left them, L layer-steps ago: rotate over the model's L layers (at most 64) to match.
        copies = max(2, min(m.num_moe_layers, 64))
        K = self._kernels(copies, max_b, max(contexts))
        xs = fill_random(torch.empty(copies, max_b, H, device=self.dev.torch_device, dtype=self.dtype), 5)
        ops = set(s.ops)
        if "attention" in ops:
            rows = []
            for b in batches:
                row = []
                for c in contexts:
                    self.log(f"attention batch={b} context={c}")
                    row.append(self._time(lambda i, b=b, c=c: K.attention(i % copies, xs[i % copies, :b], c)))
                rows.append(row)
            self.tables.append(
                Table(
                    "attention",
                    ("batch", "context"),
                    (tuple(float(b) for b in batches), tuple(float(c) for c in contexts)),
                    tuple(tuple(round(x.median, 6) for x in r) for r in rows),
                    {
                        **self._prov(
                            "ModelKernels.attention: QKV projection, KV-cache write, "
                            "scaled_dot_product_attention over `context` cached positions, output projection; "
                            f"rotating over {copies} layers' weights and KV caches",
                            [],
                        ),
                        "p10_ms": [[round(x.p10, 6) for x in r] for r in rows],
                        "p90_ms": [[round(x.p90, 6) for x in r] for r in rows],
                        **host_provenance_2d(rows),
                    },
                )
            )
        if "norm" in ops:
            samples = [self._time(lambda i, b=b: K.norm(i % copies, xs[i % copies, :b])) for b in tokens]
            self._table1("norm", "tokens", tokens, samples, "ModelKernels.norm (RMSNorm)")
        if "gate" in ops:
            samples = [self._time(lambda i, b=b: K.gate(i % copies, xs[i % copies, :b])) for b in tokens]
            self._table1(
                "gate",
                "tokens",
                tokens,
                samples,
                "ModelKernels.gate: post-attention RMSNorm + router linear + softmax + top-k",
            )
        if "shared_expert_ffn" in ops and m.num_shared_experts > 0:
            samples = [self._time(lambda i, b=b: K.shared(i % copies, xs[i % copies, :b])) for b in tokens]
            self._table1("shared_expert_ffn", "tokens", tokens, samples, "ModelKernels.shared (SwiGLU)")
        numel = expert_numel(m)
        n_exp = self._rotation(numel * self.elem)
        if "expert_ffn" in ops:
            pool = fill_random(
                torch.empty(n_exp, numel, device=self.dev.torch_device, dtype=self.dtype), s.seed + 3
            )
            samples = [
                self._time(lambda i, b=b: K.expert(pool[i % n_exp], xs[i % copies, :b])) for b in tokens
            ]
            self._table1(
                "expert_ffn",
                "tokens",
                tokens,
                samples,
                f"ModelKernels.expert (SwiGLU) rotating over {n_exp} expert buffers",
            )
            del pool
        if "cpu_expert_ffn" in ops:
            host = fill_random(torch.empty(n_exp, numel, dtype=self.dtype), s.seed + 4)
            xh = fill_random(torch.empty(copies, max_b, H, dtype=self.dtype), 6)
            cpu_dev = resolve_device("cpu", self.dev.threads)
            samples = [
                time_calls(
                    cpu_dev,
                    lambda i, b=b: swiglu(host[i % n_exp], xh[i % copies, :b], H, m.expert_intermediate_size),
                    s.repeats,
                    s.warmup,
                )
                for b in tokens
            ]
            self._table1(
                "cpu_expert_ffn",
                "tokens",
                tokens,
                samples,
                f"SwiGLU on the host CPU ({self.dev.threads} threads) rotating over {n_exp} expert buffers",
            )

    # -- transfers ------------------------------------------------------------------------------
    def measure_transfers(self) -> None:
        s = self.s
        sizes = _grid_sorted(s.sizes or default_sizes(self.model, self.dev.is_cuda))
        ops = set(s.ops)
        top = max(sizes)
        n_src = self._rotation(top)
        dev = self.dev
        # one byte buffer per side, big enough for n_src copies of the largest size
        span = n_src * top
        pinned = torch.empty(span, dtype=torch.uint8, pin_memory=dev.is_cuda)
        fill_random(pinned.view(-1)[: span - span % 4].view(torch.float32), 7)
        n_dst = self._rotation(top)
        dst = torch.zeros(n_dst * top, dtype=torch.uint8, device=dev.torch_device)
        if "h2d_pinned" in ops:
            samples = [self._h2d_worker(pinned, dst, n_src, n_dst, size) for size in sizes]
            self._table1(
                "h2d_pinned",
                "bytes",
                sizes,
                samples,
                "the live copy thread serving back-to-back copies from "
                + (
                    "pinned host memory to the device (copy stream + event)"
                    if dev.is_cuda
                    else "host memory to the slot pool"
                )
                + ": time between consecutive arrivals (the copy engine's service time)",
            )
            if "overhead" in ops:
                self._handoff(pinned, dst, sizes)
                self._contention(pinned, dst, n_src, n_dst)
        if "h2d_pageable" in ops:
            pageable = torch.empty(span, dtype=torch.uint8)
            pageable.copy_(pinned)
            # A pageable copy blocks the host while it stages: time it whole, on the host.
            samples = [
                time_calls(
                    dev,
                    lambda i, z=size: dst[(i % n_dst) * z : (i % n_dst + 1) * z].copy_(
                        pageable[(i % n_src) * z : (i % n_src + 1) * z]
                    ),
                    s.repeats,
                    s.warmup,
                    queued=False,
                )
                for size in sizes
            ]
            self._table1("h2d_pageable", "bytes", sizes, samples, "copy_ from pageable host memory")
            del pageable
        if "d2h" in ops:
            samples = [
                self._time(
                    lambda i, z=size: pinned[(i % n_src) * z : (i % n_src + 1) * z].copy_(
                        dst[(i % n_dst) * z : (i % n_dst + 1) * z], non_blocking=dev.is_cuda
                    )
                )
                for size in sizes
            ]
            self._table1("d2h", "bytes", sizes, samples, "device to pinned host copy_")
        if "ssd_read" in ops:
            self._ssd(sizes)

    def _h2d_worker(self, src: torch.Tensor, dst: torch.Tensor, n_src: int, n_dst: int, size: int) -> Sample:
        """Back-to-back copies through the live copy thread: the interval between arrivals."""
        dev = self.dev
        origin = time.perf_counter_ns()

        def clock() -> float:
            return (time.perf_counter_ns() - origin) * 1e-6

        if dev.is_cuda:
            stream = torch.cuda.Stream(device=dev.torch_device)

            def issue(tr: LiveTransfer) -> None:
                with torch.cuda.stream(stream):
                    a = torch.cuda.Event(enable_timing=True)
                    b = torch.cuda.Event(enable_timing=True)
                    a.record(stream)
                    dst[tr.slot * size : (tr.slot + 1) * size].copy_(
                        src[tr.key * size : (tr.key + 1) * size], non_blocking=True
                    )
                    b.record(stream)
                tr.start_evt, tr.end_evt = a, b

            def complete(tr: LiveTransfer) -> None:
                tr.end_evt.synchronize()

            worker = CopyWorker(
                issue, clock, complete, name="profile", cpus=dev.copy_cpus, realtime=self.s.realtime
            )
        else:

            def issue(tr: LiveTransfer) -> None:
                dst[tr.slot * size : (tr.slot + 1) * size].copy_(src[tr.key * size : (tr.key + 1) * size])

            worker = CopyWorker(issue, clock, name="profile", cpus=dev.copy_cpus, realtime=self.s.realtime)
        try:
            n = self.s.warmup + self.s.repeats + 1
            trs = [LiveTransfer(i % n_src, i % n_dst, False, size, 0.0) for i in range(n)]
            for tr in trs:
                worker.submit(tr)
            worker.drain()
        finally:
            worker.close()
        ends = [tr.end for tr in trs[self.s.warmup :]]
        return Sample.of([b - a for a, b in zip(ends, ends[1:])])

    def _contention(self, src: torch.Tensor, dst: torch.Tensor, n_src: int, n_dst: int) -> None:
        """Diagnostics: expert copies while the compute thread runs expert FFNs, and the reverse.

        The simulator takes copies and compute to be independent; on a CPU "device" they share
        memory bandwidth (on a GPU, HBM and the host link). Not read by the engine."""
        m, dev = self.model, self.dev
        size = int(m.expert_bytes)
        numel = expert_numel(m)
        n_exp = self._rotation(size)
        pool = fill_random(torch.empty(n_exp, numel, device=dev.torch_device, dtype=self.dtype), 11)
        x = fill_random(torch.empty(1, m.hidden_size, device=dev.torch_device, dtype=self.dtype), 12)
        H, inter = m.hidden_size, m.expert_intermediate_size
        origin = time.perf_counter_ns()

        def clock() -> float:
            return (time.perf_counter_ns() - origin) * 1e-6

        def issue(tr: LiveTransfer) -> None:
            dst[tr.slot * size : (tr.slot + 1) * size].copy_(
                src[tr.key * size : (tr.key + 1) * size], non_blocking=dev.is_cuda
            )
            if dev.is_cuda:
                torch.cuda.current_stream(dev.torch_device).synchronize()

        ffn: list[float] = []
        n = self.s.warmup + self.s.repeats + 1
        stream = torch.cuda.Stream(device=dev.torch_device) if dev.is_cuda else None

        def cuda_issue(tr: LiveTransfer) -> None:
            with torch.cuda.stream(stream):
                issue(tr)

        worker = CopyWorker(
            cuda_issue if dev.is_cuda else issue,
            clock,
            name="contention",
            cpus=dev.copy_cpus,
            realtime=self.s.realtime,
        )
        try:
            trs = [LiveTransfer(i % n_src, i % n_dst, False, size, 0.0) for i in range(n)]
            for tr in trs:
                worker.submit(tr)
            i = 0
            while not worker.idle:
                calls = range(i, i + CONTENTION_CHUNK)
                ffn.extend(self._ffn_chunk(lambda j: swiglu(pool[j % n_exp], x, H, inter), calls, clock))
                i += CONTENTION_CHUNK
            worker.drain()
        finally:
            worker.close()
        ends = [tr.end for tr in trs[self.s.warmup :]]
        copies = Sample.of([b - a for a, b in zip(ends, ends[1:])])
        during = Sample.of(ffn[self.s.warmup :] or ffn)
        for op, axis, val, smp, what in (
            (
                "h2d_pinned_during_compute",
                "bytes",
                size,
                copies,
                "h2d_pinned while the compute thread runs expert FFNs back to back",
            ),
            ("expert_ffn_during_copies", "tokens", 1, during, "expert_ffn (1 token) while copies stream"),
        ):
            self.tables.append(
                Table(
                    op,
                    (axis,),
                    ((float(val),),),
                    (round(smp.median, 6),),
                    {**self._prov(f"diagnostic, not read by the engine: {what}", [smp])},
                )
            )

    def _ffn_chunk(
        self, fn: Callable[[int], object], calls: range, clock: Callable[[], float]
    ) -> list[float]:
        """Each compute call's time while copies run. CUDA: events on the compute stream only (a
        device-wide sync would also wait for the copy stream and book the copy as contention), the
        calls queued back to back behind a short sleep so each interval holds one call's kernels,
        not the host's launch gaps."""
        if not self.dev.is_cuda:
            out = []
            for j in calls:
                t = clock()
                fn(j)
                out.append(clock() - t)
            return out
        stream = torch.cuda.current_stream(self.dev.torch_device)
        lead_ms = CONTENTION_LEAD_MS_PER_CALL * len(calls)
        return gpu_pass(stream, fn, calls, lead_ms, torch.cuda)[0]

    def _handoff(self, src: torch.Tensor, dst: torch.Tensor, sizes: tuple[int, ...]) -> None:
        """Thread handoffs of an isolated copy: submit -> start and arrival -> waiter resumes."""
        size = min(sizes)
        origin = time.perf_counter_ns()

        def clock() -> float:
            return (time.perf_counter_ns() - origin) * 1e-6

        if self.dev.is_cuda:
            stream = torch.cuda.Stream(device=self.dev.torch_device)

            def issue(tr: LiveTransfer) -> None:
                with torch.cuda.stream(stream):
                    dst[:size].copy_(src[:size], non_blocking=True)
                    e = torch.cuda.Event()
                    e.record(stream)
                tr.end_evt = e

            worker = CopyWorker(issue, clock, lambda tr: tr.end_evt.synchronize(), name="handoff")
        else:
            worker = CopyWorker(
                lambda tr: dst[:size].copy_(src[:size]),
                clock,
                name="handoff",
                cpus=self.dev.copy_cpus,
                realtime=self.s.realtime,
            )
        samples = []
        try:
            for i in range(self.s.warmup + self.s.repeats):
                time.sleep(2e-4)  # let the copy thread go to sleep, as it does between bursts
                tr = LiveTransfer(0, 0, True, size, clock())
                t0 = clock()
                worker.submit(tr)
                worker.wait(tr)
                t1 = clock()
                if i >= self.s.warmup:
                    samples.append((t1 - t0) - (tr.end - tr.start))
        finally:
            worker.close()
        smp = Sample.of(samples)
        self.tables.append(
            Table(
                "copy_handoff",
                (),
                (),
                round(max(0.0, smp.median), 6),
                {
                    **self._prov(
                        "round trip of an isolated copy through the live copy thread minus the copy itself: "
                        "waking the copy thread plus waking the waiting compute thread",
                        [],
                    ),
                    "p10_ms": round(smp.p10, 6),
                    "p90_ms": round(smp.p90, 6),
                },
            )
        )

    def _ssd(self, sizes: tuple[int, ...]) -> None:
        top = max(sizes)
        n = max(2, min(64, -(-self.s.rotate_bytes // top)))
        directory = self.s.ssd_dir or tempfile.gettempdir()
        Path(directory).mkdir(parents=True, exist_ok=True)
        fd_path = Path(directory) / f".moesim-profile-{os.getpid()}.bin"
        numel = top // 4
        write_expert_file(fd_path, n, numel, torch.float32, 9)
        buf = torch.empty(top, dtype=torch.uint8, pin_memory=self.dev.is_cuda)
        view = _bytes_view(buf)
        fd = os.open(fd_path, os.O_RDONLY)
        stride = numel * 4
        try:
            samples = []
            for size in sizes:

                def read(i: int, z: int = size) -> None:
                    off = (i % n) * stride
                    os.preadv(fd, [view[:z]], off)
                    drop_page_cache(fd, off, z)

                samples.append(
                    time_calls(resolve_device("cpu", self.dev.threads), read, self.s.repeats, self.s.warmup)
                )
        finally:
            os.close(fd)
            fd_path.unlink(missing_ok=True)
        self._table1(
            "ssd_read",
            "bytes",
            sizes,
            samples,
            f"os.preadv from a file in {directory} into a host buffer, page cache dropped after each read "
            "(posix_fadvise DONTNEED; on tmpfs this measures memory, not a disk)",
            ssd_dir=str(directory),
        )

    # -- everything -----------------------------------------------------------------------------
    def run(self) -> LatencyProfile:
        t0 = time.perf_counter()
        with live_threads(
            self.dev, awake=self.s.keep_awake and not self.dev.is_cuda, realtime=self.s.realtime
        ):
            self.measure_compute()
            from moesim.profiling.token_ops import measure_token_ops

            measure_token_ops(self)
            self.measure_transfers()
            profile = self._profile()
            if "overhead" in self.s.ops:
                from moesim.profiling.overhead import measure_loop_overhead

                self.log("live loop overhead")
                self.tables.extend(measure_loop_overhead(self, profile))
                profile = self._profile()
        self.seconds = time.perf_counter() - t0
        return self._profile()

    def _profile(self) -> LatencyProfile:
        info = self.info
        prov = {
            "kind": "measured",
            "tool": "moesim profile",
            "device": info["device"],
            "driver": info["driver"],
            "cuda": info["cuda"],
            "torch": info["torch"],
            "python": info["python"],
            "date": info["date"],
            "host": info["host"],
            "platform": info["platform"],
            "cpu": info["cpu"],
            "compute_threads": self.dev.threads,
            "keep_awake": self.s.keep_awake,
            "realtime": self.s.realtime,
            "model": self.model.name,
            "dtype": self.model.dtype,
            "settings": {
                "batches": list(self.s.batches),
                "contexts": list(self.s.contexts),
                "tokens": list(self.s.tokens),
                "sizes": list(self.s.sizes) if self.s.sizes else None,
                "repeats": self.s.repeats,
                "warmup": self.s.warmup,
                "rotate_bytes": self.s.rotate_bytes,
            },
        }
        name = f"measured:{self.dev.kind}:{self.model.name}"
        return LatencyProfile(
            name, info["device"], self.tables, model=self.model.name, provenance=prov, extrapolation="flag"
        )


def host_provenance(samples: list[Sample]) -> dict[str, Any]:
    """CUDA: the host issue time beside the table's GPU time, and whether every GPU pass kept its
    queue busy. Empty on CPU, where the table's time is the host's."""
    if not samples or any(x.host is None for x in samples):
        return {}
    return {
        "timing": "gpu: events between back-to-back calls queued behind a sleep; host: perf_counter "
        "around each call's launch on a drained queue (issue time)",
        "host_median_ms": [round(x.host.median, 6) for x in samples],  # type: ignore[union-attr]
        "host_p10_ms": [round(x.host.p10, 6) for x in samples],  # type: ignore[union-attr]
        "host_p90_ms": [round(x.host.p90, 6) for x in samples],  # type: ignore[union-attr]
        "gpu_queue_busy": all(bool(x.busy) for x in samples),
    }


def host_provenance_2d(rows: list[list[Sample]]) -> dict[str, Any]:
    per_row = [host_provenance(r) for r in rows]
    if not per_row or not all(per_row):
        return {}
    out: dict[str, Any] = {"timing": per_row[0]["timing"]}
    for key in ("host_median_ms", "host_p10_ms", "host_p90_ms"):
        out[key] = [r[key] for r in per_row]
    out["gpu_queue_busy"] = all(r["gpu_queue_busy"] for r in per_row)
    return out


def profile_device(
    model: ModelSpec, device: str, settings: ProfileSettings | None = None, log=None
) -> LatencyProfile:
    return Profiler(model, device, settings, log).run()
