"""The timing pass: ``SimExecutor``'s clock over the decision pass's outputs, compiled (numba).

It reproduces the simulation executor operation for operation, in the same floating-point order:
per layer-step the compute stream (pre-attention norm, the predictor when it fires before
attention, attention + gate, shared experts, routed experts by readiness), the copy lanes with
``CopyEngine``'s semantics (a FIFO queue of prefetches served by the first free lane, demand copies
timed at once on the first free lane, a pending prefetch promoted when its gate needs it, an evicted
prefetch cancelled if it has not started, else wasted), and the clock advancing as SimPy's does
(``now + (cur - now)``). Only static batching, the fetch miss handler and no host tier.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moesim.engine.fast import jit  # noqa: F401  (sets numba's cache folder before the kernels)

from numba import njit  # isort: skip

PENDING, STARTED, CANCELLED = 0, 1, 2


# The helpers are inlined into ``timing`` at numba's IR level (``inline="always"``): a compiled call
# with array arguments costs reference counting per array, more than the helper's work (inlining
# them took the kernel from ~250 to ~145 ms on the OLMoE benchmark). The state is packed: transfers ``T[ISSUE|END, tr]`` and ``S[tr]`` (state), queue
# counters ``c[QH|QT]``, per-layer integer columns ``LS[row, layer]``. A prefetch's id is its place
# in the FIFO queue (so the queue needs no array); the demand copy of key ``k`` reuses id
# ``dbase + k`` (the previous one of that key is done with: the key missed).
#
# A run is timed chunk by chunk of whole groups (``TimingState`` carries the clock, the lanes, the
# queue and the copies still referenced). Within a chunk the ids are laid out as [carried queue
# ``q``][the chunk's prefetches][demand copies, one per key][other carried copies]; between chunks
# the carried ones are compacted to [queue][demand, one per key][others], so a carried id ``i``
# becomes ``i`` (queue) or ``i + n_prefetches`` (the rest) in the next chunk.
ISSUE, END = 0, 1
QH, QT = 0, 1
LATE, BDEM, BPF, BWASTED, WASTED, CANCEL = range(6)
NOW = 0  # TimingState.FS
H2D, EV_TOTAL, RF_TOTAL, PF_LATE = range(4)  # TimingState.IS


@dataclass
class TimingState:
    """What the timing pass keeps from one group to the next: the clock (``FS[NOW]``), the bytes and
    counter totals the token rows difference (``IS``), the lanes' busy-until times (``free``), the
    prefetch queue's counters (``c``), each key's copy in flight (``inflight``: ids into the carried
    copies ``CT``/``CS``) and the per-layer totals (``LS``, ``l_stall``)."""

    FS: np.ndarray
    IS: np.ndarray
    free: np.ndarray
    c: np.ndarray
    inflight: np.ndarray
    CT: np.ndarray
    CS: np.ndarray
    LS: np.ndarray
    l_stall: np.ndarray

    @classmethod
    def new(cls, L: int, E: int, lanes: int) -> TimingState:
        K = L * E
        return cls(
            np.zeros(1, np.float64), np.zeros(4, np.int64), np.zeros(lanes, np.float64),
            np.zeros(2, np.int64), np.full(K, -1, np.int64), np.zeros((2, K), np.float64),
            np.zeros(K, np.int8), np.zeros((6, L), np.int64), np.zeros(L, np.float64),
        )  # fmt: skip


@njit(cache=True, inline="always")
def _lane(free):
    """``free.index(min(free))``: the first lane free soonest."""
    best = 0
    for i in range(1, len(free)):
        if free[i] < free[best]:
            best = i
    return best


@njit(cache=True, inline="always")
def _advance(now, free, T, S, c, dur):
    """``CopyEngine.advance``: start every queued prefetch a lane would have started by ``now``."""
    while c[QH] < c[QT]:
        lane = _lane(free)
        f = free[lane]
        if f > now:
            return
        tr = c[QH]
        if S[tr] != PENDING:
            c[QH] += 1
            continue
        start = f if f > T[ISSUE, tr] else T[ISSUE, tr]
        if start > now:
            return
        c[QH] += 1
        T[END, tr] = start + dur
        free[lane] = start + dur
        S[tr] = STARTED


@njit(cache=True, inline="always")
def _schedule(tr, now, free, T, S, dur):
    """``CopyEngine.schedule``: a demand copy (or a promoted prefetch) on the first free lane."""
    lane = _lane(free)
    start = free[lane] if free[lane] > now else now
    if T[ISSUE, tr] > start:
        start = T[ISSUE, tr]
    T[END, tr] = start + dur
    free[lane] = start + dur
    S[tr] = STARTED


@njit(cache=True, inline="always")
def _evict(key, now, E, nbytes, dur, free, T, S, c, inflight, LS):
    """An undemanded prefetch evicted: cancelled if its copy has not started by ``now``, else
    wasted. Returns the bytes taken off the host-to-GPU total."""
    tr = inflight[key]
    inflight[key] = -1
    _advance(now, free, T, S, c, dur)
    layer = key // E
    if S[tr] == PENDING:
        S[tr] = CANCELLED
        LS[CANCEL, layer] += 1
        LS[BPF, layer] -= nbytes
        return nbytes
    LS[WASTED, layer] += 1
    LS[BWASTED, layer] += nbytes
    return 0


@njit(cache=True, inline="always")
def _issue(e, now, EP, load_keys, pevp_keys, E, nbytes, dur, free, T, S, c, inflight, LS):
    """``SimExecutor._issue_prefetches`` for plan event ``e`` at ``now``; returns the change in
    host-to-GPU bytes."""
    d = 0
    for i in range(EP[1, e], EP[1, e + 1]):
        d -= _evict(pevp_keys[i], now, E, nbytes, dur, free, T, S, c, inflight, LS)
    for i in range(EP[0, e], EP[0, e + 1]):
        key = load_keys[i]
        tr = c[QT]  # the queue's next place: prefetches are issued in event order
        c[QT] += 1
        T[ISSUE, tr] = now
        S[tr] = PENDING
        inflight[key] = tr
        LS[BPF, key // E] += nbytes
    return d + nbytes * (EP[0, e + 1] - EP[0, e])


@njit(cache=True, inline="always")
def _sort_ready(r, k, n):
    """Insertion sort of the first ``n`` (ready time, key) pairs, as Python sorts the tuples."""
    for i in range(1, n):
        rv, kv = r[i], k[i]
        j = i - 1
        while j >= 0 and (r[j] > rv or (r[j] == rv and k[j] > kv)):
            r[j + 1] = r[j]
            k[j + 1] = k[j]
            j -= 1
        r[j + 1] = rv
        k[j + 1] = kv


@njit(cache=True, nogil=True, error_model="numpy")  # no zero-divisor checks: E, L > 0
def timing(  # noqa: C901  (one compiled loop mirroring SimExecutor's phases, in their order)
    step_ptr, keys, acc_hit, acc_pf, acc_cnt, grp_step0, grp_tok0, grp_counts, step_layer, step_token,
    load_ptr, load_keys, pevp_ptr, pevp_keys, gevp_ptr, gevp_keys, cum_ev, cum_rf,
    c_norm, c_attn, c_gate, c_shared, c_pred, fires_pre, pred_on_gpu, pred_delays,
    L, E, lanes, dur, nbytes, ffn1, expert_ms, FS, IS, free, c, inflight, CT, CS, LS, l_stall,
):  # fmt: skip
    """One chunk of whole groups (indices from its start), from and into the carried state
    ``FS, IS, free, c, inflight, CT, CS, LS, l_stall`` (``TimingState``; ``CT, CS`` come back new).
    Returns (token rows, lead and slack samples, the carried copies ``CT, CS``)."""
    G = len(grp_step0) - 1
    K = L * E
    ntok = grp_tok0[G]
    n_load = len(load_keys)
    q = c[QT]  # the carried queue (c[QH] is 0)
    n_old = CT.shape[1]
    dbase = q + n_load
    T = np.empty((2, n_old + n_load), np.float64)
    S = np.empty(n_old + n_load, np.int8)
    T[:, :q] = CT[:, :q]
    S[:q] = CS[:q]
    T[:, dbase:] = CT[:, q:]
    S[dbase:] = CS[q:]
    for key in range(K):
        if inflight[key] >= q:
            inflight[key] += n_load
    EP = np.empty((2, len(load_ptr)), np.int64)
    EP[0, :] = load_ptr
    EP[1, :] = pevp_ptr
    n_pf = 0
    for i in range(len(acc_pf)):
        n_pf += acc_pf[i]
    lead = np.empty(n_pf, np.float64)
    slack = np.empty(n_pf, np.float64)
    n_lead = 0
    pf_late = IS[PF_LATE]
    tok_lat = np.zeros(ntok)
    tok_comp = np.zeros(ntok)
    tok_stall = np.zeros(ntok)
    tok_int = np.zeros((ntok, 6), np.int64)  # hits, late, misses, bytes, evictions, refetches
    kmax = 1
    for s in range(len(step_ptr) - 1):
        kmax = max(kmax, step_ptr[s + 1] - step_ptr[s])
    rr = np.empty(kmax, np.float64)
    rk = np.empty(kmax, np.int64)
    h2d = IS[H2D]
    now = FS[NOW]
    ev_total = IS[EV_TOTAL]
    rf_total = IS[RF_TOTAL]
    for g in range(G):
        s0, s1 = grp_step0[g], grp_step0[g + 1]
        counts = grp_counts[g] == 1
        # the tally of the group's first token starts before its first predictions
        b0, ev0, rf0 = h2d, ev_total, rf_total
        t_stall = 0.0
        t_comp = 0.0
        t_hits = t_late = t_miss = 0
        h2d += _issue(s0 + g, now, EP, load_keys, pevp_keys, E, nbytes, dur, free, T, S, c, inflight, LS)
        tok_start = now
        tok = 0
        for s in range(s0, s1):
            layer = step_layer[s]
            t0 = now
            if layer == 0:
                tok = step_token[s]
            pred = c_pred[tok]
            t_norm = t0 + c_norm[tok]
            e = s + g + 1
            if fires_pre:
                h2d += _issue(e, t_norm + pred, EP, load_keys, pevp_keys, E, nbytes, dur, free, T, S, c,
                              inflight, LS)  # fmt: skip
                if pred_on_gpu:
                    t_norm += pred
            t_gate = t_norm + c_attn[tok] + c_gate[tok]
            for i in range(gevp_ptr[s], gevp_ptr[s + 1]):
                h2d -= _evict(gevp_keys[i], t_gate, E, nbytes, dur, free, T, S, c, inflight, LS)
            _advance(t_gate, free, T, S, c, dur)
            p0, p1 = step_ptr[s], step_ptr[s + 1]
            late = 0
            n_done = 0
            nr = 0  # ready list (general path) or waits (short path)
            present = 0
            n_miss = 0
            if not counts:  # SimExecutor._gate_fast
                idle = c[QH] == c[QT]
                if idle:
                    for j in range(lanes):
                        if free[j] > t_gate:
                            idle = False
                for i in range(p0, p1):
                    if acc_hit[i] == 0:
                        continue
                    present += 1
                    tr = inflight[keys[i]]
                    if idle:
                        n_done += 1
                        if acc_pf[i] == 1:
                            lead[n_lead] = t_gate - T[ISSUE, tr]
                            slack[n_lead] = t_gate - T[END, tr]
                            n_lead += 1
                        continue
                    if tr < 0:  # preloaded with the model
                        n_done += 1
                        continue
                    if S[tr] == PENDING:
                        _schedule(tr, t_gate, free, T, S, dur)
                        late += 1
                    elif T[END, tr] > t_gate:
                        late += 1
                    end = T[END, tr]
                    if acc_pf[i] == 1:
                        lead[n_lead] = t_gate - T[ISSUE, tr]
                        slack[n_lead] = t_gate - end
                        n_lead += 1
                        if end > t_gate:
                            pf_late += 1
                    if end > t_gate:
                        rr[nr] = end
                        nr += 1
                    else:
                        n_done += 1
                lane_f = free[0] if free[0] > t_gate else t_gate
                for i in range(p0, p1):
                    if acc_hit[i] == 1:
                        continue
                    n_miss += 1
                    tr = dbase + keys[i]
                    T[ISSUE, tr] = t_gate
                    if lanes == 1:  # CopyEngine.submit_demands' one-lane loop
                        lane_f = lane_f + dur
                        T[END, tr] = lane_f
                        S[tr] = STARTED
                    else:
                        _schedule(tr, t_gate, free, T, S, dur)
                    inflight[keys[i]] = tr
                    rr[nr] = T[END, tr]
                    nr += 1
                if lanes == 1 and n_miss > 0:
                    free[0] = lane_f
            else:  # SimExecutor._gate_general
                for i in range(p0, p1):
                    if acc_hit[i] == 0:
                        continue
                    present += 1
                    key = keys[i]
                    tr = inflight[key]
                    if tr < 0:
                        rr[nr] = t_gate
                        rk[nr] = key
                        nr += 1
                        continue
                    if S[tr] == PENDING:
                        _schedule(tr, t_gate, free, T, S, dur)
                        late += 1
                    elif T[END, tr] > t_gate:
                        late += 1
                    if acc_pf[i] == 1:
                        lead[n_lead] = t_gate - T[ISSUE, tr]
                        if T[END, tr] > t_gate:
                            pf_late += 1
                        slack[n_lead] = t_gate - T[END, tr]
                        n_lead += 1
                    rr[nr] = T[END, tr]
                    rk[nr] = key
                    nr += 1
                for i in range(p0, p1):
                    if acc_hit[i] == 1:
                        continue
                    n_miss += 1
                    tr = dbase + keys[i]
                    T[ISSUE, tr] = t_gate
                    _schedule(tr, t_gate, free, T, S, dur)
                    inflight[keys[i]] = tr
                    rr[nr] = T[END, tr]
                    rk[nr] = keys[i]
                    nr += 1
            demand = n_miss * nbytes
            LS[BDEM, layer] += demand
            h2d += demand
            # compute: the after-gate plan's copies, then the experts
            if not fires_pre and (EP[0, e + 1] > EP[0, e] or EP[1, e + 1] > EP[1, e]):
                h2d += _issue(e, t_gate + pred, EP, load_keys, pevp_keys, E, nbytes, dur, free, T, S, c,
                              inflight, LS)  # fmt: skip
            t_exp = t_gate + pred if pred_delays else t_gate
            cur = t_exp + c_shared[tok]
            compute = cur - t0
            stall = 0.0
            if not counts:  # _compute_fast
                for _ in range(n_done):
                    cur += ffn1
                for j in range(1, nr):  # insertion sort of the waits (a handful)
                    rv = rr[j]
                    m = j - 1
                    while m >= 0 and rr[m] > rv:
                        rr[m + 1] = rr[m]
                        m -= 1
                    rr[m + 1] = rv
                for j in range(nr):
                    r = rr[j]
                    if r > cur:
                        stall += r - cur
                        cur = r
                    cur += ffn1
                compute += ffn1 * (n_done + nr)
            else:  # _compute_ready with tokens per expert
                _sort_ready(rr, rk, nr)
                for j in range(nr):
                    r = rr[j]
                    if r > cur:
                        stall += r - cur
                        cur = r
                    cnt = 1
                    for i in range(p0, p1):
                        if keys[i] == rk[j]:
                            cnt = acc_cnt[i]
                            break
                    ffn = expert_ms[cnt]
                    cur += ffn
                    compute += ffn
            if t_gate > cur:  # the CPU worker's results (none under fetch): kept for parity
                stall += t_gate - cur
                cur = t_gate
            l_stall[layer] += stall
            LS[LATE, layer] += late
            t_stall += stall
            t_hits += present - late
            t_late += late
            t_miss += (p1 - p0) - present
            t_comp += compute
            now = t0 + (cur - t0)  # SimPy: the timeout's delay added to the clock
            ev_total, rf_total = cum_ev[s], cum_rf[s]
            if layer == L - 1:
                tok_lat[tok] = now - tok_start
                tok_comp[tok] = t_comp
                tok_stall[tok] = t_stall
                tok_int[tok, 0] = t_hits
                tok_int[tok, 1] = t_late
                tok_int[tok, 2] = t_miss
                tok_int[tok, 3] = h2d - b0
                tok_int[tok, 4] = ev_total - ev0
                tok_int[tok, 5] = rf_total - rf0
                tok_start = now
                b0, ev0, rf0 = h2d, ev_total, rf_total
                t_stall = 0.0
                t_comp = 0.0
                t_hits = t_late = t_miss = 0
    FS[NOW] = now
    IS[H2D], IS[EV_TOTAL], IS[RF_TOTAL], IS[PF_LATE] = h2d, ev_total, rf_total, pf_late
    CT, CS = _carry(T, S, c, inflight, dbase, K)
    return (tok_lat, tok_comp, tok_stall, tok_int, lead[:n_lead], slack[:n_lead], CT, CS)


@njit(cache=True, nogil=True)
def _carry(T, S, c, inflight, dbase, K):
    """The copies the next chunk can still read, compacted to [queue][demand, one per key][others
    in flight], ``inflight`` and ``c`` renumbered to match. Read later: the queue's entries (in
    order) and the copies ``inflight`` names; any other copy is done with."""
    qh, qt = c[QH], c[QT]
    x = 0
    for key in range(K):
        tr = inflight[key]
        if tr >= 0 and not (qh <= tr < qt) and not (dbase <= tr < dbase + K):
            x += 1
    q2 = qt - qh
    CT = np.empty((2, q2 + K + x), np.float64)
    CS = np.empty(q2 + K + x, np.int8)
    CT[:, :q2] = T[:, qh:qt]
    CS[:q2] = S[qh:qt]
    CT[:, q2 : q2 + K] = T[:, dbase : dbase + K]
    CS[q2 : q2 + K] = S[dbase : dbase + K]
    j = q2 + K
    for key in range(K):
        tr = inflight[key]
        if tr < 0:
            continue
        if qh <= tr < qt:
            inflight[key] = tr - qh
        elif dbase <= tr < dbase + K:
            inflight[key] = q2 + tr - dbase
        else:
            CT[:, j] = T[:, tr]
            CS[j] = S[tr]
            inflight[key] = j
            j += 1
    c[QH] = 0
    c[QT] = q2
    return CT, CS
