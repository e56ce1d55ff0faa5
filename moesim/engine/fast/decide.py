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


@njit(cache=True)
def _victim(pool, policy, head, lnext, pinned, freq, tick, nextuse):
    """The pool's victim skipping pinned keys (-1: every resident pinned)."""
    k = head[pool]
    if policy == LRU or policy == FIFO:  # oldest first
        while k >= 0:
            if pinned[k] == 0:
                return k
            k = lnext[k]
        return -1
    best = -1
    while k >= 0:
        if pinned[k] == 0:
            if best < 0:
                best = k
            elif policy == LFU:  # least frequent, then least recently touched
                if freq[k] < freq[best] or (freq[k] == freq[best] and tick[k] < tick[best]):
                    best = k
            elif nextuse[k] > nextuse[best] or (nextuse[k] == nextuse[best] and k < best):
                best = k  # Belady: farthest next use, ties to the lowest key
        k = lnext[k]
    return best


@njit(cache=True)
def _unlink(k, pool, head, tail, lnext, lprev):
    p, n = lprev[k], lnext[k]
    if p >= 0:
        lnext[p] = n
    else:
        head[pool] = n
    if n >= 0:
        lprev[n] = p
    else:
        tail[pool] = p
    lnext[k] = -1
    lprev[k] = -1


@njit(cache=True)
def _append(k, pool, head, tail, lnext, lprev):
    t = tail[pool]
    lprev[k] = t
    lnext[k] = -1
    if t >= 0:
        lnext[t] = k
    else:
        head[pool] = k
    tail[pool] = k


@njit(cache=True)
def _insert(key, nu, prefetch, pool, cap, policy, st, head, tail, lnext, lprev, size, resident, pinned, freq, tick, nextuse):
    """Admit ``key`` (next use ``nu`` for Belady). Returns the victim, -1 for none, -2 if no slot."""
    victim = -1
    if size[pool] >= cap:
        victim = _victim(pool, policy, head, lnext, pinned, freq, tick, nextuse)
        if victim < 0:
            return -2
        _unlink(victim, pool, head, tail, lnext, lprev)
        resident[victim] = 0
        size[pool] -= 1
    _append(key, pool, head, tail, lnext, lprev)
    resident[key] = 1
    size[pool] += 1
    if policy == LFU:
        st[0] += 1
        freq[key] = 0 if prefetch else 1
        tick[key] = st[0]
    elif policy == BELADY:
        nextuse[key] = nu
    return victim


