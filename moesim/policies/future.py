"""Index of the trace's future demand accesses, for offline policies (Belady, oracle-style bounds).

Memory is two flat arrays the length of the access stream (the keys as int16 where they fit, and
each access's next use as int32), no per-key copies: 6 bytes per access (768 MB for a million
OLMoE tokens), where a per-key int64 position index and its argsort took 24.
Queries come in replay order, so the general ``next_use(key, pos)`` is answered from a per-key
cursor advanced with the replay; the common queries (a hit or demand admission asks for the use
after the access at ``pos - 1``) read the precomputed array directly.
"""

from __future__ import annotations

import numpy as np

from moesim.policies.caches.base import NEVER

_CHUNK = 1 << 20


def next_positions(stream: np.ndarray) -> np.ndarray:
    """For each access, the index of the next access to the same key (``len(stream)`` if none).

    A backward pass in chunks: only a chunk's argsort is ever held, never the whole stream's.
    int32 when the positions fit, else int64.
    """
    n = len(stream)
    dtype = np.int32 if n < np.iinfo(np.int32).max else np.int64
    nxt = np.empty(n, dtype=dtype)
    if n == 0:
        return nxt
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
    return nxt


class FutureIndex:
    def __init__(self, stream: np.ndarray):
        stream = np.asarray(stream)
        if len(stream) and stream.max() <= np.iinfo(np.int16).max and stream.min() >= 0:
            stream = stream.astype(np.int16)  # keys of models up to 32k experts: half the bytes
        self._stream = stream
        self._n = len(self._stream)
        self._nxt = next_positions(self._stream)
        size = int(self._stream.max()) + 1 if self._n else 0
        # key -> first use at >= self._cursor (self._n if none); advanced lazily with the replay.
        self._at = np.full(size, self._n, dtype=np.int64)
        if self._n:
            keys, first = np.unique(self._stream, return_index=True)
            self._at[keys] = first
        self._cursor = 0

    def _advance(self, pos: int) -> None:
        c = self._cursor
        keys = self._stream[c:pos]
        nxt = self._nxt[c:pos]
        last = nxt >= pos  # each key's last access before pos: its next use is the first at >= pos
        self._at[keys[last]] = nxt[last]
        self._cursor = pos

    def _scan(self, key: int, pos: int) -> int:
        """A query behind the cursor (the replay never makes one): a plain forward scan."""
        hits = np.flatnonzero(self._stream[pos:] == key)
        return int(hits[0]) + pos if len(hits) else NEVER

    def next_use(self, key: int, pos: int) -> int:
        n = self._n
        if pos >= n:
            return NEVER
        if pos > 0 and self._stream[pos - 1] == key:
            v = int(self._nxt[pos - 1])
        elif self._stream[pos] == key:
            return pos
        else:
            if pos < self._cursor:
                return self._scan(key, pos)
            if pos > self._cursor:
                self._advance(pos)
            v = int(self._at[key]) if 0 <= key < len(self._at) else n
        return v if v < n else NEVER
