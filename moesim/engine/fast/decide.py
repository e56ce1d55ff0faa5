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


# rows of the per-key state ``ks`` (one 2D array: few arguments keep numba's calls cheap)
NXT, PRV, RES, PIN, FREQ, TICK, NU, CUR, PF, EVAT, NROWS = range(11)
HEAD, TAIL, SIZE, CAP = range(4)  # rows of the per-pool state ``ps``


@njit(cache=True)
def _victim(pool, policy, ks, ps):
    """The pool's victim skipping pinned keys (-1: every resident pinned)."""
    k = ps[HEAD, pool]
    if policy == LRU or policy == FIFO:  # oldest first
        while k >= 0:
            if ks[PIN, k] == 0:
                return k
            k = ks[NXT, k]
        return -1
    best = -1
    while k >= 0:
        if ks[PIN, k] == 0:
            if best < 0:
                best = k
            elif policy == LFU:  # least frequent, then least recently touched
                if ks[FREQ, k] < ks[FREQ, best] or (ks[FREQ, k] == ks[FREQ, best] and ks[TICK, k] < ks[TICK, best]):
                    best = k
            elif ks[NU, k] > ks[NU, best] or (ks[NU, k] == ks[NU, best] and k < best):
                best = k  # Belady: farthest next use, ties to the lowest key
        k = ks[NXT, k]
    return best


@njit(cache=True)
def _unlink(k, pool, ks, ps):
    p, n = ks[PRV, k], ks[NXT, k]
    if p >= 0:
        ks[NXT, p] = n
    else:
        ps[HEAD, pool] = n
    if n >= 0:
        ks[PRV, n] = p
    else:
        ps[TAIL, pool] = p


@njit(cache=True)
def _append(k, pool, ks, ps):
    t = ps[TAIL, pool]
    ks[PRV, k] = t
    ks[NXT, k] = -1
    if t >= 0:
        ks[NXT, t] = k
    else:
        ps[HEAD, pool] = k
    ps[TAIL, pool] = k


@njit(cache=True)
def _insert(key, nu, prefetch, pool, policy, ks, ps, st):
    """Admit ``key`` (next use ``nu`` for Belady). Returns the victim, -1 for none, -2 if no slot."""
    victim = -1
    if ps[SIZE, pool] >= ps[CAP, pool]:
        victim = _victim(pool, policy, ks, ps)
        if victim < 0:
            return -2
        _unlink(victim, pool, ks, ps)
        ks[RES, victim] = 0
        ps[SIZE, pool] -= 1
    _append(key, pool, ks, ps)
    ks[RES, key] = 1
    ps[SIZE, pool] += 1
    if policy == LFU:
        st[0] += 1
        ks[FREQ, key] = 0 if prefetch else 1
        ks[TICK, key] = st[0]
    elif policy == BELADY:
        ks[NU, key] = nu
    return victim


