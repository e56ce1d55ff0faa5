"""The decision pass: the policy core's decisions for a whole run, compiled (numba).

It replays ``moesim.policies.core.PolicyCore`` in the protocol's call order (start-of-group plan;
per layer-step: pre-attention plan, gate, after-gate plan, end of step) for the fetch miss handler,
no host tier, no per-sequence reset and no stale-prefetch drops, with the pool's scopes (one pool, or
one per layer) and the cache policies LRU, FIFO, LFU and Belady. Pins are the core's: a step's
demanded keys during its gate (and its after-gate plan), and a plan's own predictions while it runs.
The outputs are what the core publishes in ``core.out`` at each call, as flat arrays (CSR), plus its
counters; the timing pass reads them. Nothing here reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moesim.engine.fast import jit  # noqa: F401  (sets numba's cache folder before the kernels)

from numba import njit  # isort: skip

LRU, FIFO, LFU, BELADY = 0, 1, 2, 3
POLICY_CODES = {"lru": LRU, "fifo": FIFO, "lfu": LFU, "belady": BELADY}
NEVER = 1 << 62  # moesim.policies.caches.base.NEVER
_NEVER_EVICTED = -(1 << 62)  # moesim.policies.core._NEVER


@dataclass
class Decisions:
    """The decision pass's outputs (see ``decide``); arrays indexed as its docstring says."""

    acc_hit: np.ndarray  # per access: resident at its gate
    acc_pf: np.ndarray  # per access: a hit on a prefetch not demanded before
    load_ptr: np.ndarray  # per plan event: its prefetch loads (CSR into load_keys)
    load_keys: np.ndarray
    pevp_ptr: np.ndarray  # per plan event: undemanded prefetches it evicted
    pevp_keys: np.ndarray
    gevp_ptr: np.ndarray  # per step: undemanded prefetches its gate's demand inserts evicted
    gevp_keys: np.ndarray
    cum_evictions: np.ndarray  # per step: evictions so far, after the step
    cum_refetches: np.ndarray
    layer_accesses: np.ndarray
    layer_present: np.ndarray
    layer_prefetch_issued: np.ndarray
    layer_prefetch_useful: np.ndarray
    layer_evictions: np.ndarray
    finish_keys: np.ndarray  # prefetches never demanded, resident at the end (sorted)
    prefetch_unused: int
    refetches: int
    bypassed: int


