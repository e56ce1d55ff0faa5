"""The policy core: predictor -> prefetch planner -> cache, driven in logical order by an executor.

It never reads a clock. Residency changes the moment a transfer is *issued* (a GPU slot is
reserved for the copy), so every decision (what is present, what is fetched, what is evicted) is a
function of the trace and the policies alone, and both executors make the same decisions.
Executors add time: whether a present expert had *arrived* when the gate decided (hit) or was still
in flight (late hit), whether an evicted prefetch had started copying (wasted) or not (cancelled).

The core publishes each call's outcome in one reused ``StepOutputs`` (``core.out``; which lists a
call fills is documented there) instead of returning fresh objects: this is the simulator's hot path.
The order of calls is ``moesim.engine.protocol``'s.
"""

from __future__ import annotations

from dataclasses import dataclass

from moesim.policies.miss.base import CPU, FETCH, SUBSTITUTE, MissHandler
from moesim.policies.outputs import StepOutputs
from moesim.policies.pool import ExpertPool
from moesim.policies.predictors.base import PRE_ATTENTION, Prediction, Predictor
from moesim.policies.totals import LayerTotals
from moesim.traces.replay import Group

_NEVER = -(1 << 62)  # "evicted at" of an expert never evicted


@dataclass(frozen=True)
class PlannerConfig:
    top_n: int  # experts taken from each prediction's ranked list
    overprovision: int = 0  # extra experts beyond top_n (seed 002's top-(k+m))
    threshold: float | None = None  # drop predicted experts scoring below this