@njit(cache=True)
def decide(
    step_ptr, keys, step_layer, step_token, grp_step0, grp_tok0, ev_ptr, ev_keys,
    fires_pre, L, E, policy, layered, caps, window, nxt_acc, first,
):  # fmt: skip
    """Plan events: group ``g``'s start is event ``grp_step0[g] + g``, its step ``s`` (global)
    event ``s + g + 1`` (the step's pre-attention or after-gate plan, by ``fires_pre``).

    One loop over the core's calls in order (per group: the start plan; per step two calls, the
    plan and the gate in the order ``fires_pre`` says), all in one function: numba's calls with
    array arguments cost more than the work of a call here."""
    nsteps = len(step_ptr) - 1
    nacc = len(keys)
    G = len(grp_step0) - 1
    K = L * E
    P = len(caps)
    nev = len(ev_ptr) - 1
    ks = np.zeros((NROWS, K), np.int64)
    ks[NXT, :] = -1
    ks[PRV, :] = -1
    ks[CUR, :] = first  # per key: its first demand position not yet replayed
    ks[EVAT, :] = _NEVER_EVICTED
    ps = np.zeros((4, P), np.int64)
    ps[HEAD, :] = -1
    ps[TAIL, :] = -1
    ps[CAP, :] = caps
    added = np.zeros(K, np.int64)
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
    n_load = n_pevp = n_gevp = unused = refetches = bypassed = evictions = 0
    for g in range(G):
        s0, s1 = grp_step0[g], grp_step0[g + 1]
        for op in range(1 + 2 * (s1 - s0)):
            if op == 0:  # the group's first predictions
                is_plan = True
                s = s0
                e = s0 + g
                pos = step_ptr[s0]
                token = grp_tok0[g]
            else:
                s = s0 + (op - 1) // 2
                first_op = (op - 1) % 2 == 0
                is_plan = first_op == fires_pre
                e = s + g + 1
                pos = step_ptr[s] if fires_pre else step_ptr[s + 1]
                token = step_token[s]
            if is_plan:  # PolicyCore._plan over the event's cut predictions
                na = 0
                for i in range(ev_ptr[e], ev_ptr[e + 1]):
                    key = ev_keys[i]
                    if ks[RES, key] == 0:
                        pool = key // E if layered else 0
                        nu = ks[CUR, key] if ks[CUR, key] < nacc else NEVER
                        v = _insert(key, nu, True, pool, policy, ks, ps, st)
                        if v == -2:
                            continue  # no slot: the prediction is dropped (and not pinned)
                        if v >= 0:
                            evictions += 1
                            l_ev[v // E] += 1
                            ks[EVAT, v] = token
                            if ks[PF, v] == 1:
                                ks[PF, v] = 0
                                unused += 1
                                pevp_keys[n_pevp] = v
                                n_pevp += 1
                        if token - ks[EVAT, key] <= window:
                            refetches += 1
                        ks[PF, key] = 1
                        load_keys[n_load] = key
                        n_load += 1
                        l_issued[key // E] += 1
                    if ks[PIN, key] == 0:
                        ks[PIN, key] = 1
                        added[na] = key
                        na += 1
                for j in range(na):  # the plan's own pins end with it
                    ks[PIN, added[j]] = 0
                load_ptr[e + 1] = n_load
                pevp_ptr[e + 1] = n_pevp
            else:  # PolicyCore.gate: the step's demand accesses, its keys pinned
                layer = step_layer[s]
                p0, p1 = step_ptr[s], step_ptr[s + 1]
                for i in range(p0, p1):
                    ks[PIN, keys[i]] = 1
                nh = 0
                for i in range(p0, p1):
                    key = keys[i]
                    pool = key // E if layered else 0
                    nu = nxt_acc[i] if nxt_acc[i] < nacc else NEVER
                    if ks[RES, key] == 1:
                        if policy == LRU:
                            _unlink(key, pool, ks, ps)
                            _append(key, pool, ks, ps)
                        elif policy == LFU:
                            st[0] += 1
                            ks[FREQ, key] += 1
                            ks[TICK, key] = st[0]
                        elif policy == BELADY:
                            ks[NU, key] = nu
                        acc_hit[i] = 1
                        nh += 1
                        if ks[PF, key] == 1:
                            ks[PF, key] = 0
                            acc_pf[i] = 1
                            l_useful[layer] += 1
                    else:
                        v = _insert(key, nu, False, pool, policy, ks, ps, st)
                        if v == -2:
                            bypassed += 1  # no evictable slot: streamed through
                        else:
                            if v >= 0:
                                evictions += 1
                                l_ev[v // E] += 1
                                ks[EVAT, v] = token
                                if ks[PF, v] == 1:
                                    ks[PF, v] = 0
                                    unused += 1
                                    gevp_keys[n_gevp] = v
                                    n_gevp += 1
                            if token - ks[EVAT, key] <= window:
                                refetches += 1
                    ks[CUR, key] = nxt_acc[i]
                gevp_ptr[s + 1] = n_gevp
                l_acc[layer] += p1 - p0
                l_present[layer] += nh
            if op > 0 and (op - 1) % 2 == 1:  # end of the step: its pins go
                for i in range(step_ptr[s], step_ptr[s + 1]):
                    ks[PIN, keys[i]] = 0
                cum_ev[s] = evictions
                cum_rf[s] = refetches
    finish = np.nonzero(ks[PF])[0].astype(np.int64)
    unused += len(finish)
    return (acc_hit, acc_pf, load_ptr, load_keys[:n_load], pevp_ptr, pevp_keys[:n_pevp], gevp_ptr,
            gevp_keys[:n_gevp], cum_ev, cum_rf, l_acc, l_present, l_issued, l_useful, l_ev, finish,
            unused, refetches, bypassed)  # fmt: skip