@njit(cache=True, error_model="numpy")  # no zero-divisor checks: E, L > 0
def decide(  # noqa: C901  (one function on purpose: see the docstring)
    step_ptr, keys, step_layer, step_token, grp_step0, grp_tok0, ev_ptr, ev_keys,
    fires_pre, L, E, policy, layered, caps, window, nxt_acc, first,
):  # fmt: skip
    """Plan events: group ``g``'s start is event ``grp_step0[g] + g``, its step ``s`` (global)
    event ``s + g + 1`` (the step's pre-attention or after-gate plan, by ``fires_pre``).

    One loop over the core's calls in order (per group: the start plan; per step two calls, the
    plan and the gate in the order ``fires_pre`` says), and in it one loop over the call's keys
    that admits both prefetches and demand misses: all in one function, with no helper calls,
    because numba's calls with array arguments cost more than the work they would do here."""
    nsteps = len(step_ptr) - 1
    nacc = len(keys)
    G = len(grp_step0) - 1
    K = L * E
    P = len(caps)
    nev = len(ev_ptr) - 1
    lnext = np.full(K, -1, np.int64)  # per pool, a doubly linked list of its residents, oldest first
    lprev = np.full(K, -1, np.int64)
    head = np.full(P, -1, np.int64)
    tail = np.full(P, -1, np.int64)
    size = np.zeros(P, np.int64)
    res = np.zeros(K, np.int8)  # resident
    pin = np.zeros(K, np.int8)  # pinned
    freq = np.zeros(K, np.int64)  # LFU: demand accesses while resident
    tick = np.zeros(K, np.int64)  # LFU: last touch
    nu_ = np.zeros(K, np.int64)  # Belady: next demand position
    cur = first.copy()  # per key: its first demand position not yet replayed
    pf = np.zeros(K, np.int8)  # admitted by prefetch, not demanded since
    evat = np.full(K, _NEVER_EVICTED, np.int64)  # decode step of the key's last eviction
    added = np.zeros(K, np.int64)
    clock = 0  # LFU's tick counter
    acc_hit = np.zeros(nacc, np.int8)
    acc_pf = np.zeros(nacc, np.int8)
    load_ptr = np.zeros(nev + 1, np.int64)
    load_keys = np.empty(len(ev_keys), np.int64)
    pevp_ptr = np.zeros(nev + 1, np.int64)
    pevp_keys = np.empty(len(ev_keys), np.int64)
    gevp_ptr = np.zeros(nsteps + 1, np.int64)
    gevp_keys = np.empty(nacc, np.int64)
    cum_ev = np.zeros(nsteps, np.int64)
    cum_rf = np.zeros(nsteps, np.int64)
    l_acc = np.zeros(L, np.int64)
    l_present = np.zeros(L, np.int64)
    l_issued = np.zeros(L, np.int64)
    l_useful = np.zeros(L, np.int64)
    l_ev = np.zeros(L, np.int64)
    n_load = n_pevp = n_gevp = unused = refetches = bypassed = evictions = 0
    for g in range(G):
        s0, s1 = grp_step0[g], grp_step0[g + 1]
        for op in range(1 + 2 * (s1 - s0)):
            if op == 0:  # the group's first predictions
                is_plan = True
                s = s0
                e = s0 + g
                token = grp_tok0[g]
            else:
                s = s0 + (op - 1) // 2
                is_plan = ((op - 1) % 2 == 0) == fires_pre
                e = s + g + 1
                token = step_token[s]
            layer = step_layer[s] if s < nsteps else 0
            if is_plan:  # PolicyCore._plan over the event's cut predictions
                src = ev_keys
                lo, hi = ev_ptr[e], ev_ptr[e + 1]
            else:  # PolicyCore.gate: the step's demand accesses, its keys pinned
                src = keys
                lo, hi = step_ptr[s], step_ptr[s + 1]
                for i in range(lo, hi):
                    pin[keys[i]] = 1
            na = 0
            nh = 0
            for i in range(lo, hi):
                key = src[i]
                pool = key // E if layered else 0
                admitted = True
                if res[key] == 1:
                    if not is_plan:  # a hit
                        if policy == LRU:  # to the young end
                            p, n = lprev[key], lnext[key]
                            if n >= 0:
                                if p >= 0:
                                    lnext[p] = n
                                else:
                                    head[pool] = n
                                lprev[n] = p
                                t = tail[pool]
                                lprev[key] = t
                                lnext[key] = -1
                                lnext[t] = key
                                tail[pool] = key
                        elif policy == LFU:
                            clock += 1
                            freq[key] += 1
                            tick[key] = clock
                        elif policy == BELADY:
                            nu_[key] = nxt_acc[i] if nxt_acc[i] < nacc else NEVER
                        acc_hit[i] = 1
                        nh += 1
                        if pf[key] == 1:
                            pf[key] = 0
                            acc_pf[i] = 1
                            l_useful[layer] += 1
                else:  # admit it: ExpertPool.insert (make room, then admit)
                    v = -1
                    if size[pool] >= caps[pool]:
                        k2 = head[pool]
                        if policy == LRU or policy == FIFO:  # noqa: SIM109  (oldest unpinned)
                            while k2 >= 0:
                                if pin[k2] == 0:
                                    v = k2
                                    break
                                k2 = lnext[k2]
                        else:
                            while k2 >= 0:
                                if pin[k2] == 0:
                                    if v < 0:
                                        v = k2
                                    elif policy == LFU:  # least frequent, then least recently touched
                                        if freq[k2] < freq[v] or (freq[k2] == freq[v] and tick[k2] < tick[v]):
                                            v = k2
                                    elif nu_[k2] > nu_[v] or (nu_[k2] == nu_[v] and k2 < v):
                                        v = k2  # Belady: farthest next use, ties to the lowest key
                                k2 = lnext[k2]
                        if v < 0:
                            admitted = False  # every resident pinned: no slot
                        else:
                            p, n = lprev[v], lnext[v]
                            if p >= 0:
                                lnext[p] = n
                            else:
                                head[pool] = n
                            if n >= 0:
                                lprev[n] = p
                            else:
                                tail[pool] = p
                            res[v] = 0
                            size[pool] -= 1
                    if admitted:
                        t = tail[pool]
                        lprev[key] = t
                        lnext[key] = -1
                        if t >= 0:
                            lnext[t] = key
                        else:
                            head[pool] = key
                        tail[pool] = key
                        res[key] = 1
                        size[pool] += 1
                        if policy == LFU:
                            clock += 1
                            freq[key] = 0 if is_plan else 1  # a prefetch is not an access
                            tick[key] = clock
                        elif policy == BELADY:  # a prefetch waits for the next use; a demand consumed it
                            u = cur[key] if is_plan else nxt_acc[i]
                            nu_[key] = u if u < nacc else NEVER
                        if v >= 0:  # PolicyCore._insert's accounting of the victim
                            evictions += 1
                            l_ev[v // E] += 1
                            evat[v] = token
                            if pf[v] == 1:
                                pf[v] = 0
                                unused += 1
                                if is_plan:
                                    pevp_keys[n_pevp] = v
                                    n_pevp += 1
                                else:
                                    gevp_keys[n_gevp] = v
                                    n_gevp += 1
                        if token - evat[key] <= window:
                            refetches += 1
                        if is_plan:
                            pf[key] = 1
                            load_keys[n_load] = key
                            n_load += 1
                            l_issued[key // E] += 1
                    elif not is_plan:
                        bypassed += 1  # no evictable slot (cache.bypass): streamed through
                if is_plan:
                    if admitted and pin[key] == 0:  # a dropped prediction is not pinned
                        pin[key] = 1
                        added[na] = key
                        na += 1
                else:
                    cur[key] = nxt_acc[i]
            if is_plan:
                for j in range(na):  # the plan's own pins end with it
                    pin[added[j]] = 0
                load_ptr[e + 1] = n_load
                pevp_ptr[e + 1] = n_pevp
            else:
                gevp_ptr[s + 1] = n_gevp
                l_acc[layer] += hi - lo
                l_present[layer] += nh
            if op > 0 and (op - 1) % 2 == 1:  # end of the step: its pins go
                for i in range(step_ptr[s], step_ptr[s + 1]):
                    pin[keys[i]] = 0
                cum_ev[s] = evictions
                cum_rf[s] = refetches
    finish = np.nonzero(pf)[0].astype(np.int64)
    unused += len(finish)
    return (acc_hit, acc_pf, load_ptr, load_keys[:n_load], pevp_ptr, pevp_keys[:n_pevp], gevp_ptr,
            gevp_keys[:n_gevp], cum_ev, cum_rf, l_acc, l_present, l_issued, l_useful, l_ev, finish,
            unused, refetches, bypassed)  # fmt: skip