@njit(cache=True)
def decide(
    step_ptr, keys, step_layer, step_token, grp_step0, grp_tok0, ev_ptr, ev_keys,
    fires_pre, L, E, policy, layered, caps, window, nxt_acc, first,
):  # fmt: skip
    """Plan events: group ``g``'s start is event ``grp_step0[g] + g``, its step ``s`` (global)
    event ``s + g + 1`` (the step's pre-attention or after-gate plan, by ``fires_pre``)."""
    nsteps = len(step_ptr) - 1
    nacc = len(keys)
    G = len(grp_step0) - 1
    K = L * E
    P = len(caps)
    nev = len(ev_ptr) - 1
    head = np.full(P, -1, np.int64)
    tail = np.full(P, -1, np.int64)
    size = np.zeros(P, np.int64)
    lnext = np.full(K, -1, np.int64)
    lprev = np.full(K, -1, np.int64)
    resident = np.zeros(K, np.int8)
    pinned = np.zeros(K, np.int8)
    added = np.zeros(K, np.int64)
    freq = np.zeros(K, np.int64)
    tick = np.zeros(K, np.int64)
    nextuse = np.zeros(K, np.int64)
    cur_next = first.copy()  # per key: its first demand position not yet replayed
    prefetched = np.zeros(K, np.int8)
    evicted_at = np.full(K, _NEVER_EVICTED, np.int64)
    st = np.zeros(1, np.int64)  # LFU's tick counter
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
    cnt = np.zeros(6, np.int64)  # loads, plan evps, gate evps, unused, refetches, bypassed
    evictions = 0
    for g in range(G):
        s0, s1 = grp_step0[g], grp_step0[g + 1]
        # the group's first predictions
        evictions = _plan(s0 + g, step_ptr[s0], grp_tok0[g], ev_ptr, ev_keys, E, policy, layered, caps,
                          window, nacc, st, head, tail, lnext, lprev, size, resident, pinned, added, freq,
                          tick, nextuse, cur_next, prefetched, evicted_at, load_ptr, load_keys, pevp_ptr,
                          pevp_keys, l_issued, l_ev, cnt, evictions)  # fmt: skip
        for s in range(s0, s1):
            e = s + g + 1
            layer = step_layer[s]
            token = step_token[s]
            p0, p1 = step_ptr[s], step_ptr[s + 1]
            if fires_pre:
                evictions = _plan(e, p0, token, ev_ptr, ev_keys, E, policy, layered, caps, window, nacc,
                                  st, head, tail, lnext, lprev, size, resident, pinned, added, freq, tick,
                                  nextuse, cur_next, prefetched, evicted_at, load_ptr, load_keys, pevp_ptr,
                                  pevp_keys, l_issued, l_ev, cnt, evictions)  # fmt: skip
            for i in range(p0, p1):
                pinned[keys[i]] = 1
            nh = 0
            for i in range(p0, p1):
                key = keys[i]
                pool = key // E if layered else 0
                nu = nxt_acc[i] if nxt_acc[i] < nacc else NEVER
                if resident[key] == 1:
                    if policy == LRU:
                        _unlink(key, pool, head, tail, lnext, lprev)
                        _append(key, pool, head, tail, lnext, lprev)
                    elif policy == LFU:
                        st[0] += 1
                        freq[key] += 1
                        tick[key] = st[0]
                    elif policy == BELADY:
                        nextuse[key] = nu
                    acc_hit[i] = 1
                    nh += 1
                    if prefetched[key] == 1:
                        prefetched[key] = 0
                        acc_pf[i] = 1
                        l_useful[layer] += 1
                else:
                    v = _insert(key, nu, False, pool, caps[pool], policy, st, head, tail, lnext, lprev,
                                size, resident, pinned, freq, tick, nextuse)  # fmt: skip
                    if v == -2:
                        cnt[5] += 1  # no evictable slot: streamed through
                    else:
                        if v >= 0:
                            evictions += 1
                            l_ev[v // E] += 1
                            evicted_at[v] = token
                            if prefetched[v] == 1:
                                prefetched[v] = 0
                                cnt[3] += 1
                                gevp_keys[cnt[2]] = v
                                cnt[2] += 1
                        if token - evicted_at[key] <= window:
                            cnt[4] += 1
                cur_next[key] = nxt_acc[i]
            gevp_ptr[s + 1] = cnt[2]
            l_acc[layer] += p1 - p0
            l_present[layer] += nh
            if not fires_pre:
                evictions = _plan(e, p1, token, ev_ptr, ev_keys, E, policy, layered, caps, window, nacc,
                                  st, head, tail, lnext, lprev, size, resident, pinned, added, freq, tick,
                                  nextuse, cur_next, prefetched, evicted_at, load_ptr, load_keys, pevp_ptr,
                                  pevp_keys, l_issued, l_ev, cnt, evictions)  # fmt: skip
            for i in range(p0, p1):
                pinned[keys[i]] = 0
            cum_ev[s] = evictions
            cum_rf[s] = cnt[4]
    finish = np.nonzero(prefetched)[0].astype(np.int64)
    cnt[3] += len(finish)
    return (acc_hit, acc_pf, load_ptr, load_keys[: cnt[0]], pevp_ptr, pevp_keys[: cnt[1]], gevp_ptr,
            gevp_keys[: cnt[2]], cum_ev, cum_rf, l_acc, l_present, l_issued, l_useful, l_ev, finish,
            cnt[3], cnt[4], cnt[5])  # fmt: skip


@njit(cache=True)
def _plan(e, pos, token, ev_ptr, ev_keys, E, policy, layered, caps, window, nacc, st, head, tail, lnext,
          lprev, size, resident, pinned, added, freq, tick, nextuse, cur_next, prefetched, evicted_at,
          load_ptr, load_keys, pevp_ptr, pevp_keys, l_issued, l_ev, cnt, evictions):  # fmt: skip
    """One planning call (``PolicyCore._plan``) over event ``e``'s cut predictions; returns the
    evictions so far."""
    na = 0
    for i in range(ev_ptr[e], ev_ptr[e + 1]):
        key = ev_keys[i]
        if resident[key] == 0:
            pool = key // E if layered else 0
            nu = cur_next[key] if cur_next[key] < nacc else NEVER
            v = _insert(key, nu, True, pool, caps[pool], policy, st, head, tail, lnext, lprev, size,
                        resident, pinned, freq, tick, nextuse)  # fmt: skip
            if v == -2:
                continue  # no slot: the prediction is dropped (and not pinned)
            if v >= 0:
                evictions += 1
                l_ev[v // E] += 1
                evicted_at[v] = token
                if prefetched[v] == 1:
                    prefetched[v] = 0
                    cnt[3] += 1
                    pevp_keys[cnt[1]] = v
                    cnt[1] += 1
            if token - evicted_at[key] <= window:
                cnt[4] += 1
            prefetched[key] = 1
            load_keys[cnt[0]] = key
            cnt[0] += 1
            l_issued[key // E] += 1
        if pinned[key] == 0:
            pinned[key] = 1
            added[na] = key
            na += 1
    for j in range(na):
        pinned[added[j]] = 0
    load_ptr[e + 1] = cnt[0]
    pevp_ptr[e + 1] = cnt[1]
    return evictions
