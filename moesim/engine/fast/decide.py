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
from moesim.engine.fast.heap import SLACK, push, rebuild, victim

from numba import njit  # isort: skip

LRU, FIFO, LFU, BELADY = 0, 1, 2, 3
POLICY_CODES = {"lru": LRU, "fifo": FIFO, "lfu": LFU, "belady": BELADY}
NEVER = 1 << 62  # moesim.policies.caches.base.NEVER
# LFU and Belady: a pool of at most this many slots scans its residents for a victim, a larger one
# keeps a heap (heap.py). Measured on OLMoE (popularity predictions, horizon 2, one global pool), the
# scan was as fast as the heap at 64 slots for LFU and faster up to about 128 for Belady (whose
# victim search steps over ~4 pinned entries per eviction at 64 slots); from 256 the heap was 2-5x
# faster. (Tests set 0 to put every pool on a heap.)
SCAN_MAX = 64
# numba keys decide's on-disk cache to the text of this file alone, not of heap.py whose helpers it
# inlines: this digest of heap.py makes an edit there an edit here too, or a cached kernel would keep
# the old helpers (tests/engine/test_fast_heap.py checks it; the digest: blake2b, 8 bytes, of heap.py)
HEAP_DIGEST = "bbc65b8fe0e30428"
_NEVER_EVICTED = -(1 << 62)  # moesim.policies.core._NEVER


@dataclass
class Decisions:
    """The decision pass's outputs for one chunk of groups (see ``decide``); arrays indexed as its
    docstring says, counted from the chunk's first step, event and access."""

    acc_hit: np.ndarray  # per access: resident at its gate
    acc_pf: np.ndarray  # per access: a hit on a prefetch not demanded before
    load_ptr: np.ndarray  # per plan event: its prefetch loads (CSR into load_keys)
    load_keys: np.ndarray
    pevp_ptr: np.ndarray  # per plan event: undemanded prefetches it evicted
    pevp_keys: np.ndarray
    gevp_ptr: np.ndarray  # per step: undemanded prefetches its gate's demand inserts evicted
    gevp_keys: np.ndarray
    cum_evictions: np.ndarray  # per step: evictions so far in the run, after the step
    cum_refetches: np.ndarray


# Rows of the decision state's arrays (``DecideState``).
LNEXT, LPREV, FREQ, TICK, NU, CUR, EVAT = range(7)  # KS: int64 per key
RES, PIN, PF = range(3)  # K8: int8 per key
HEAD, TAIL, SIZE = range(3)  # PS: int64 per pool
CLOCK, UNUSED, REFETCHES, BYPASSED, EVICTIONS = range(5)  # SC: int64 scalars
L_ACC, L_PRESENT, L_ISSUED, L_USEFUL, L_EV = range(5)  # LC: int64 per layer


@dataclass
class DecideState:
    """What the policy core keeps from one group to the next (its pools' residents and their order,
    each policy's counters, prefetch flags, eviction steps for the refetch window, Belady's next
    uses) and its run totals: the decision pass runs chunk by chunk of groups and carries these."""

    KS: np.ndarray
    K8: np.ndarray
    PS: np.ndarray
    SC: np.ndarray
    LC: np.ndarray

    @classmethod
    def new(cls, L: int, E: int, pools: int, first: np.ndarray | None = None) -> DecideState:
        """An empty cache; ``first``: Belady's first demand position of each key (NEVER: none)."""
        K = L * E
        KS = np.zeros((7, K), np.int64)
        KS[LNEXT] = -1
        KS[LPREV] = -1
        KS[EVAT] = _NEVER_EVICTED
        if first is not None:
            KS[CUR] = first
        PS = np.zeros((3, pools), np.int64)
        PS[HEAD] = -1
        PS[TAIL] = -1
        return cls(KS, np.zeros((3, K), np.int8), PS, np.zeros(5, np.int64), np.zeros((5, L), np.int64))

    @property
    def layer_accesses(self) -> np.ndarray:
        return self.LC[L_ACC]

    @property
    def layer_present(self) -> np.ndarray:
        return self.LC[L_PRESENT]

    def finish_keys(self) -> np.ndarray:
        """Prefetches never demanded, resident at the end of the run (sorted)."""
        return np.nonzero(self.K8[PF])[0].astype(np.int64)


