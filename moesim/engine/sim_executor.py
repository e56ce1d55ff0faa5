"""SimExecutor: the policy core driven through SimPy virtual time.

Per MoE layer-step the GPU compute stream runs pre-attention norm, attention, post-attention norm +
gate, the shared experts, then each routed expert as soon as its weights are resident (experts that
are ready compute while missing ones still load). One copy engine serves the host-to-GPU link.
Streams and the link are busy-until timestamps, and the SimPy process yields once per layer-step,
the one decision point, instead of once per kernel or transfer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import simpy

from moesim.engine.batching import ContinuousBatcher
from moesim.engine.copy_engine import PENDING, CopyEngine, FifoLink, Transfer
from moesim.engine.costs import CostModel
from moesim.metrics.stats import RunStats
from moesim.metrics.timeline import build_timeline
from moesim.policies.core import PolicyCore
from moesim.policies.predictors.base import Predictor
from moesim.traces.replay import Group


class SimExecutor:
    name = "sim"

    def __init__(
        self,
        costs: CostModel,
        prompt_tokens: int,
        progress: Callable[[int], None] | None = None,
        timeline: bool = False,
        batcher: ContinuousBatcher | None = None,
    ):
        self.costs = costs
        self.prompt_tokens = prompt_tokens
        self.progress = progress
        self.timeline = timeline
        self.batcher = batcher  # continuous batching: run() replays its one growing group

    def run(self, core: PolicyCore, groups: Iterable[Group]) -> RunStats:
        env = simpy.Environment()
        stats = RunStats(core.L)
        self._engine = CopyEngine(self.costs.copy_engines, fifo=core.dram is None)
        self._ssd = FifoLink()
        self._cpu_free = 0.0  # busy-until of the CPU expert worker
        self._inflight: dict[int, Transfer] = {}  # resident key -> the transfer that loaded it
        self._h2d_bytes = 0
        # Timeline recording (off on the hot path): compute slices as they happen, and every
        # Transfer object, whose lazily-decided times are final once the run ends.
        self._slices: list[tuple] | None = [] if self.timeline else None
        self._transfers: list[Transfer] | None = [] if self.timeline else None
        env.process(self._main(env, core, groups, stats))
        env.run()
        self._finish(core, env.now, stats)
        stats.makespan_ms = env.now
        if self.timeline:
            self._engine.advance(float("inf"))
            stats.timeline = build_timeline(self._slices, self._transfers, core.E)
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
        if core.evicted_prefetch:
            self._evict(core, now, stats)
        engine, inflight = self._engine, self._inflight
        dur, nbytes, E = self.costs.h2d_ms, self.costs.expert_bytes, core.E
        lb = stats.layer_bytes_prefetch
        submit = engine.submit_prefetch
        if core.dram is None and self._transfers is None:  # the common case, kept short
            for key in core.loads:
                tr = Transfer(key, now, dur, False, nbytes)
                submit(tr)
                inflight[key] = tr
                lb[key // E] += nbytes
        else:
            ssd = core.load_from_ssd if core.dram is not None else None
            for i, key in enumerate(core.loads):
                tr = Transfer(
                    key, now, dur, False, nbytes, self._ssd_read(now, stats) if ssd and ssd[i] else 0.0
                )
                submit(tr)
                inflight[key] = tr
                if self._transfers is not None:
                    self._transfers.append(tr)
                lb[key // E] += nbytes
        self._h2d_bytes += nbytes * len(core.loads)

    def _ssd_read(self, now: float, stats: RunStats) -> float:
        stats.bytes_ssd_read += self.costs.expert_bytes
        return self._ssd.read(now, self.costs.ssd_ms)

    def _evict(self, core: PolicyCore, now: float, stats: RunStats) -> None:
        """Evicted prefetches never demanded: cancelled if their copy has not started, else wasted.
        (Other victims need nothing: their transfer entry is replaced when they are loaded again.)"""
        engine, inflight, E = self._engine, self._inflight, core.E
        for key in core.evicted_prefetch:
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
        ssd = core.cpu_from_ssd if core.dram is not None else None
        for i, key in enumerate(core.cpu_keys):
            tokens = counts[key] if counts else 1
            act = costs.activation_ms(tokens)
            avail = self._ssd_read(t_gate, stats) if ssd and ssd[i] else t_gate
            start = max(self._cpu_free, t_gate + act / 2, avail)
            self._cpu_free = start + costs.cpu_expert_ms(tokens)
            done = max(done, self._cpu_free + act / 2)
        for key in core.substitutes:
            tr = self._inflight.get(key)
            ready.append((tr.end if tr is not None and tr.end > t_gate else t_gate, key))
        return done

    def _record_compute(self, g, t, layer, t0, t_gate, t_shared, ready, counts_all, s, group) -> None:
        # Mirrors the compute loop below (same order and durations) without slowing it down.
        sl = self._slices
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

    def _group(self, env: simpy.Environment, core: PolicyCore, group: Group, stats: RunStats):
        costs = self.costs
        engine, inflight = self._engine, self._inflight
        L = core.L
        dur, nbytes = costs.h2d_ms, costs.expert_bytes
        expert_ms = costs.expert_ms
        ffn1 = expert_ms(1)
        schedule = engine.schedule
        counts_all = group.counts
        layer_stall, layer_late, layer_bdem = stats.layer_stall_ms, stats.layer_late, stats.layer_bytes_demand
        pre_fires = core.pre_attention_fires
        predictor = core.predictor
        timed_pred = type(predictor).latency_ms is not Predictor.latency_ms  # skip the call when free
        pred_on_gpu = predictor.runs_on == "gpu"
        hit_keys, hit_pf, miss_keys = core.hit_keys, core.hit_was_prefetch, core.miss_keys
        lead_append, slack_append = stats.lead_samples.append, stats.slack_samples.append
        simple = core._simple
        fast = counts_all is None and simple and self._slices is None

        self._E = core.E
        # what the group's first predictions copy and evict counts to its first step
        tok_bytes0 = self._h2d_bytes
        tok_ev0, tok_rf0 = core.evictions, core.refetches
        core.start_group(group)
        if core.flushed:
            self._finish(core, env.now, stats, core.flushed)
        self._issue_prefetches(core, env.now, stats)
        n_steps = len(group.steps)
        tok_start = env.now
        tok_stall = tok_compute = 0.0
        tok_hits = tok_late = tok_miss = 0
        ps = group.prefill_steps
        former = self.batcher if group.dynamic else None
        blocks = former.blocks if former is not None else None
        s = 0
        while True:
            if s == n_steps:
                if former is None:
                    break
                start_at = former.extend(env.now)
                if start_at is None:
                    break
                if start_at > env.now:  # an empty batch waits for the next arrival
                    yield env.timeout(start_at - env.now)
                    tok_start = env.now
                    continue
                n_steps = len(group.steps)
            layer = s % L
            t0 = env.now
            if blocks is not None:
                batch, context, t = blocks[s // L]
            elif s < ps:
                # the prompt pass: every prompt token at once, attending to half the prompt on average
                t = -1
                batch = group.prompt_tokens
                context = max(1, batch // 2)
            else:
                t = (s - ps) // L
                batch = group.active[t]
                context = self.prompt_tokens + t
            if layer == 0:  # batch and context hold for a whole token (or prompt pass)
                c_norm = costs.pre_attention_ms(batch)
                c_attn, c_gate = costs.attention_ms(batch, context), costs.gate_ms(batch)
                c_shared = costs.shared_ms(batch)
                pred_ms = predictor.latency_ms(batch, context) if timed_pred else 0.0
            t_norm = t0 + c_norm
            if pre_fires:
                core.pre_attention(s)
                self._issue_prefetches(core, t_norm + pred_ms, stats)
                if pred_on_gpu:
                    t_norm += pred_ms
            t_gate = t_norm + c_attn + c_gate

            core.gate(s)
            if core.evicted_prefetch:
                self._evict(core, t_gate, stats)
            engine.advance(t_gate)
            late = 0
            if fast:
                # Batch 1, fetch-only, no timeline: every routed expert costs the same, so only the
                # ready times after the gate matter; the others just queue their compute.
                n_done = 0
                waits: list[float] = []
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
                        if pf:
                            lead_append(t_gate - tr.issue)
                            slack_append(t_gate - end)
                            if end > t_gate:
                                stats.prefetch_late += 1
                        if end > t_gate:
                            waits.append(end)
                        else:
                            n_done += 1
                if miss_keys:
                    engine.submit_demands(miss_keys, t_gate, dur, nbytes, inflight, waits)
            else:
                # ready time of each routed expert, in access order
                ready: list[tuple[float, int]] = []
                for key, pf in zip(hit_keys, hit_pf):
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
                        lead_append(t_gate - tr.issue)
                        slack_append(t_gate - tr.end)
                        if tr.end > t_gate:
                            stats.prefetch_late += 1
                    ready.append((tr.end, key))
                miss_ssd = core.miss_from_ssd if core.dram is not None else None
                for i, key in enumerate(miss_keys):
                    nb = self._ssd_read(t_gate, stats) if miss_ssd and miss_ssd[i] else 0.0
                    tr = Transfer(key, t_gate, dur, True, nbytes, nb)
                    schedule(tr, t_gate)  # the engine has advanced to t_gate above
                    inflight[key] = tr
                    if self._transfers is not None:
                        self._transfers.append(tr)
                    ready.append((tr.end, key))
            n_miss = len(miss_keys)
            layer_bdem[layer] += n_miss * nbytes
            self._h2d_bytes += n_miss * nbytes
            cpu_done = t_gate
            if not simple:
                cpu_done = self._cpu_and_substitutes(core, group, s, t_gate, ready, stats)

            core.after_gate(s)
            if core.loads or core.evicted_prefetch:
                self._issue_prefetches(core, t_gate + pred_ms, stats)
            t_experts = t_gate + pred_ms if pred_on_gpu and not pre_fires else t_gate

            # expert compute: shared block first (always resident), then routed experts by readiness
            cur = t_experts + c_shared
            compute = cur - t0
            stall = 0.0
            if fast:
                ffn = ffn1
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
            elif counts_all is None:
                if self._slices is not None:
                    self._record_compute(group.index, t, layer, t0, t_gate, cur, ready, counts_all, s, group)
                ffn = ffn1
                ready.sort()
                for r, _ in ready:
                    if r > cur:
                        stall += r - cur
                        cur = r
                    cur += ffn
                compute += ffn * len(ready)
            else:
                if self._slices is not None:
                    self._record_compute(group.index, t, layer, t0, t_gate, cur, ready, counts_all, s, group)
                cnt = dict(zip(group.steps[s], counts_all[s]))
                ready.sort()
                for r, key in ready:
                    if r > cur:
                        stall += r - cur
                        cur = r
                    ffn = expert_ms(cnt.get(key, 1))  # a substitute not routed here: one token
                    cur += ffn
                    compute += ffn
            if cpu_done > cur:  # the layer's output also needs the experts computed on the CPU
                stall += cpu_done - cur
                cur = cpu_done
            core.end_step(s)
            layer_stall[layer] += stall
            layer_late[layer] += late
            tok_stall += stall
            tok_compute += compute
            tok_hits += len(hit_keys) - late
            tok_late += late
            tok_miss += len(group.steps[s]) - len(hit_keys)
            yield env.timeout(cur - t0)
            s += 1
            if layer != L - 1:
                continue
            if former is not None:
                former.block_done(s // L - 1, env.now)
            if t < 0:  # end of a prompt pass: the first token is out
                if former is None:
                    stats.ttft_ms.append(env.now - tok_start)
                stats.prefill_stall_ms += tok_stall
                tok_start = env.now
                tok_bytes0 = self._h2d_bytes
                tok_ev0, tok_rf0 = core.evictions, core.refetches
                tok_stall = tok_compute = 0.0
                tok_hits = tok_late = tok_miss = 0
            else:
                stats.tok_group.append(group.index)
                stats.tok_step.append(t)
                stats.tok_batch.append(batch)
                stats.tok_latency_ms.append(env.now - tok_start)
                stats.tok_compute_ms.append(tok_compute)
                stats.tok_stall_ms.append(tok_stall)
                stats.tok_hits.append(tok_hits)
                stats.tok_late.append(tok_late)
                stats.tok_misses.append(tok_miss)
                stats.tok_bytes_h2d.append(self._h2d_bytes - tok_bytes0)
                ev, rf = core.evictions, core.refetches
                stats.tok_evictions.append(ev - tok_ev0)
                stats.tok_refetches.append(rf - tok_rf0)
                tok_ev0, tok_rf0 = ev, rf
                tok_start = env.now
                tok_bytes0 = self._h2d_bytes
                tok_stall = tok_compute = 0.0
                tok_hits = tok_late = tok_miss = 0
        core.end_group()
