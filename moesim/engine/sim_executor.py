"""SimExecutor: the policy core driven through SimPy virtual time.

Per MoE layer-step the GPU compute stream runs pre-attention norm, attention, post-attention norm +
gate, the shared experts, then each routed expert as soon as its weights are resident (experts that
are ready compute while missing ones still load). One copy engine serves the host-to-GPU link.
Streams and the link are busy-until timestamps, and the SimPy process yields once per layer-step,
the one decision point, instead of once per kernel or transfer.

The executor is the ``StepPhases`` of ``moesim.engine.protocol.layer_steps`` (docs/engine.md):
``gated`` (hit / late classification and demand copies at ``t_gate``), ``compute`` (planned copies,
then expert compute) and ``_close_token`` (after a token's last step has passed: its row).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import simpy

from moesim.engine.batching import ContinuousBatcher
from moesim.engine.copy_engine import PENDING, CopyEngine, FifoLink, SharedLinkEngine, Transfer
from moesim.engine.protocol import WAIT, StepPhases, layer_steps
from moesim.engine.steps import TokenTally, append_token_row, prefetched_hit, step_shape
from moesim.hardware.costs import CostModel
from moesim.metrics.stats import RunStats
from moesim.metrics.timeline import TimelineRecorder, TimelineWindow
from moesim.policies.core import PolicyCore
from moesim.policies.outputs import StepOutputs
from moesim.policies.predictors.base import Predictor
from moesim.traces.replay import Group


class SimExecutor(StepPhases):
    name = "sim"
    _h: float  # the host thread's busy-until (issue 13's host timeline)
    _cur: float

    def __init__(
        self,
        costs: CostModel,
        prompt_tokens: int,
        progress: Callable[[int], None] | None = None,
        timeline: bool | TimelineWindow = False,
        batcher: ContinuousBatcher | None = None,
    ):
        self.costs = costs
        self.prompt_tokens = prompt_tokens
        self.progress = progress
        self.timeline = timeline  # True: the whole run; a window: only its steps (and copies)
        self.batcher = batcher  # continuous batching: run() replays its one growing group

    def run(self, core: PolicyCore, groups: Iterable[Group]) -> RunStats:
        env = simpy.Environment()
        stats = RunStats(core.L)
        c = self.costs
        self._shared = c.shared_link  # lanes share the link among active copies (copy_engine.py)
        self._wb = c.writeback_ms  # write-back of each victim before its slot's load (0: off)
        self._engine: CopyEngine | SharedLinkEngine = (
            SharedLinkEngine(c.copy_engines, c.h2d_fixed_ms)
            if self._shared
            else CopyEngine(c.copy_engines, fifo=core.dram is None)
        )
        self._ssd = FifoLink()
        self._cpu_free = 0.0  # busy-until of the CPU expert worker
        self._inflight: dict[int, Transfer] = {}  # resident key -> the transfer that loaded it
        self._h2d_bytes = 0
        # Timeline recording (off on the hot path): compute slices as they happen, and every
        # Transfer object, whose lazily-decided times are final once the run ends.
        self._timeline: TimelineRecorder | None = None
        if self.timeline:
            window = self.timeline if isinstance(self.timeline, TimelineWindow) else None
            self._timeline = TimelineRecorder(window, revisits=self.batcher is not None)
        self._slices = self._timeline.slices if self._timeline is not None else None
        self._transfers = self._timeline.transfers if self._timeline is not None else None
        env.process(self._main(env, core, groups, stats))
        env.run()
        self._finish(core, env.now, stats)
        stats.makespan_ms = env.now
        if self._timeline is not None:
            self._engine.advance(float("inf"))
            stats.timeline = self._timeline.events(core.E)
        return stats

    def _main(self, env: simpy.Environment, core: PolicyCore, groups: Iterable[Group], stats: RunStats):
        if self.batcher is not None:
            groups = [self.batcher.group]
            self.batcher.extend(env.now)
        for group in groups:
            yield from self._group(env, core, group, stats)
            if self.progress is not None:
                self.progress(group.num_tokens)

    # ------------------------------------------------------------------------------------------
    def _issue_prefetches(self, core: PolicyCore, now: float, stats: RunStats) -> None:
        out = core.out
        if out.evicted_prefetch:
            self._evict(core, now, stats)
        engine, inflight = self._engine, self._inflight
        dur, nbytes, E = self.costs.h2d_ms, self.costs.expert_bytes, core.E
        lb = stats.layer_bytes_prefetch
        submit = engine.submit_prefetch
        if core.dram is None and self._transfers is None and not self._wb:  # the common case, kept short
            for key in out.loads:
                tr = Transfer(key, now, dur, False, nbytes)
                submit(tr)
                inflight[key] = tr
                lb[key // E] += nbytes
        else:
            ssd = out.load_from_ssd if core.dram is not None else None
            wb = len(out.evicted) if self._wb else 0  # the first loads reuse the victims' slots
            for i, key in enumerate(out.loads):
                tr = Transfer(
                    key,
                    now,
                    dur + self._wb if i < wb else dur,
                    False,
                    nbytes,
                    self._ssd_read(now, stats) if ssd and ssd[i] else 0.0,
                )
                submit(tr)
                inflight[key] = tr
                if self._transfers is not None:
                    self._transfers.append(tr)
                lb[key // E] += nbytes
        self._h2d_bytes += nbytes * len(out.loads)

    def _ssd_read(self, now: float, stats: RunStats) -> float:
        stats.bytes_ssd_read += self.costs.expert_bytes
        return self._ssd.read(now, self.costs.ssd_ms)

    def _evict(self, core: PolicyCore, now: float, stats: RunStats) -> None:
        """Evicted prefetches never demanded: cancelled if their copy has not started, else wasted.
        (Other victims need nothing: their transfer entry is replaced when they are loaded again.)"""
        engine, inflight, E = self._engine, self._inflight, core.E
        for key in core.out.evicted_prefetch:
            tr = inflight.pop(key)
            self._h2d_bytes -= stats.unused_prefetch(key // E, tr.nbytes, engine.cancel(tr, now))

    def _finish(self, core: PolicyCore, now: float, stats: RunStats, keys: list[int] | None = None) -> None:
        """Prefetched experts never demanded (at the end, or dropped by a per-sequence reset) are wasted."""
        for key in core.finish() if keys is None else keys:
            stats.unused_prefetch(key // core.E, self._inflight.pop(key).nbytes, cancelled=False)

    def _cpu_and_substitutes(
        self, core: PolicyCore, group: Group, s: int, t_gate: float, ready, stats
    ) -> float:
        """Missed experts run on the CPU worker (activations cross PCIe both ways); substitutes are
        resident experts computed in place of missed ones. Returns when the CPU results are back."""
        costs = self.costs
        counts = dict(zip(group.steps[s], group.counts[s])) if group.counts is not None else None
        done = t_gate
        ssd = core.out.cpu_from_ssd if core.dram is not None else None
        for i, key in enumerate(core.out.cpu_keys):
            tokens = counts[key] if counts else 1
            act = costs.activation_ms(tokens)
            avail = self._ssd_read(t_gate, stats) if ssd and ssd[i] else t_gate
            start = max(self._cpu_free, t_gate + act / 2, avail)
            self._cpu_free = start + costs.cpu_expert_ms(tokens)
            done = max(done, self._cpu_free + act / 2)
        for key in core.out.substitutes:
            tr = self._inflight.get(key)
            ready.append((tr.end if tr is not None and tr.end > t_gate else t_gate, key))
        return done

    def _record_compute(self, g, t, layer, t0, t_gate, t_shared, ready, counts_all, s, group) -> None:
        # Mirrors _compute_ready (same order and durations) without slowing it down.
        sl, rec = self._slices, self._timeline
        assert sl is not None and rec is not None  # called only when recording the timeline
        if not rec.step(g, t, t0):  # outside the window: nothing, and no copies once it has passed
            if rec.closed:
                self._transfers = None
            return
        args = {"group": g, "step": t, "layer": layer}
        sl.append(("compute", f"L{layer} attention+gate", t0, t_gate, args))
        if t_shared > t_gate:
            sl.append(("compute", f"L{layer} shared experts", t_gate, t_shared, args))
        cnt = dict(zip(group.steps[s], counts_all[s])) if counts_all is not None else None
        cur = t_shared
        for r, key in sorted(ready):
            start = r if r > cur else cur
            cur = start + self.costs.expert_ms(cnt.get(key, 1) if cnt else 1)
            sl.append(("compute", f"L{layer} E{key % self._E}", start, cur, dict(args, key=key, ready=r)))

    # -- one group: the protocol's phases on the virtual clock ----------------------------------
    def _group(self, env: simpy.Environment, core: PolicyCore, group: Group, stats: RunStats):
        self._start_group(env, core, group, stats)
        last = core.L - 1
        for s in layer_steps(core, group, self):
            if s == WAIT:  # an empty batch waits for the next arrival
                yield env.timeout(self._wait_ms)
                self._tok_start = env.now
                continue
            yield env.timeout(self._cur - self._t0)
            if self._layer == last:
                self._close_token(s)

    def _start_group(self, env: simpy.Environment, core: PolicyCore, group: Group, stats: RunStats) -> None:
        costs = self.costs
        self._env, self._core, self._grp, self._stats = env, core, group, stats
        self._L, self._E = core.L, core.E
        self._init_timed()
        self._ffn1 = costs.expert_ms(1)
        predictor = core.predictor
        self._timed_pred = type(predictor).latency_ms is not Predictor.latency_ms  # skip the call when free
        self._pred_on_gpu = predictor.runs_on == "gpu"
        # a GPU predictor firing after the gate runs on the compute stream before the experts
        self._pred_delays_experts = self._pred_on_gpu and not core.pre_attention_fires
        # batch 1, fetch-only, no timeline: the short path (ready times only; see _gate_fast)
        self._fast = group.counts is None and core.simple and self._slices is None
        # copies timed beyond one duration per copy take the general path
        self._fast = self._fast and not (self._shared or self._wb or self.costs.copy_issue_ms)
        self._former = self.batcher if group.dynamic else None
        self._blocks = self._former.blocks if self._former is not None else None
        # what the group's first predictions copy and evict counts to its first step
        self._tally = TokenTally.start(self._h2d_bytes, core)
        if self._timed:  # host or whole-token times take the general path
            self._fast = False

    def group_started(self, group: Group) -> None:
        core, now = self._core, self._env.now
        if core.out.flushed:
            self._finish(core, now, self._stats, core.out.flushed)
        self._issue_prefetches(core, now, self._stats)
        self._tok_start = now

    def more_steps(self) -> float | None:
        """Continuous batching: the next token-block, or how long until one can start."""
        former = self._former
        if former is None:
            return None
        now = self._env.now
        start_at = former.extend(now)
        if start_at is None:
            return None
        self._wait_ms = start_at - now if start_at > now else 0.0
        return self._wait_ms

    def begin_step(self, s: int) -> None:
        L = self._L
        self._layer = layer = s % L
        self._t0 = t0 = self._env.now
        if layer == 0:  # shape and costs hold for a whole token (or prompt pass)
            self._token_costs(s)
        if self._timed:
            self._t_norm = self._begin_timed(layer, t0)
        else:
            self._t_norm = t0 + self._c_norm

    def _token_costs(self, s: int) -> None:
        if self._blocks is not None:
            batch, context, t = self._blocks[s // self._L]
        else:
            t, batch, context = step_shape(self._grp, s, self._L, self.prompt_tokens)
        self._t, self._batch = t, batch
        costs = self.costs
        self._c_norm = costs.pre_attention_ms(batch)
        self._c_attn, self._c_gate = costs.attention_ms(batch, context), costs.gate_ms(batch)
        self._c_shared = costs.shared_ms(batch)
        self._pred_ms = self._core.predictor.latency_ms(batch, context) if self._timed_pred else 0.0
        if self._timed:
            self._timed_costs(batch, context)

    def prefetch_early(self, s: int) -> None:
        t = self._t_norm + self._pred_ms
        if self._host:  # the host reads the prediction back before it issues the copies
            t = self._h = max(self._h, t)
        self._issue_prefetches(self._core, t, self._stats)
        if self._pred_on_gpu:
            self._t_norm += self._pred_ms

    def gated(self, s: int) -> None:
        """The gate's decisions at ``t_gate`` (after attention and the router; the simulator needs no
        ``attend`` phase): evictions, hit/late classification, demand copies."""
        if self._timed:
            self._t_gate = t_gate = self._gate_timed()
        else:
            self._t_gate = t_gate = self._t_norm + self._c_attn + self._c_gate
        core, stats = self._core, self._stats
        out = core.out
        if out.evicted_prefetch:
            self._evict(core, t_gate, stats)
        self._engine.advance(t_gate)
        self._late = (
            self._gate_fast(out, t_gate, stats) if self._fast else self._gate_general(out, t_gate, stats)
        )
        demand = len(out.miss_keys) * self.costs.expert_bytes
        stats.layer_bytes_demand[self._layer] += demand
        self._h2d_bytes += demand
        self._cpu_done = t_gate
        if not core.simple:
            self._cpu_done = self._cpu_and_substitutes(core, self._grp, s, t_gate, self._ready, stats)

    def _gate_fast(self, out: StepOutputs, t_gate: float, stats: RunStats) -> int:
        """Batch 1, fetch-only, no timeline: every routed expert costs the same, so only the ready
        times after the gate matter; the others just queue their compute. Pinned to
        ``_gate_general`` by the timeline-on equals timeline-off test. Returns the late hits."""
        engine, inflight = self._engine, self._inflight
        hit_keys, hit_pf = out.hit_keys, out.hit_was_prefetch
        lead_append, slack_append = stats.lead_samples.append, stats.slack_samples.append
        late = n_done = 0
        waits: list[float] = []
        tr: Transfer | None
        if engine.idle(t_gate):  # every copy so far has arrived: no hit can be late
            n_done = len(hit_keys)
            if True in hit_pf:
                for key, pf in zip(hit_keys, hit_pf):
                    if pf:
                        tr = inflight[key]
                        lead_append(t_gate - tr.issue)
                        slack_append(t_gate - tr.end)
        else:
            for key, pf in zip(hit_keys, hit_pf):
                tr = inflight.get(key)
                if tr is None:  # preloaded with the model (e.g. pin-hot)
                    n_done += 1
                    continue
                if tr.state == PENDING:
                    engine.promote(tr, t_gate)
                    late += 1
                elif tr.end > t_gate:
                    late += 1
                end = tr.end
                if pf:  # prefetched_hit, inlined on this hot path
                    lead_append(t_gate - tr.issue)
                    slack_append(t_gate - end)
                    if end > t_gate:
                        stats.prefetch_late += 1
                if end > t_gate:
                    waits.append(end)
                else:
                    n_done += 1
        if out.miss_keys:
            engine.submit_demands(
                out.miss_keys, t_gate, self.costs.h2d_ms, self.costs.expert_bytes, inflight, waits
            )
        self._n_done, self._waits = n_done, waits
        return late

    def _gate_general(self, out: StepOutputs, t_gate: float, stats: RunStats) -> int:
        """The ready time of each routed expert, in access order (``self._ready``). Returns the late hits."""
        engine, inflight = self._engine, self._inflight
        slack_append = stats.slack_samples.append
        late = 0
        ready: list[tuple[float, int]] = []
        for key, pf in zip(out.hit_keys, out.hit_was_prefetch):
            tr = inflight.get(key)
            if tr is None:  # preloaded with the model (e.g. pin-hot): resident from the start
                ready.append((t_gate, key))
                continue
            if tr.state == PENDING:
                engine.promote(tr, t_gate)
                late += 1
            elif tr.end > t_gate:
                late += 1
            if pf:
                prefetched_hit(stats, t_gate, tr.issue, tr.end > t_gate)
                slack_append(t_gate - tr.end)
            ready.append((tr.end, key))
        self._demand_copies(out, t_gate, stats, ready)
        self._ready = ready
        return late

    def _demand_copies(self, out: StepOutputs, t_gate: float, stats: RunStats, ready: list) -> None:
        dur, nbytes = self.costs.h2d_ms, self.costs.expert_bytes
        schedule, inflight, transfers = self._engine.schedule, self._inflight, self._transfers
        miss_ssd = out.miss_from_ssd if self._core.dram is not None else None
        issued = t_gate + self.costs.copy_issue_ms  # the runtime's hand-off to its copy stream
        wb = len(out.evicted) if self._wb else 0
        for i, key in enumerate(out.miss_keys):
            nb = self._ssd_read(t_gate, stats) if miss_ssd and miss_ssd[i] else 0.0
            tr = Transfer(key, t_gate, dur + self._wb if i < wb else dur, True, nbytes, max(nb, issued))
            schedule(tr, t_gate)  # the engine has advanced to t_gate
            inflight[key] = tr
            if transfers is not None:
                transfers.append(tr)
            ready.append((tr.end, key))

    def compute(self, s: int) -> None:
        """The planned copies, then expert compute: the shared block first (always resident), then
        routed experts by readiness; the layer also waits for the experts computed on the CPU."""
        core, stats, t_gate = self._core, self._stats, self._t_gate
        out = core.out
        if out.loads or out.evicted_prefetch:
            self._issue_prefetches(core, t_gate + self._pred_ms, stats)
        if self._shared:  # copies issued since the gate may have slowed the ones it waits for
            self._ready = [(self._copy_end(r, key, t_gate), key) for r, key in self._ready]
        if self._host:  # the GPU continues from its gate; the shared block waits for its launch
            g_gate = self._g_gate + self._pred_ms if self._pred_delays_experts else self._g_gate
            cur = self._op(self._h_shared, self._c_shared, g_gate)
        else:
            t_experts = t_gate + self._pred_ms if self._pred_delays_experts else t_gate
            cur = t_experts + self._c_shared
        compute = cur - self._t0
        if self._fast:
            cur, stall, compute = self._compute_fast(cur, compute)
        else:
            if self._slices is not None:
                g = self._grp
                self._record_compute(
                    g.index, self._t, self._layer, self._t0, t_gate, cur, self._ready, g.counts, s, g
                )
            compute_experts = self._compute_host if self._host else self._compute_ready
            cur, stall, compute = compute_experts(s, cur, compute)
        if self._cpu_done > cur:  # the layer's output also needs the experts computed on the CPU
            stall += self._cpu_done - cur
            cur = self._cpu_done
        if self._whole and self._layer == self._L - 1:  # the token's tail: dense layers, LM head, sampling
            end = self._op(self._h_head, self._c_head, cur)
            compute += end - cur
            cur = end
        self._cur = cur
        late, layer = self._late, self._layer
        stats.layer_stall_ms[layer] += stall
        stats.layer_late[layer] += late
        tally = self._tally
        tally.add_step(len(self._grp.steps[s]), len(out.hit_keys), late, stall)
        tally.compute += compute

    def _copy_end(self, r: float, key: int, t_gate: float) -> float:
        """A ready time after the step's last copy was submitted (shared link: ends may move)."""
        tr = self._inflight.get(key)
        return tr.end if r > t_gate and tr is not None and tr.end > t_gate else r

    def _compute_fast(self, cur: float, compute: float) -> tuple[float, float, float]:
        """``_gate_fast``'s compute: the experts ready by the gate back to back, then the waits."""
        ffn = self._ffn1
        n_done, waits = self._n_done, self._waits
        stall = 0.0
        for _ in range(n_done):  # ready by the gate: computed first, back to back
            cur += ffn
        if waits:
            waits.sort()
            for r in waits:
                if r > cur:
                    stall += r - cur
                    cur = r
                cur += ffn
        compute += ffn * (n_done + len(waits))
        return cur, stall, compute

    def _compute_ready(self, s: int, cur: float, compute: float) -> tuple[float, float, float]:
        """Each routed expert as soon as it is ready, in ready order (tokens per expert if known)."""
        ready = self._ready
        ready.sort()
        stall = 0.0
        counts_all = self._grp.counts
        if counts_all is None:
            ffn = self._ffn1
            for r, _ in ready:
                if r > cur:
                    stall += r - cur
                    cur = r
                cur += ffn
            return cur, stall, compute + ffn * len(ready)
        cnt = dict(zip(self._grp.steps[s], counts_all[s]))
        expert_ms = self.costs.expert_ms
        for r, key in ready:
            if r > cur:
                stall += r - cur
                cur = r
            ffn = expert_ms(cnt.get(key, 1))  # a substitute not routed here: one token
            cur += ffn
            compute += ffn
        return cur, stall, compute

    # -- issue 13's timing model: host and GPU timelines, the whole token (off by default) -------
    def _init_timed(self) -> None:
        costs = self.costs
        self._host = getattr(costs, "host_timeline", False)  # ops also wait for the host to issue them
        self._whole = getattr(costs, "whole_token", False)  # embedding, dense layers, LM head, sampling
        self._timed = self._host or self._whole
        # busy-until of the host thread; 0 at a group's start is safe: every op starts after its
        # issue, so the host never ends a group ahead of the GPU (and layer 0 syncs them)
        self._h = 0.0

    def _timed_costs(self, batch: int, context: int) -> None:
        """The token's host times and whole-token GPU times (a token's shape holds for all its layers)."""
        c, host = self.costs, self.costs.host_ms
        self._h_norm = host("norm", tokens=batch)
        self._h_attn = host("attention", batch=batch, context=context)
        self._h_gate = host("gate", tokens=batch)
        self._h_shared = host("shared_expert_ffn", tokens=batch)
        if self._whole:
            self._c_emb = c.embedding_ms(batch)
            self._c_dense = c.dense_layer_ms(batch, context)
            self._c_head = c.head_ms(batch) + c.dense_after * self._c_dense
            self._h_emb = host("embedding", tokens=batch)
            self._h_dense = c.host_dense_layer_ms(batch, context)
            self._h_head = c.host_head_ms(batch) + c.dense_after * self._h_dense

    def _op(self, host_ms: float, gpu_ms: float, g: float) -> float:
        """One op on the GPU stream (free at ``g``): it starts once the host has issued it."""
        if not self._host:
            return g + gpu_ms
        h = self._h = self._h + host_ms
        return (g if g > h else h) + gpu_ms

    def _begin_timed(self, layer: int, t0: float) -> float:
        """Up to the end of the pre-attention norm: at a token's start the host has read the last
        token back and runs the token's own host time, then the embedding; dense layers before this
        MoE layer run first."""
        g = t0
        if layer == 0:
            if self._host:
                self._h = max(self._h, t0) + self.costs.token_overhead_ms
            if self._whole:
                g = self._op(self._h_emb, self._c_emb, g)
        if self._whole:
            for _ in range(self.costs.dense_before[layer]):
                g = self._op(self._h_dense, self._c_dense, g)
        return self._op(self._h_norm, self._c_norm, g)

    def _gate_timed(self) -> float:
        """Attention and the gate on the GPU; with a host timeline the host then blocks until the
        routing is read back and runs the layer's policy work: the decisions (and demand copies)
        happen at that host time, which is returned."""
        g = self._op(self._h_attn, self._c_attn, self._t_norm)
        self._g_gate = g = self._op(self._h_gate, self._c_gate, g)
        if not self._host:
            return g
        self._h = max(self._h, g) + self.costs.layer_overhead_ms
        return self._h

    def _compute_host(self, s: int, cur: float, compute: float) -> tuple[float, float, float]:
        """``_compute_ready`` with host launches: the host issues the experts in ready order without
        waiting for their copies (it runs ahead); each starts when its launch, the stream and its
        weights are all there. Waiting for a launch counts as compute, for weights as stall."""
        ready = self._ready
        ready.sort()
        stall = 0.0
        counts_all = self._grp.counts
        cnt = dict(zip(self._grp.steps[s], counts_all[s])) if counts_all is not None else None
        expert_ms, host_ms = self.costs.expert_ms, self.costs.host_ms
        h = self._h
        for r, key in ready:
            tokens = cnt.get(key, 1) if cnt else 1  # a substitute not routed here: one token
            ffn = expert_ms(tokens)
            h += host_ms("expert_ffn", tokens=tokens)
            free = cur if cur > h else h
            compute += free - cur + ffn
            if r > free:
                stall += r - free
                free = r
            cur = free + ffn
        self._h = h
        return cur, stall, compute

    def _close_token(self, s: int) -> None:
        """After the last layer-step of a token (or prompt pass) has passed: its row."""
        now, core, stats = self._env.now, self._core, self._stats
        if self._former is not None:
            self._former.block_done((s + 1) // self._L - 1, now)
        tally = self._tally
        if self._t < 0:  # end of a prompt pass: the first token is out
            if self._former is None:
                stats.ttft_ms.append(now - self._tok_start)
            stats.prefill_stall_ms += tally.stall
        else:
            churn = tally.churn(self._h2d_bytes, core)
            append_token_row(
                stats, self._grp.index, self._t, self._batch, now - self._tok_start, tally, churn
            )
        self._tok_start = now
        self._tally = TokenTally.start(self._h2d_bytes, core)