@njit(cache=True, nogil=True, error_model="numpy")  # no zero-divisor checks: E, L > 0
def decide(  # noqa: C901  (one function on purpose: see the docstring)
    step_ptr, keys, step_layer, step_token, grp_step0, grp_tok0, tok_off, ev_ptr, ev_keys,
    fires_pre, L, E, policy, layered, caps, scan_max, window, nxt_acc, KS, K8, PS, SC, LC,
):  # fmt: skip
    """Plan events: group ``g``'s start is event ``grp_step0[g] + g``, its step ``s`` (global)
    event ``s + g + 1`` (the step's pre-attention or after-gate plan, by ``fires_pre``).

    One chunk of whole groups (indices from the chunk's start; ``tok_off``: the decode step of its
    first token in the run), from and into the carried state ``KS, K8, PS, SC, LC`` (``DecideState``).
    ``scan_max``: LFU's and Belady's pools of more slots than this keep a victim heap (``SCAN_MAX``).
    ``nxt_acc`` (Belady only, else unread): each access's next demand position of its key in the run
    (NEVER: none). One loop over the core's calls in order (per group: the start plan; per step two
    calls, the plan and the gate in the order ``fires_pre`` says), and in it one loop over the call's
    keys that admits both prefetches and demand misses: all in one function, its only helpers (LFU's
    and Belady's victim heaps, ``heap.py``) inlined, because numba's calls with array arguments cost
    more than the work they would do here."""
    nsteps = len(step_ptr) - 1
    nacc = len(keys)
    G = len(grp_step0) - 1
    nev = len(ev_ptr) - 1
    lnext = KS[LNEXT]  # per pool, a doubly linked list of its residents, oldest first
    lprev = KS[LPREV]
    head = PS[HEAD]
    tail = PS[TAIL]
    size = PS[SIZE]
    res = K8[RES]  # resident
    pin = K8[PIN]  # pinned
    freq = KS[FREQ]  # LFU: demand accesses while resident
    tick = KS[TICK]  # LFU: last touch
    nu_ = KS[NU]  # Belady: next demand position
    cur = KS[CUR]  # per key: its first demand position not yet replayed
    pf = K8[PF]  # admitted by prefetch, not demanded since
    evat = KS[EVAT]  # decode step of the key's last eviction
    added = np.zeros(len(lnext), np.int64)
    clock = SC[CLOCK]  # LFU's tick counter
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
    l_acc = LC[L_ACC]
    l_present = LC[L_PRESENT]
    l_issued = LC[L_ISSUED]
    l_useful = LC[L_USEFUL]
    l_ev = LC[L_EV]
    n_load = n_pevp = n_gevp = 0
    unused, refetches, bypassed, evictions = SC[UNUSED], SC[REFETCHES], SC[BYPASSED], SC[EVICTIONS]
    # LFU and Belady: the victim heap (heap.py) of each pool of more than scan_max slots, rebuilt
    # from its residents at each chunk (so the carried state needs none)
    ranked = policy == LFU or policy == BELADY  # noqa: SIM109  (int comparisons, as elsewhere in the kernel)
    belady = policy == BELADY
    npools = len(caps)
    hoff = np.zeros(npools + 1, np.int64)  # pool q's heap: slots hoff[q] to hoff[q + 1] (none: it scans)
    hn = np.zeros(npools, np.int64)  # its entries
    room = 0
    if ranked:
        for q in range(npools):
            most = max(min(caps[q], E if layered else len(lnext)), size[q])  # residents at most
            slots = 2 * most + SLACK if most > scan_max else 0
            room = max(room, slots)
            hoff[q + 1] = hoff[q] + slots
    H = np.empty((3, hoff[npools]), np.int64)
    aside = np.empty((3, room), np.int64)  # the pinned entries one victim search steps over
    for q in range(npools):
        if hoff[q + 1] > hoff[q]:
            hn[q] = rebuild(H, hoff[q], head[q], lnext, belady, freq, tick, nu_)
    for g in range(G):
        s0, s1 = grp_step0[g], grp_step0[g + 1]
        for op in range(1 + 2 * (s1 - s0)):
            if op == 0:  # the group's first predictions
                is_plan = True
                s = s0
                e = s0 + g
                token = grp_tok0[g] + tok_off
            else:
                s = s0 + (op - 1) // 2
                is_plan = ((op - 1) % 2 == 0) == fires_pre
                e = s + g + 1
                token = step_token[s] + tok_off
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
                        else:
                            if policy == LFU:
                                clock += 1
                                freq[key] += 1
                                tick[key] = clock
                            elif policy == BELADY:
                                nu_[key] = nxt_acc[i]
                            if hoff[pool + 1] > hoff[pool]:  # its new priority
                                hn[pool] = push(H, hoff[pool], hn[pool], hoff[pool + 1] - hoff[pool], key,
                                                head[pool], lnext, belady, freq, tick, nu_)  # fmt: skip
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
                        if not ranked:  # LRU, FIFO: the oldest unpinned
                            while k2 >= 0:
                                if pin[k2] == 0:
                                    v = k2
                                    break
                                k2 = lnext[k2]
                        elif hoff[pool + 1] > hoff[pool]:  # the heap's least (the scan's choice below)
                            v, hn[pool] = victim(H, hoff[pool], hn[pool], aside, res, pin, belady, freq,
                                                 tick, nu_)  # fmt: skip
                        else:  # a small pool: a scan of its residents
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
                            nu_[key] = cur[key] if is_plan else nxt_acc[i]
                        if hoff[pool + 1] > hoff[pool]:
                            hn[pool] = push(H, hoff[pool], hn[pool], hoff[pool + 1] - hoff[pool], key, head[pool],
                                            lnext, belady, freq, tick, nu_)  # fmt: skip
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
                elif policy == BELADY:
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
    SC[CLOCK], SC[UNUSED], SC[REFETCHES], SC[BYPASSED], SC[EVICTIONS] = (
        clock,
        unused,
        refetches,
        bypassed,
        evictions,
    )
    return (acc_hit, acc_pf, load_ptr, load_keys[:n_load], pevp_ptr, pevp_keys[:n_pevp], gevp_ptr,
            gevp_keys[:n_gevp], cum_ev, cum_rf)  # fmt: skip


@njit(cache=True)
def first_uses(keys, acc0, K):
    """Each key's first position in ``keys`` (as a run position: ``acc0`` + index; NEVER: none)."""
    out = np.full(K, NEVER, np.int64)
    for i in range(len(keys) - 1, -1, -1):
        out[keys[i]] = acc0 + i
    return out


@njit(cache=True)
def next_uses(keys, acc0, after):
    """Belady's next demand position of each access of a chunk (``acc0``: the run position of its
    first access), those past its end taken from ``after`` (each key's first position after the
    chunk, NEVER: none)."""
    seen = after.copy()
    nxt = np.empty(len(keys), np.int64)
    for i in range(len(keys) - 1, -1, -1):
        k = keys[i]
        nxt[i] = seen[k]
        seen[k] = acc0 + i
    return nxt
