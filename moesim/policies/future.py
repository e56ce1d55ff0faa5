"""Index of the trace's future demand accesses, for offline policies (Belady, oracle-style bounds).

Memory is one flat array the length of the access stream, each access's next use (int32 where
positions fit): 4 bytes per access (512 MB for a million OLMoE tokens), where a per-key int64
position index and its argsort took 24, and the stream itself is not kept. Queries come in replay
order, so ``next_use(key, pos)`` walks a per-key cursor forward along that key's chain of next
uses: a hit or a demand admission (the use after the access at ``pos - 1``) is one step.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from moesim.policies.caches.base import NEVER

_CHUNK = 1 << 20


def next_positions(stream: np.ndarray) -> np.ndarray:
    """For each access, the index of the next access to the same key (``len(stream)`` if none)."""
    return next_and_first(stream)[0]


def next_and_first(stream: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(next positions as in ``next_positions``, each key's first position or ``len(stream)``).

    A backward pass in chunks: only a chunk's argsort is ever held, never the whole stream's
    (a whole-stream sort, e.g. ``np.unique(return_index=True)``, took 4 GB on a million tokens).
    int32 when the positions fit, else int64.
    """
    n = len(stream)
    dtype = np.int32 if n < np.iinfo(np.int32).max else np.int64
    nxt = np.empty(n, dtype=dtype)
    if n == 0:
        return nxt, np.zeros(0, np.int64)
    first_after = np.full(int(stream.max()) + 1, n, dtype=np.int64)  # key -> first use at >= chunk end
    for end in range(n, 0, -_CHUNK):
        start = max(0, end - _CHUNK)
        keys = np.asarray(stream[start:end], dtype=np.int64)
        order = np.argsort(keys, kind="stable")
        sk = keys[order]
        local = np.empty(len(keys), dtype=np.int64)
        same = sk[1:] == sk[:-1]
        last_of_key = np.ones(len(keys), dtype=bool)
        last_of_key[:-1] = ~same
        local[order[:-1][same]] = order[1:][same] + start
        tails = order[last_of_key]
        local[tails] = first_after[keys[tails]]
        heads = order[np.concatenate([[True], ~same])]
        first_after[keys[heads]] = heads + start
        nxt[start:end] = local
    return nxt, first_after


class FutureIndex:
    def __init__(self, stream: np.ndarray):
        self._n = len(stream)
        self._nxt, self._first = next_and_first(np.asarray(stream))  # key -> its first use (n if none)
        size = len(self._first)
        # Per key: the last query position and the first use at or after it. Queries come in replay
        # order, so each key's cursor only walks forward along its own chain of next uses.
        self._asked = np.zeros(size, dtype=np.int64)
        self._at = self._first.copy()

    def next_use(self, key: int, pos: int) -> int:
        n = self._n
        if not 0 <= key < len(self._at) or pos >= n:
            return NEVER
        nxt = self._nxt
        # Behind this key's cursor (the replay never asks that): start over from its first use.
        at = int(self._first[key]) if pos < self._asked[key] else int(self._at[key])
        while at < pos:
            at = int(nxt[at])
        self._asked[key] = pos
        self._at[key] = at
        return at if at < n else NEVER


def lazy_next_use(stream: Callable[[], np.ndarray]) -> Callable[[int, int], int]:
    """``FutureIndex(stream()).next_use``, the index built on the first query: the fast executor
    computes next uses chunk by chunk and never asks, and a whole-run index is ~1.4 GB at a
    million tokens."""
    built: list[Callable[[int, int], int]] = []

    def next_use(key: int, pos: int) -> int:
        if not built:
            built.append(FutureIndex(stream()).next_use)
        return built[0](key, pos)

    return next_use
