"""LiveExecutor: the policy core driven by real PyTorch kernels and real expert copies.

It drives the ``PolicyCore`` through ``moesim.engine.protocol.layer_steps``, as ``SimExecutor`` does,
so both make the same decisions; only the clock differs. Per group: ``start_group`` -> evictions,
then prefetch loads. Per layer-step: pre-attention norm [-> ``pre_attention`` -> evictions, loads]
-> attention over the KV cache -> gate -> ``gate``: evictions (a not-started prefetch copy is cancelled, a started or finished one wasted);
present experts are hits if their copy had arrived when the gate decided, else late (a queued copy
is promoted ahead of queued prefetches); misses get demand copies (ahead of queued prefetches; a
started copy is never preempted); misses the miss handler sends to the CPU start there ->
``after_gate`` -> evictions, prefetch loads -> shared experts -> each routed expert as soon as its
copy has arrived, in arrival order (substitutes included) -> the CPU experts' results -> ``end_step``.

Devices:
- CUDA: compute on the current stream; one copy thread per copy engine (``hardware.copy_engines``),
  each feeding its own copy stream (pinned host memory, ``non_blocking`` copies, one CUDA event per
  copy); the host waits for the gate (an offloading runtime must read the routing before it can
  fetch), then the compute stream waits on each expert's copy event. Token and stall times come
  from CUDA events after the run.
- CPU: the device tier is a separate preallocated slot pool; the copy thread does real memory
  copies (torch releases the GIL inside ``copy_``) on a core of its own, so copies overlap compute.
  Times are ``perf_counter_ns``.

Timing classifications (hit vs late, wasted vs cancelled) depend on when copies finish, so they may
differ from the simulator's; the decision sequence (the core's log) may not. What the live run does
not reproduce is listed in docs/live-executor.md.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

from moesim.engine.live.copier import CANCELLED, DONE, CopyWorker, LiveTransfer, SlotHold
from moesim.engine.live.device import (
    DEFAULT_SWITCH_INTERVAL_S,
    LiveDevice,
    live_threads,
    pin_current_thread,
    resolve_device,
    torch_dtype,
)
from moesim.engine.live.experts import ExpertStore
from moesim.engine.live.kernels import ModelKernels, expert_numel, swiglu
from moesim.engine.live.warmup import PromptShapes
from moesim.engine.protocol import StepPhases, layer_steps
from moesim.engine.steps import TokenTally, append_token_row, prefetched_hit, step_shape
from moesim.errors import fail
from moesim.metrics.stats import RunStats
from moesim.models.spec import ModelSpec
from moesim.policies.core import PolicyCore
from moesim.policies.outputs import StepOutputs
from moesim.policies.pool import ExpertPool
from moesim.traces.replay import Group


@dataclass
class LiveOptions:
    device: str = "cpu"  # cpu | cuda | cuda:N
    threads: int | None = None  # compute threads (CPU default: cores - 1, leaving one to the copy thread)
    ssd_dir: str | None = None  # where the SSD tier's file goes (default: a temporary directory)
    switch_interval_s: float = DEFAULT_SWITCH_INTERVAL_S
    seed: int = 0
    record_steps: bool = False  # keep per-layer-step timestamps and every copy (calibration diagnostics)
    gc_off: bool = True  # no cyclic-GC pauses inside the timed loop (a runtime would not have them)
    keep_awake: bool = True  # CPU: keep the run's cores from idling (see device.keep_awake)
    realtime: bool = False  # SCHED_FIFO for the run's threads (see device.set_realtime)
    pin: bool = True  # CPU: compute and copy threads on separate cores (see device._split_cpus)

    def describe(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "threads": self.threads,
            "switch_interval_s": self.switch_interval_s,
            "keep_awake": self.keep_awake,
            "realtime": self.realtime,
            "pin": self.pin,
            "gc_off": self.gc_off,
            "seed": self.seed,
        }


@dataclass(slots=True)
class StepRecord:
    """One layer-step's host timestamps (ms); the profiler and calibration split the loop's time with it."""

    group: int
    step: int
    layer: int
    batch: int
    context: int
    counts: list[int]
    prev_end: float  # end of the previous layer-step of the group (t0 for its first)
    t0: float
    t_gate: float
    t_end: float
    stall: float
    misses: int
    copies_idle: bool  # no copy queued or running at the step's start and end


class _HostClock:
    __slots__ = ("origin",)

    def __init__(self) -> None:
        self.origin = time.perf_counter_ns()

    def __call__(self) -> float:
        return (time.perf_counter_ns() - self.origin) * 1e-6


class _CpuMarks:
    """Marks on the CPU are the time itself."""

    def __init__(self, clock: _HostClock):
        self.clock = clock

    def mark(self) -> Any:
        return self.clock()

    def value(self, m: Any) -> float:
        return float(m)


class _CudaMarks:
    """Marks are CUDA events on the compute stream, read after the run on the host clock's axis."""

    def __init__(self, clock: _HostClock, stream):
        self.stream = stream
        self.base = torch.cuda.Event(enable_timing=True)
        self.base.record(stream)
        self.base.synchronize()
        self.base_ms = clock()

    def mark(self) -> Any:
        evt = torch.cuda.Event(enable_timing=True)
        evt.record(self.stream)
        return evt

    def value(self, m: Any) -> float:
        return self.base_ms + float(self.base.elapsed_time(m))


