"""LFU's and Belady's victim search in the decision pass: a lazily invalidated binary min-heap per
pool in numba arrays (the compiled counterpart of ``moesim.policies.caches.lazy_heap``).

An entry is ``(p1, p2, key)`` ordered by ``(p1, p2)``: LFU's ``(frequency, tick)`` and Belady's
``(-next use, key)``, the orders the policies minimise. A key gets a new entry whenever its priority
changes (admission, hit); the older ones go stale. An entry is live while its key is resident with
that very priority (ticks are unique per touch and Belady's second item is the key, so live entries
of one key are identical). Every resident has a live entry, so the least live unpinned entry is the
victim a scan of the residents would pick, tie for tie.

Stale entries that never reach the top (a Belady hit moves a key's next use later, leaving its
nearer entry deep in the heap) would pile up, so a pool's heap has room for twice its residents
plus 64, and a push into a full heap rebuilds it from the residents instead (they include the key).

Layout: ``H[P1|P2|KEY, off + i]``, pool ``q``'s heap at ``off = hoff[q]`` with ``n`` entries and
``hoff[q + 1] - off`` slots. The helpers are inlined into ``decide`` (``inline="always"``; see
``timing.py`` for why). numba's on-disk cache of ``decide`` is keyed to the text of ``decide.py``
alone (touching it changes nothing): after editing this file, set ``decide.HEAP_DIGEST`` to its new
digest (a test says which), or the cached kernel keeps the old helpers.
"""

from __future__ import annotations

from moesim.engine.fast import jit  # noqa: F401  (sets numba's cache folder before the kernels)

from numba import njit  # isort: skip

P1, P2, KEY = range(3)
SLACK = 64  # a heap's slots beyond twice its pool's residents


@njit(cache=True, inline="always")
def priority(belady, key, freq, tick, nu_):
    """The key's current entry order: Belady ``(-next use, key)``, LFU ``(frequency, tick)``."""
    if belady:
        return -nu_[key], key
    return freq[key], tick[key]


@njit(cache=True, inline="always")
def _sift_up(H, off, i):
    a, b, k = H[P1, off + i], H[P2, off + i], H[KEY, off + i]
    while i > 0:
        j = (i - 1) >> 1
        pa, pb = H[P1, off + j], H[P2, off + j]
        if a < pa or (a == pa and b < pb):
            H[P1, off + i], H[P2, off + i], H[KEY, off + i] = pa, pb, H[KEY, off + j]
            i = j
        else:
            break
    H[P1, off + i], H[P2, off + i], H[KEY, off + i] = a, b, k


@njit(cache=True, inline="always")
def _sift_down(H, off, n, i):
    a, b, k = H[P1, off + i], H[P2, off + i], H[KEY, off + i]
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        ca, cb = H[P1, off + c], H[P2, off + c]
        if c + 1 < n:
            da, db = H[P1, off + c + 1], H[P2, off + c + 1]
            if da < ca or (da == ca and db < cb):
                c += 1
                ca, cb = da, db
        if ca < a or (ca == a and cb < b):
            H[P1, off + i], H[P2, off + i], H[KEY, off + i] = ca, cb, H[KEY, off + c]
            i = c
        else:
            break
    H[P1, off + i], H[P2, off + i], H[KEY, off + i] = a, b, k


@njit(cache=True, inline="always")
def rebuild(H, off, first, lnext, belady, freq, tick, nu_):
    """The heap of a pool's residents (``first``: its oldest, ``lnext``: the list), one live entry
    each; returns the entry count."""
    n = 0
    k = first
    while k >= 0:
        a, b = priority(belady, k, freq, tick, nu_)
        H[P1, off + n], H[P2, off + n], H[KEY, off + n] = a, b, k
        n += 1
        k = lnext[k]
    for i in range(n // 2 - 1, -1, -1):
        _sift_down(H, off, n, i)
    return n


@njit(cache=True, inline="always")
def push(H, off, n, room, key, first, lnext, belady, freq, tick, nu_):
    """Push the resident ``key``'s current entry into a heap of ``n`` entries and ``room`` slots;
    returns the new count (a full heap is rebuilt from the pool's residents instead)."""
    if n >= room:
        return rebuild(H, off, first, lnext, belady, freq, tick, nu_)
    a, b = priority(belady, key, freq, tick, nu_)
    H[P1, off + n], H[P2, off + n], H[KEY, off + n] = a, b, key
    _sift_up(H, off, n)
    return n + 1


@njit(cache=True, inline="always")
def victim(H, off, n, aside, res, pin, belady, freq, tick, nu_):
    """The key of the least live entry whose key is not pinned, that entry popped (-1: none, every
    resident pinned), and the new count. Stale entries met on the way are dropped; live pinned ones
    are set aside in ``aside`` (as many slots as the heap) and pushed back."""
    v = -1
    m = 0
    while n > 0 and v < 0:
        a, b, k = H[P1, off], H[P2, off], H[KEY, off]
        live = False
        if res[k] == 1:
            ca, cb = priority(belady, k, freq, tick, nu_)
            live = ca == a and cb == b
        if live:
            if pin[k] == 0:
                v = k
            else:
                aside[P1, m], aside[P2, m], aside[KEY, m] = a, b, k
                m += 1
        n -= 1  # pop the top: the last entry to the root, sifted down
        if n > 0:
            H[P1, off], H[P2, off], H[KEY, off] = H[P1, off + n], H[P2, off + n], H[KEY, off + n]
            _sift_down(H, off, n, 0)
    for j in range(m):
        H[P1, off + n], H[P2, off + n], H[KEY, off + n] = aside[P1, j], aside[P2, j], aside[KEY, j]
        _sift_up(H, off, n)
        n += 1
    return v, n