class PolicyCore(LayerTotals):
    def __init__(
        self,
        predictor: Predictor,
        pool_factory,
        planner: PlannerConfig,
        num_layers: int,
        num_experts: int,
        reset_per_sequence: bool = False,
        refetch_window: int = 16,
        record: bool = False,
        miss_handler: MissHandler | None = None,
        dram: ExpertPool | None = None,
        cancel_stale: bool = False,
    ):
        self.predictor = predictor
        self.miss_handler = miss_handler
        self.dram = dram  # host-memory tier; None = every expert is in host memory
        # Drop a prefetch once its target layer-step has gone by without demanding it, instead of
        # letting it occupy a slot (and the link, if it has not started) until evicted.
        self._by_target: dict[int, list[int]] | None = {} if cancel_stale else None
        self.prefetch_stale = 0
        # The common case (fetch every miss, all experts in DRAM) keeps the short path in gate(), and
        # executors may skip the outputs only the other cases fill.
        self.simple = (miss_handler is None or miss_handler.name == "fetch") and dram is None
        self._pool_factory = pool_factory
        self.pool: ExpertPool = pool_factory()
        self.L = num_layers
        self.E = num_experts
        self._n_pred = planner.top_n + planner.overprovision
        self._threshold = planner.threshold
        self._reset = reset_per_sequence
        self._window = refetch_window
        self.pre_attention_fires = predictor.fires == PRE_ATTENTION
        # Most predictors ignore what the gate chose; skip the call for them.
        self._observe = predictor.observe if type(predictor).observe is not Predictor.observe else None
        self.log: list[tuple] | None = [] if record else None

        self.pos = 0  # global position of the next demand access
        self.token_base = 0  # decode steps replayed before the current group
        self._pins: set[int] = set()
        self._prefetched: set[int] = set()  # admitted by prefetch, not yet demanded
        # per key, the decode step of its last eviction (a list: the hot path indexes it)
        self._evicted_at: list[int] = [_NEVER] * (num_layers * num_experts)

        self.out = StepOutputs()  # what the last call decided
        self._last_used = [-1] * num_layers  # per layer, the last expert demanded and kept resident

        # timing-independent counters (totals of the per-layer ones are properties)
        self.prefetch_unused = 0  # evicted or left undemanded (wasted + cancelled)
        self.refetches = 0
        self.bypassed = 0  # demand misses streamed through without becoming resident
        self.misses_cpu = 0
        self.misses_skipped = 0
        self.misses_substituted = 0
        self.dram_hits = 0
        self.dram_misses = 0  # SSD reads
        self.dram_evictions = 0
        self.layer_accesses = [0] * num_layers
        self.layer_present = [0] * num_layers
        self.layer_prefetch_issued = [0] * num_layers
        self.layer_prefetch_useful = [0] * num_layers
        self.layer_evictions = [0] * num_layers

    # -- group (request batch) boundaries ---------------------------------------------------
    def start_group(self, group: Group) -> None:
        if self._reset and self.log is not None and group.index > 0:
            self.log.append(("reset", group.index))
        # Prefetched experts dropped with the pool are wasted; executors account for them (bytes).
        self.out.flushed = []
        if self._reset and group.index > 0:
            self.out.flushed = self._flush_unused()
            self.pool = self._pool_factory()
            self._evicted_at = [_NEVER] * (self.L * self.E)
        self.group = group
        self._steps = group.steps
        self.out.clear(self.simple)
        if self.log is not None:
            self.log.append(("start", group.index))
        self._plan(self.predictor.start(group), -1)

    def end_group(self) -> None:
        self.token_base += self.group.num_tokens

    def finish(self) -> list[int]:
        """End of the run: undemanded prefetches still resident are wasted. Returns them."""
        return self._flush_unused()

    def _flush_unused(self) -> list[int]:
        left = sorted(self._prefetched)
        self.prefetch_unused += len(left)
        self._prefetched.clear()
        return left

    # -- per layer-step, in this order: pre_attention, gate, after_gate, end_step -------------
    def pre_attention(self, s: int) -> None:
        """Predictions of a predictor firing before attention (before it observes step ``s``)."""
        self.out.clear(self.simple)
        self._plan(self.predictor.predict(s), s)

    def gate(self, s: int) -> None:
        """The demand accesses of step ``s``: hits, misses (fetched, or as the miss handler says)."""
        keys = self._steps[s]
        layer = s % self.L
        out = self.out
        out.clear(self.simple)
        pins = self._pins
        pins.clear()
        pins.update(keys)
        if self._by_target is not None:
            self._drop_stale(s, keys)
        token = self.token_base + s // self.L
        if self.simple and self.log is None:
            self.pos = self._demand_simple(s, keys, layer, token)
        else:
            self.pos = self._demand(s, keys, layer, token)
        self.layer_accesses[layer] += len(keys)
        self.layer_present[layer] += len(out.hit_keys)
        if self._observe is not None:
            self._observe(s, keys)

    def _demand_simple(self, s: int, keys: list[int], layer: int, token: int) -> int:
        """The common case (every miss fetched, no decision log), kept short; the same steps as
        ``_demand``. Returns the position after the step's accesses."""
        out = self.out
        hit_keys, miss_keys, hit_was_prefetch = out.hit_keys, out.miss_keys, out.hit_was_prefetch
        pool = self.pool
        contains, pool_hit, hit_key = pool.contains, pool.hit, pool.hit_key
        prefetched = self._prefetched
        useful = self.layer_prefetch_useful
        insert = self._insert
        pos = self.pos
        for key in keys:
            if contains(key):
                if hit_key is not None:
                    hit_key(key)
                else:
                    pool_hit(key, pos)
                hit_keys.append(key)
                if key in prefetched:
                    prefetched.discard(key)
                    hit_was_prefetch.append(True)
                    useful[layer] += 1
                else:
                    hit_was_prefetch.append(False)
            else:
                if not insert(key, pos, False, s, token):
                    self.bypassed += 1  # no evictable slot (cache.bypass): streamed, not kept
                miss_keys.append(key)
            pos += 1
        return pos

    def _demand(self, s: int, keys: list[int], layer: int, token: int) -> int:
        """Demand accesses with a decision log, a miss handler or a DRAM tier."""
        out = self.out
        hit_keys, hit_was_prefetch = out.hit_keys, out.hit_was_prefetch
        pool = self.pool
        contains, pool_hit, hit_key = pool.contains, pool.hit, pool.hit_key
        prefetched = self._prefetched
        useful = self.layer_prefetch_useful
        log = self.log
        last_used = self._last_used
        pos = self.pos
        for i, key in enumerate(keys):
            if contains(key):
                if hit_key is not None:
                    hit_key(key)
                else:
                    pool_hit(key, pos)
                hit_keys.append(key)
                last_used[layer] = key
                if key in prefetched:
                    prefetched.discard(key)
                    hit_was_prefetch.append(True)
                    useful[layer] += 1
                else:
                    hit_was_prefetch.append(False)
                hit = 1
            else:
                self._demand_miss(key, i, s, pos, token)
                hit = 0
            if log is not None:
                log.append(("A", s, key, hit))
            pos += 1
        return pos

    def _demand_miss(self, key: int, i: int, s: int, pos: int, token: int) -> None:
        if self.simple:
            if not self._insert(key, pos, False, s, token):
                self.bypassed += 1
            self.out.miss_keys.append(key)
        else:
            self._miss(key, i, s, pos, token)

    def after_gate(self, s: int) -> None:
        """Predictions fired after the gate; call after the executor consumed ``gate``'s outputs."""
        self.out.clear_plan()
        if not self.pre_attention_fires:
            self._plan(self.predictor.predict(s), s)

    def end_step(self, s: int) -> None:
        self._pins.clear()

    # -- internals ----------------------------------------------------------------------------
    def _miss(self, key: int, i: int, s: int, pos: int, token: int) -> None:
        """A demand miss under a miss handler other than plain fetch, or with a DRAM tier."""
        counts = self.group.counts
        tokens = counts[s][i] if counts is not None else 1
        action = FETCH if self.miss_handler is None else self.miss_handler.decide(key, tokens)
        layer = key // self.E
        if action == FETCH:
            if self._insert(key, pos, False, s, token):
                self._last_used[layer] = key
            else:
                self.bypassed += 1
            self.out.miss_keys.append(key)
            if self.dram is not None:
                self.out.miss_from_ssd.append(self._from_dram(key, pos, False))
        elif action == CPU:
            self.misses_cpu += 1
            self.out.cpu_keys.append(key)
            if self.dram is not None:
                self.out.cpu_from_ssd.append(self._from_dram(key, pos, False))
        elif action == SUBSTITUTE and self._last_used[layer] >= 0 and self._last_used[layer] in self.pool:
            self.misses_substituted += 1
            self.out.substitutes.append(self._last_used[layer])
        else:
            self.misses_skipped += 1
        if self.log is not None and action != FETCH:
            self.log.append(("M", s, key, action))

    def _drop_stale(self, s: int, keys: list[int]) -> None:
        assert self._by_target is not None  # only called with cancel_stale
        for key in self._by_target.pop(s, ()):
            if key in self._prefetched and key not in keys:
                self.pool.policy_for(key).evict(key)
                self._prefetched.discard(key)
                self.prefetch_unused += 1
                self.prefetch_stale += 1
                self.out.evicted.append(key)
                self.out.evicted_prefetch.append(key)
                if self.log is not None:
                    self.log.append(("X", s, key))

    def _from_dram(self, key: int, pos: int, prefetch: bool) -> bool:
        """Touch ``key`` in the host tier; True if it must first be read from SSD into DRAM."""
        dram = self.dram
        assert dram is not None  # only called with a host tier
        if key in dram:
            dram.hit(key, pos)
            self.dram_hits += 1
            return False
        self.dram_misses += 1
        evicted: list[int] = []
        dram.insert(key, pos, prefetch, (), evicted)
        self.dram_evictions += len(evicted)
        return True

    def _insert(
        self, key: int, pos: int, prefetch: bool, s: int, token: int, score: float | None = None
    ) -> bool:
        """Admit ``key`` (decode step ``token``), accounting for the victim it displaces."""
        evicted = self.out.evicted
        n = len(evicted)
        if not self.pool.insert(key, pos, prefetch, self._pins, evicted, score):
            return False
        evicted_at = self._evicted_at
        if len(evicted) > n:
            victim = evicted[n]
            self.layer_evictions[victim // self.E] += 1
            evicted_at[victim] = token
            prefetched = self._prefetched
            if victim in prefetched:
                prefetched.discard(victim)
                self.prefetch_unused += 1
                self.out.evicted_prefetch.append(victim)
            if self.log is not None:
                self.log.append(("E", s, victim))
        if token - evicted_at[key] <= self._window:
            self.refetches += 1
        return True

    def _plan(self, predictions: list[Prediction], s: int) -> None:
        if not predictions:
            return
        n = self._n_pred
        thr = self._threshold
        contains = self.pool.contains
        pins = self._pins
        # Every expert this call predicts is pinned until it returns: a plan never evicts its own
        # predictions, and executors may process a call's evictions before its loads.
        restore = pins.copy()
        add_pin = pins.add
        token = self.token_base + max(s, 0) // self.L
        insert, pos, E = self._insert, self.pos, self.E
        add_prefetched, add_load = self._prefetched.add, self.out.loads.append
        issued = self.layer_prefetch_issued
        by_target, dram, log = self._by_target, self.dram, self.log
        for target, keys, scores in predictions:
            cand = keys[:n]
            if thr is not None and scores is not None:
                kept = [i for i, sc in enumerate(scores[:n]) if sc >= thr]
                cand = [cand[i] for i in kept]
                scores = [scores[i] for i in kept]
            for i, key in enumerate(cand):
                if not contains(key):
                    if not insert(key, pos, True, s, token, scores[i] if scores is not None else None):
                        continue
                    add_prefetched(key)
                    add_load(key)
                    issued[key // E] += 1
                    if by_target is not None:
                        by_target.setdefault(target, []).append(key)
                    if dram is not None:
                        self.out.load_from_ssd.append(self._from_dram(key, pos, True))
                    if log is not None:
                        log.append(("P", s, key, target))
                add_pin(key)
        self._pins = restore