@dataclass
class _Token:
    group: int
    step: int
    batch: int
    start: Any
    tally: TokenTally  # stall: CPU measured directly; CUDA filled in after the run
    end: Any = None
    churn: tuple[int, int, int] = (0, 0, 0)  # bytes copied, evictions, refetches


@dataclass
class _Pending:
    """Timing read after the run (CUDA stalls; slack needs copy end times)."""

    stalls: list = field(
        default_factory=list
    )  # (token index or -1 for the prompt, layer, ready mark, transfer)
    slack: list = field(default_factory=list)  # (t_gate, transfer)


class LiveExecutor(StepPhases):
    name = "live"
    # a layer-step's hits: arrived (slot, key) compute at once; the waiting ones after their copy
    _arrived: list[tuple[int, int]]
    _waiting: list[LiveTransfer]

    def __init__(
        self,
        model: ModelSpec,
        prompt_tokens: int,
        max_batch: int,
        max_context: int,
        options: LiveOptions | None = None,
        progress: Callable[[int], None] | None = None,
        copy_engines: int = 1,
        max_prompt: int = 0,
        prompt_shapes: PromptShapes | None = None,
    ):
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.max_batch = max(1, max_batch)
        self.max_context = max(1, max_context, max_prompt)
        self.max_prompt = max_prompt  # most prompt tokens in one group's prompt pass (0: no prefill)
        # the prompt passes' shapes to warm (moesim.engine.live.warmup); default: the longest only
        self.prompt_shapes = prompt_shapes or PromptShapes((max_prompt,) if max_prompt else ())
        self.options = options or LiveOptions()
        self.progress = progress
        self.lanes = max(1, copy_engines)
        self.dev: LiveDevice = resolve_device(self.options.device, self.options.threads, self.options.pin)
        self.dtype = torch_dtype(model.dtype, model.name)
        self.steps: list[StepRecord] = []
        self.transfers: list[LiveTransfer] = []
        self.setup_seconds = 0.0

    # ------------------------------------------------------------------------------------------
    def run(self, core: PolicyCore, groups: Iterable[Group]) -> RunStats:
        opts = self.options
        L, E = core.L, core.E
        setup0 = time.perf_counter()
        with live_threads(
            self.dev, opts.switch_interval_s, opts.keep_awake and not self.dev.is_cuda, opts.realtime
        ):
            self.kernels = ModelKernels(
                self.model, L, self.dev.torch_device, self.dtype, self.max_batch, self.max_context, opts.seed
            )
            min_slots = min(E, self.model.top_k * self.max_batch)
            self.store = ExpertStore(
                self.dev,
                self.dtype,
                L * E,
                expert_numel(self.model),
                core.pool.capacity,
                scratch_slots=2 * min_slots,  # streamed misses of this step and the next
                lanes=self.lanes,
                ssd=core.dram is not None,
                ssd_dir=opts.ssd_dir,
                seed=opts.seed,
            )
            try:
                self._warm_up(L)
                self.setup_seconds = time.perf_counter() - setup0
                return self._run(core, groups)
            finally:
                self.store.close()

    def _warm_up(self, L: int) -> None:
        """Run every kernel shape once so first-call costs (allocator growth, kernel selection) are
        not charged to the first token: each decode batch size, and each prompt pass's token count
        (``prompt_shapes``: the longest through every layer, the others through one, as a shape's
        first-call cost does not depend on the layer) and each routed expert's prompt token count."""
        K = self.kernels
        for b in range(1, self.max_batch + 1):
            h = K.hidden(0, b)
            for layer in range(L):
                x = K.norm(layer, h)
                a = K.attention(layer, x, min(self.max_context, self.prompt_tokens + 1))
                xg = K.gate(layer, h + a)
                K.shared(layer, xg)
                K.expert(self.store.slots[0], xg)
        shapes = self.prompt_shapes
        for i, P in enumerate(shapes.lengths):
            h = K.prompt_hidden(P)
            for layer in range(L if i == 0 else 1):
                xg = K.gate(layer, h + K.prefill_attention(layer, K.norm(layer, h)))
                K.shared(layer, xg)
        if shapes.expert_tokens:
            xg = K.prompt_hidden(shapes.expert_tokens[0])
            for n in shapes.expert_tokens:
                K.expert(self.store.slots[0], xg[:n])
        if self.dev.is_cuda:
            torch.cuda.synchronize(self.dev.torch_device)

    def _run(self, core: PolicyCore, groups: Iterable[Group]) -> RunStats:
        stats = RunStats(core.L)
        clock = _HostClock()
        self._clock = clock
        cuda = self.dev.is_cuda
        self._stream = torch.cuda.current_stream(self.dev.torch_device) if cuda else None
        self._marks = _CudaMarks(clock, self._stream) if cuda else _CpuMarks(clock)
        issue, complete = self.store.copy_functions()
        arrived = self.store.copy_arrived()  # CUDA: lanes issue copies back to back and poll them
        self._worker = CopyWorker(
            issue,
            clock,
            None if arrived is not None else complete,
            cpus=self.dev.copy_cpus,
            lanes=self.lanes,
            realtime=self.options.realtime,
            arrived=arrived,
        )
        # the host CPU's expert worker (Fiddler / KTransformers), beside the copy thread; started
        # on the first miss the handler sends to the CPU
        self._cpu_pool: ThreadPoolExecutor | None = None
        self._inflight: dict[int, LiveTransfer] = {}  # resident key -> the copy that loaded it
        self._slot_of: dict[int, int] = {}  # resident key -> its slot
        self._free = list(range(self.store.num_slots - 1, -1, -1))
        self._scratch_next = 0
        self._writer: dict[int, LiveTransfer] = {}  # slot -> the last copy into it
        self._hold: SlotHold | None = None  # the slots the current layer-step computes from
        self._held: set[int] = set()
        self._pool: ExpertPool | None = None
        self._h2d_bytes = 0
        self._ssd_bytes = 0
        self._tokens: list[_Token] = []
        self._ttft: list[tuple[Any, Any]] = []
        self._pending = _Pending()
        self.steps = []
        self.transfers = []
        gc_was = gc.isenabled()
        if self.options.gc_off:
            gc.collect()
            gc.disable()
        try:
            end_mark = None
            for group in groups:
                end_mark = self._group(core, group, stats)
                if self.progress is not None:
                    self.progress(group.num_tokens)
            self._finish(core, stats)
            self._worker.drain()
            if cuda:
                torch.cuda.synchronize(self.dev.torch_device)
        finally:
            self._worker.close()
            if self._cpu_pool is not None:
                self._cpu_pool.shutdown()
            if gc_was:
                gc.enable()
        self._resolve(stats)
        stats.makespan_ms = self._marks.value(end_mark) if end_mark is not None else 0.0
        stats.bytes_ssd_read = self._ssd_bytes
        return stats

    # -- residency and transfers ---------------------------------------------------------------
    def _sync_pool(self, core: PolicyCore) -> None:
        """A new pool (the first group, or ``reset_per_sequence``) drops every resident without
        evictions, as in SimExecutor (copies already queued still run), and may come with experts
        preloaded with the model: those are copied in now, untimed, before the group's first token."""
        if core.pool is self._pool:
            return
        self._pool = core.pool
        self._inflight.clear()
        self._slot_of.clear()
        self._free = list(range(self.store.num_slots - 1, -1, -1))
        if core.pool.preloaded:
            self._worker.drain()
            for key in core.pool.preloaded:
                slot = self._free.pop()
                self._slot_of[key] = slot
                self.store.load_now(key, slot)
            if self.dev.is_cuda:
                torch.cuda.synchronize(self.dev.torch_device)

    def _evict(self, core: PolicyCore, stats: RunStats) -> None:
        out = core.out
        if not out.evicted:
            return
        inflight, worker, free, E = self._inflight, self._worker, self._free, core.E
        unused = out.evicted_prefetch
        for key in out.evicted:
            free.append(self._slot_of.pop(key))  # a copy into it queues behind any still writing it
            tr = inflight.pop(key, None)
            if tr is not None and key in unused:
                self._h2d_bytes -= stats.unused_prefetch(key // E, tr.nbytes, worker.cancel(tr))

    def _submit(self, key: int, demand: bool, now: float, from_ssd: bool, resident: bool) -> LiveTransfer:
        if resident:
            slot = self._free.pop()
            self._slot_of[key] = slot
        else:  # streamed through (cache.bypass): a scratch slot, never resident
            scratch = self.store.scratch
            slot = scratch[self._scratch_next % len(scratch)]
            self._scratch_next += 1
        tr = LiveTransfer(key, slot, demand, self.store.nbytes, now, from_ssd)
        self._order_slot_write(tr)
        self._worker.submit(tr)
        if resident:
            self._inflight[key] = tr
        if from_ssd:
            self._ssd_bytes += tr.nbytes
        if self.options.record_steps:
            self.transfers.append(tr)
        return tr

    def _order_slot_write(self, tr: LiveTransfer) -> None:
        """A slot is freed at eviction even if a copy into it is still running (on another lane), and a
        substitute's slot is not pinned by the core: the new copy follows the earlier one and waits
        until the current step has computed from the slot."""
        slot = tr.slot
        prev = self._writer.get(slot)
        if prev is not None and prev.state not in (DONE, CANCELLED):
            tr.after.append(prev)
        if self._hold is not None and slot in self._held:
            tr.after.append(self._hold)
        self._writer[slot] = tr

    def _hold_step_slots(self) -> None:
        """Pin every slot the step computes from (hits, late hits, substitutes) until ``compute`` ends."""
        held = {slot for slot, _ in self._arrived}
        held.update(tr.slot for tr in self._waiting)
        self._held = held
        self._hold = SlotHold() if held else None

    def _release_step_slots(self) -> None:
        if self._hold is not None:
            self._worker.release(self._hold)
            self._hold = None
            self._held = set()

    def _issue_prefetches(self, core: PolicyCore, stats: RunStats) -> None:
        self._evict(core, stats)
        loads = core.out.loads
        if not loads:
            return
        now = self._clock()
        nbytes, E = self.store.nbytes, core.E
        ssd = core.out.load_from_ssd if core.dram is not None else None
        lb = stats.layer_bytes_prefetch
        for i, key in enumerate(loads):
            self._submit(key, False, now, bool(ssd and ssd[i]), True)
            lb[key // E] += nbytes
        self._h2d_bytes += nbytes * len(loads)

    def _finish(self, core: PolicyCore, stats: RunStats, keys: list[int] | None = None) -> None:
        """Prefetched experts never demanded (at the end, or dropped by a per-sequence reset) are wasted."""
        for key in core.finish() if keys is None else keys:
            tr = self._inflight.get(key)
            if tr is not None:
                stats.unused_prefetch(key // core.E, tr.nbytes, cancelled=False)

    def _cpu_expert(self, key: int, x: torch.Tensor) -> torch.Tensor:
        """One missed expert on the host CPU, from host memory (the miss handler's ``cpu``)."""
        K = self.kernels
        return swiglu(self.store.host[key], x, K.H, K.I)

    # -- one group: the protocol's phases on real kernels ---------------------------------------
    def _group(self, core: PolicyCore, group: Group, stats: RunStats):
        self._core, self._grp, self._stats = core, group, stats
        # what the group's first predictions copy and evict counts to its first step
        self._first_tally = TokenTally.start(self._h2d_bytes, core)
        for s in layer_steps(core, group, self):
            self._close_step(s)
        return self._last_mark

    def group_started(self, group: Group) -> None:
        core, stats = self._core, self._stats
        if core.out.flushed:
            self._finish(core, stats, core.out.flushed)
        self._sync_pool(core)
        self._issue_prefetches(core, stats)
        ps = group.prefill_steps
        first_batch = group.prompt_tokens if ps else (group.active[0] if group.active else 0)
        self._tok = _Token(group.index, -1 if ps else 0, first_batch, self._marks.mark(), self._first_tally)
        self._h: torch.Tensor | None = None  # the hidden state, set at the group's first layer-step
        self._last_mark = self._tok.start
        self._prev_end = 0.0

    def begin_step(self, s: int) -> None:
        group, L = self._grp, self._core.L
        self._layer = layer = s % L
        t, batch, context = step_shape(group, s, L, self.prompt_tokens)
        self._t, self._batch, self._context = t, batch, context
        if self.options.record_steps:
            self._t0 = self._clock()
            self._idle0 = self._worker.idle
        K = self.kernels
        if layer == 0:
            self._h = K.prompt_hidden(batch) if s < group.prefill_steps else K.hidden(t, batch)
        assert self._h is not None  # layer 0 comes first
        self._x = K.norm(layer, self._h)

    def prefetch_early(self, s: int) -> None:
        self._issue_prefetches(self._core, self._stats)

    def attend(self, s: int) -> None:
        K, layer = self.kernels, self._layer
        prefill = s < self._grp.prefill_steps
        assert self._h is not None  # set by begin_step
        h = self._h + (
            K.prefill_attention(layer, self._x) if prefill else K.attention(layer, self._x, self._context)
        )
        self._h = h
        self._xg = K.gate(layer, h)
        if self.dev.is_cuda:  # the host needs the routing before it may fetch: wait for the gate
            ge = torch.cuda.Event()
            ge.record(self._stream)
            ge.synchronize()
        self._t_gate = self._clock()

    def gated(self, s: int) -> None:
        """The gate's decisions: evictions, hit/late classification, demand copies, CPU experts."""
        core, stats, t_gate = self._core, self._stats, self._t_gate
        out = core.out
        self._evict(core, stats)
        self._late = self._classify_hits(out, t_gate, stats)
        miss_ssd = out.miss_from_ssd if core.dram is not None else None
        pool, waiting = core.pool, self._waiting
        for i, key in enumerate(out.miss_keys):
            waiting.append(self._submit(key, True, t_gate, bool(miss_ssd and miss_ssd[i]), key in pool))
        self._n_miss = n_miss = len(out.miss_keys)
        demand = n_miss * self.store.nbytes
        stats.layer_bytes_demand[self._layer] += demand
        self._h2d_bytes += demand
        counts_all = self._grp.counts
        self._cnt = dict(zip(self._grp.steps[s], counts_all[s])) if counts_all is not None else None
        self._cpu_jobs: list[tuple[int, Future]] = []
        if not core.simple:
            self._cpu_and_substitutes(out)
        self._hold_step_slots()

    def _classify_hits(self, out: StepOutputs, t_gate: float, stats: RunStats) -> int:
        """Hits whose copy has arrived compute at once (``_arrived``); the others are late: their
        copy is promoted and they wait for it (``_waiting``). Returns the late hits."""
        inflight, slot_of, worker = self._inflight, self._slot_of, self._worker
        cuda = self.dev.is_cuda
        slack = self._pending.slack
        hit_pf = out.hit_was_prefetch
        late = 0
        self._arrived = arrived = []  # (slot, key) ready now
        self._waiting = waiting = []
        for i, key in enumerate(out.hit_keys):
            tr = inflight.get(key)
            if tr is None:  # preloaded with the model: resident from the start
                arrived.append((slot_of[key], key))
                continue
            done = tr.state == DONE or (cuda and tr.issued and tr.end_evt.query())
            if done:
                arrived.append((tr.slot, key))
            else:
                worker.promote(tr)
                late += 1
                waiting.append(tr)
            if hit_pf[i]:
                prefetched_hit(stats, t_gate, tr.issue, not done)
                slack.append((t_gate, tr))
        return late

    def _cpu_and_substitutes(self, out: StepOutputs) -> None:
        """Missed experts the handler sends to the CPU start there; substitutes compute in place."""
        if out.cpu_keys and self._cpu_pool is None:
            self._cpu_pool = ThreadPoolExecutor(
                1,
                "moesim-cpu-expert",
                initializer=pin_current_thread,
                initargs=(self.dev.copy_cpus, self.options.realtime),
            )
        cnt, xg, cuda = self._cnt, self._xg, self.dev.is_cuda
        for key in out.cpu_keys:
            n = cnt[key] if cnt is not None else 1
            xh = xg[:n].to("cpu") if cuda else xg[:n]  # activations to the host
            assert self._cpu_pool is not None  # started above: there are CPU keys
            self._cpu_jobs.append((n, self._cpu_pool.submit(self._cpu_expert, key, xh)))
        for key in out.substitutes:
            tr = self._inflight.get(key)
            if tr is None or tr.state == DONE:
                self._arrived.append((self._slot_of[key], key))
            else:
                self._waiting.append(tr)

    def compute(self, s: int) -> None:
        """The planned copies, then expert compute: the shared block first (always resident), then
        routed experts by arrival; the layer also waits for the experts run on the CPU."""
        self._issue_prefetches(self._core, self._stats)
        K, layer, xg = self.kernels, self._layer, self._xg
        h = self._h
        assert h is not None  # set by begin_step
        sh = K.shared(layer, xg)
        if sh is not None:
            h += sh
        waiting = self._waiting
        if len(waiting) > 1:
            waiting.sort(key=self._worker.service_rank)
        cnt, cuda, store, stream = self._cnt, self.dev.is_cuda, self.store, self._stream
        slots = store.slots
        for slot, key in self._arrived:
            n = cnt.get(key, 1) if cnt is not None else 1
            h[:n] += K.expert(slots[slot], xg[:n])
            if cuda:
                store.mark_slot_read(slot, stream)
        stall = self._wait_for_copies(s, h)
        for n, fut in self._cpu_jobs:  # the layer's output also needs the experts run on the CPU
            w0 = self._clock()
            y = fut.result()
            stall += self._clock() - w0
            h[:n] += y.to(h.device, non_blocking=False) if cuda else y
        self._release_step_slots()
        self._stall = stall

    def _wait_for_copies(self, s: int, h: torch.Tensor) -> float:
        """The experts still copying, each as soon as its copy arrives. CPU: the wait is measured
        here; CUDA: the compute stream waits on the copy's event, the stall is read after the run."""
        K, xg, cnt, store, stream = self.kernels, self._xg, self._cnt, self.store, self._stream
        worker, clock, cuda = self._worker, self._clock, self.dev.is_cuda
        tok_index = len(self._tokens) if s >= self._grp.prefill_steps else -1
        slots = store.slots
        stall = 0.0
        for tr in self._waiting:
            n = cnt.get(tr.key, 1) if cnt is not None else 1
            if cuda:
                if tr.state != DONE:
                    ready = self._marks.mark()
                    worker.wait_issued(tr)
                    assert stream is not None  # the compute stream, on CUDA
                    stream.wait_event(tr.end_evt)
                    self._pending.stalls.append((tok_index, self._layer, ready, tr))
            elif tr.state != DONE:
                w0 = clock()
                worker.wait(tr)
                stall += clock() - w0
            h[:n] += K.expert(slots[tr.slot], xg[:n])
            if cuda:
                store.mark_slot_read(tr.slot, stream)
        return stall

    def _close_step(self, s: int) -> None:
        """After ``end_step``: the step's counts, its record, and at a token's end its row."""
        core, stats, group = self._core, self._stats, self._grp
        layer, late, stall = self._layer, self._late, self._stall
        stats.layer_late[layer] += late
        stats.layer_stall_ms[layer] += stall
        tok = self._tok
        tok.tally.add_step(len(group.steps[s]), len(core.out.hit_keys), late, stall)
        if self.options.record_steps:
            self._record_step(s)
        ps = group.prefill_steps
        if s == ps - 1:  # end of the prompt pass: the first token is out
            self._last_mark = self._marks.mark()
            self._ttft.append((tok.start, self._last_mark))
            stats.prefill_stall_ms += tok.tally.stall
            self._tok = _Token(
                group.index, 0, group.active[0] if group.active else 0, self._last_mark, self._new_tally()
            )
        elif layer == core.L - 1 and s >= ps:
            tok.end = self._last_mark = self._marks.mark()
            tok.churn = tok.tally.churn(self._h2d_bytes, core)
            self._tokens.append(tok)
            t = self._t
            tally = self._new_tally()
            if t + 1 < group.num_tokens:
                self._tok = _Token(group.index, t + 1, group.active[t + 1], self._last_mark, tally)

    def _new_tally(self) -> TokenTally:
        return TokenTally.start(self._h2d_bytes, self._core)

    def _record_step(self, s: int) -> None:
        group = self._grp
        counts_all = group.counts
        t_end = self._clock()
        self.steps.append(
            StepRecord(
                group.index,
                s,
                self._layer,
                self._batch,
                self._context,
                counts_all[s] if counts_all is not None else [1] * len(group.steps[s]),
                self._prev_end if s > 0 else self._t0,
                self._t0,
                self._t_gate,
                t_end,
                self._stall,
                self._n_miss,
                self._idle0 and self._worker.idle,
            )
        )
        self._prev_end = t_end

    # -- after the run -----------------------------------------------------------------------
    def _resolve(self, stats: RunStats) -> None:
        """Turn marks into milliseconds and fill the per-token rows."""
        marks = self._marks
        value = marks.value
        tokens = self._tokens
        if self.dev.is_cuda:
            for tok_index, layer, ready, tr in self._pending.stalls:
                stall = max(0.0, copy_end(marks, tr) - value(ready))
                stats.layer_stall_ms[layer] += stall
                if tok_index < 0:
                    stats.prefill_stall_ms += stall
                else:
                    tokens[tok_index].tally.stall += stall
        for t_gate, tr in self._pending.slack:
            stats.slack_samples.append(t_gate - copy_end(marks, tr))
        for start, end in self._ttft:
            stats.ttft_ms.append(value(end) - value(start))
        for tok in tokens:
            lat = value(tok.end) - value(tok.start)
            tok.tally.compute = lat - tok.tally.stall  # everything that is not waiting for weights
            append_token_row(stats, tok.group, tok.step, tok.batch, lat, tok.tally, tok.churn)


def copy_end(marks: Any, tr: LiveTransfer) -> float:
    """A copy's arrival on the executor's clock (CUDA: from its end event)."""
    if isinstance(marks, _CudaMarks) and tr.end_evt is not None:
        return marks.value(tr.end_evt)
    return tr.end


def check_live_model(model: ModelSpec) -> None:
    """Fail early, with one line, for a model the live executor cannot run."""
    dt = torch_dtype(model.dtype, model.name)
    plain = expert_numel(model) * torch.tensor([], dtype=dt).element_size()
    if model.expert_bytes != plain:
        fail(
            f"model {model.name}: one expert is {model.expert_bytes} bytes, but its gate/up/down weights at "
            f"{model.dtype} are {plain}; the live executor moves plain weights only (no biases or scales)"
        )
