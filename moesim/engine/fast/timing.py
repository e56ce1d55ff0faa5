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

import numpy as np

from moesim.engine.fast import jit  # noqa: F401  (sets numba's cache folder before the kernels)

from numba import njit  # isort: skip

PENDING, STARTED, CANCELLED = 0, 1, 2


@njit(cache=True)
def _lane(free):
    """``free.index(min(free))``: the first lane free soonest."""
    best = 0
    for i in range(1, len(free)):
        if free[i] < free[best]:
            best = i
    return best


@njit(cache=True)
def _advance(now, free, q, qs, tr_issue, tr_start, tr_end, tr_state, dur):
    """Start every queued prefetch a lane would have started by ``now``."""
    while qs[0] < qs[1]:
        lane = _lane(free)
        f = free[lane]
        if f > now:
            return
        tr = q[qs[0]]
        if tr_state[tr] != PENDING:
            qs[0] += 1
            continue
        start = f if f > tr_issue[tr] else tr_issue[tr]
        if start > now:
            return
        qs[0] += 1
        tr_start[tr] = start
        tr_end[tr] = start + dur
        free[lane] = start + dur
        tr_state[tr] = STARTED


@njit(cache=True)
def _schedule(tr, now, free, tr_issue, tr_start, tr_end, tr_state, dur):
    lane = _lane(free)
    start = free[lane] if free[lane] > now else now
    if tr_issue[tr] > start:
        start = tr_issue[tr]
    tr_start[tr] = start
    tr_end[tr] = start + dur
    free[lane] = start + dur
    tr_state[tr] = STARTED


@njit(cache=True)
def _issue(e, now, load_ptr, load_keys, pevp_ptr, pevp_keys, E, nbytes, dur, free, q, qs, inflight,
           tr_issue, tr_start, tr_end, tr_state, ntr, l_bpf, l_wasted, l_bwasted, l_cancel, h2d):  # fmt: skip
    """``SimExecutor._issue_prefetches`` for plan event ``e`` at ``now``; returns the H2D bytes."""
    for i in range(pevp_ptr[e], pevp_ptr[e + 1]):
        h2d = _evict(pevp_keys[i], now, E, nbytes, dur, free, q, qs, inflight, tr_issue, tr_start, tr_end,
                     tr_state, l_bpf, l_wasted, l_bwasted, l_cancel, h2d)  # fmt: skip
    n = load_ptr[e + 1] - load_ptr[e]
    for i in range(load_ptr[e], load_ptr[e + 1]):
        key = load_keys[i]
        tr = ntr[0]
        ntr[0] += 1
        tr_issue[tr] = now
        tr_state[tr] = PENDING
        q[qs[1]] = tr
        qs[1] += 1
        inflight[key] = tr
        l_bpf[key // E] += nbytes
    return h2d + nbytes * n


@njit(cache=True)
def _evict(key, now, E, nbytes, dur, free, q, qs, inflight, tr_issue, tr_start, tr_end, tr_state, l_bpf,
           l_wasted, l_bwasted, l_cancel, h2d):  # fmt: skip
    """An undemanded prefetch evicted: cancelled if its copy has not started by ``now``, else wasted."""
    tr = inflight[key]
    inflight[key] = -1
    _advance(now, free, q, qs, tr_issue, tr_start, tr_end, tr_state, dur)
    layer = key // E
    if tr_state[tr] == PENDING:
        tr_state[tr] = CANCELLED
        l_cancel[layer] += 1
        l_bpf[layer] -= nbytes
        return h2d - nbytes
    l_wasted[layer] += 1
    l_bwasted[layer] += nbytes
    return h2d


@njit(cache=True)
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


@njit(cache=True)
def _sort_floats(r, n):
    for i in range(1, n):
        rv = r[i]
        j = i - 1
        while j >= 0 and r[j] > rv:
            r[j + 1] = r[j]
            j -= 1
        r[j + 1] = rv


@njit(cache=True)
def timing(
    step_ptr, keys, acc_hit, acc_pf, acc_cnt, grp_step0, grp_tok0, grp_counts,
    load_ptr, load_keys, pevp_ptr, pevp_keys, gevp_ptr, gevp_keys, cum_ev, cum_rf, finish_keys,
    c_norm, c_attn, c_gate, c_shared, c_pred, fires_pre, pred_on_gpu, pred_delays,
    L, E, lanes, dur, nbytes, ffn1, expert_ms,
):  # fmt: skip
    """Returns (token rows, layer columns, lead and slack samples, prefetch_late, makespan)."""
    G = len(grp_step0) - 1
    K = L * E
    ntok = grp_tok0[G]
    ntr_max = len(load_keys) + len(keys)
    tr_issue = np.zeros(ntr_max, np.float64)
    tr_start = np.full(ntr_max, -1.0)
    tr_end = np.full(ntr_max, -1.0)
    tr_state = np.zeros(ntr_max, np.int8)
    ntr = np.zeros(1, np.int64)
    q = np.empty(max(len(load_keys), 1), np.int64)
    qs = np.zeros(2, np.int64)  # queue head, tail
    free = np.zeros(lanes, np.float64)
    inflight = np.full(K, -1, np.int64)
    n_pf = 0
    for i in range(len(acc_pf)):
        n_pf += acc_pf[i]
    lead = np.empty(n_pf, np.float64)
    slack = np.empty(n_pf, np.float64)
    n_lead = 0
    n_slack = 0
    pf_late = 0
    tok_lat = np.zeros(ntok)
    tok_comp = np.zeros(ntok)
    tok_stall = np.zeros(ntok)
    tok_int = np.zeros((ntok, 6), np.int64)  # hits, late, misses, bytes, evictions, refetches
    l_late = np.zeros(L, np.int64)
    l_stall = np.zeros(L, np.float64)
    l_bdem = np.zeros(L, np.int64)
    l_bpf = np.zeros(L, np.int64)
    l_bwasted = np.zeros(L, np.int64)
    l_wasted = np.zeros(L, np.int64)
    l_cancel = np.zeros(L, np.int64)
    kmax = 1
    for s in range(len(step_ptr) - 1):
        kmax = max(kmax, step_ptr[s + 1] - step_ptr[s])
    rr = np.empty(kmax, np.float64)
    rk = np.empty(kmax, np.int64)
    h2d = 0
    now = 0.0
    ev_total = 0
    rf_total = 0
    for g in range(G):
        s0, s1 = grp_step0[g], grp_step0[g + 1]
        counts = grp_counts[g] == 1
        # the tally of the group's first token starts before its first predictions
        b0, ev0, rf0 = h2d, ev_total, rf_total
        t_stall = 0.0
        t_comp = 0.0
        t_hits = t_late = t_miss = 0
        h2d = _issue(s0 + g, now, load_ptr, load_keys, pevp_ptr, pevp_keys, E, nbytes, dur, free, q, qs,
                     inflight, tr_issue, tr_start, tr_end, tr_state, ntr, l_bpf, l_wasted, l_bwasted,
                     l_cancel, h2d)  # fmt: skip
        tok_start = now
        tok = 0
        for s in range(s0, s1):
            local = s - s0
            layer = local % L
            t0 = now
            if layer == 0:
                tok = grp_tok0[g] + local // L
            pred = c_pred[tok]
            t_norm = t0 + c_norm[tok]
            if fires_pre:
                h2d = _issue(s + g + 1, t_norm + pred, load_ptr, load_keys, pevp_ptr, pevp_keys, E, nbytes,
                             dur, free, q, qs, inflight, tr_issue, tr_start, tr_end, tr_state, ntr, l_bpf,
                             l_wasted, l_bwasted, l_cancel, h2d)  # fmt: skip
                if pred_on_gpu:
                    t_norm += pred
            t_gate = t_norm + c_attn[tok] + c_gate[tok]
            for i in range(gevp_ptr[s], gevp_ptr[s + 1]):
                h2d = _evict(gevp_keys[i], t_gate, E, nbytes, dur, free, q, qs, inflight, tr_issue, tr_start,
                             tr_end, tr_state, l_bpf, l_wasted, l_bwasted, l_cancel, h2d)  # fmt: skip
            _advance(t_gate, free, q, qs, tr_issue, tr_start, tr_end, tr_state, dur)
            p0, p1 = step_ptr[s], step_ptr[s + 1]
            late = 0
            n_done = 0
            nr = 0  # ready list (general path) or waits (short path)
            present = 0
            n_miss = 0
            if not counts:  # SimExecutor._gate_fast
                idle = qs[0] == qs[1] and np.max(free) <= t_gate
                for i in range(p0, p1):
                    if acc_hit[i] == 0:
                        continue
                    present += 1
                    tr = inflight[keys[i]]
                    if idle:
                        n_done += 1
                        if acc_pf[i] == 1:
                            lead[n_lead] = t_gate - tr_issue[tr]
                            n_lead += 1
                            slack[n_slack] = t_gate - tr_end[tr]
                            n_slack += 1
                        continue
                    if tr < 0:  # preloaded with the model
                        n_done += 1
                        continue
                    if tr_state[tr] == PENDING:
                        _schedule(tr, t_gate, free, tr_issue, tr_start, tr_end, tr_state, dur)
                        late += 1
                    elif tr_end[tr] > t_gate:
                        late += 1
                    end = tr_end[tr]
                    if acc_pf[i] == 1:
                        lead[n_lead] = t_gate - tr_issue[tr]
                        n_lead += 1
                        slack[n_slack] = t_gate - end
                        n_slack += 1
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
                    tr = ntr[0]
                    ntr[0] += 1
                    tr_issue[tr] = t_gate
                    if lanes == 1:
                        tr_start[tr] = lane_f
                        lane_f = lane_f + dur
                        tr_end[tr] = lane_f
                        tr_state[tr] = STARTED
                    else:
                        _schedule(tr, t_gate, free, tr_issue, tr_start, tr_end, tr_state, dur)
                    inflight[keys[i]] = tr
                    rr[nr] = tr_end[tr]
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
                    if tr_state[tr] == PENDING:
                        _schedule(tr, t_gate, free, tr_issue, tr_start, tr_end, tr_state, dur)
                        late += 1
                    elif tr_end[tr] > t_gate:
                        late += 1
                    if acc_pf[i] == 1:
                        lead[n_lead] = t_gate - tr_issue[tr]
                        n_lead += 1
                        if tr_end[tr] > t_gate:
                            pf_late += 1
                        slack[n_slack] = t_gate - tr_end[tr]
                        n_slack += 1
                    rr[nr] = tr_end[tr]
                    rk[nr] = key
                    nr += 1
                for i in range(p0, p1):
                    if acc_hit[i] == 1:
                        continue
                    n_miss += 1
                    tr = ntr[0]
                    ntr[0] += 1
                    tr_issue[tr] = t_gate
                    _schedule(tr, t_gate, free, tr_issue, tr_start, tr_end, tr_state, dur)
                    inflight[keys[i]] = tr
                    rr[nr] = tr_end[tr]
                    rk[nr] = keys[i]
                    nr += 1
            demand = n_miss * nbytes
            l_bdem[layer] += demand
            h2d += demand
            # compute: the after-gate plan's copies, then the experts
            e = s + g + 1
            if not fires_pre and (load_ptr[e + 1] > load_ptr[e] or pevp_ptr[e + 1] > pevp_ptr[e]):
                h2d = _issue(e, t_gate + pred, load_ptr, load_keys, pevp_ptr, pevp_keys, E, nbytes, dur, free,
                             q, qs, inflight, tr_issue, tr_start, tr_end, tr_state, ntr, l_bpf, l_wasted,
                             l_bwasted, l_cancel, h2d)  # fmt: skip
            t_exp = t_gate + pred if pred_delays else t_gate
            cur = t_exp + c_shared[tok]
            compute = cur - t0
            stall = 0.0
            if not counts:  # _compute_fast
                for _ in range(n_done):
                    cur += ffn1
                _sort_floats(rr, nr)
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
                    c = 1
                    for i in range(p0, p1):
                        if keys[i] == rk[j]:
                            c = acc_cnt[i]
                            break
                    ffn = expert_ms[c]
                    cur += ffn
                    compute += ffn
            if t_gate > cur:  # the CPU worker's results (none under fetch): kept for parity
                stall += t_gate - cur
                cur = t_gate
            l_stall[layer] += stall
            l_late[layer] += late
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
    for key in finish_keys:  # undemanded prefetches at the end: wasted
        inflight[key] = -1
        l_wasted[key // E] += 1
        l_bwasted[key // E] += nbytes
    layers = (l_late, l_stall, l_bdem, l_bpf, l_bwasted, l_wasted, l_cancel)
    return (tok_lat, tok_comp, tok_stall, tok_int, layers, lead[:n_lead], slack[:n_slack], pf_late, now)
