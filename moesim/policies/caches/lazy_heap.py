"""The victim search shared by heap-ordered policies (LFU, Belady).

Their heaps are invalidated lazily: an entry is stale once its key's current ordering value no
longer matches. ``heap_victim`` drops stale entries, steps over pinned keys (putting them back),
and returns the best evictable key without removing it: choosing stays a pure peek.

Stale entries that never reach the top (Belady's: a hit moves a key's next use later, leaving its
old, nearer entry deep in the heap) would pile up one per hit, so ``push_bounded`` rebuilds the
heap from the live entries once it holds more than twice as many entries as live keys. Rebuilding
keeps exactly the live entries, so the order of the live ones, and every decision, is unchanged.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Container, Iterable


def heap_victim(heap: list[tuple], is_current: Callable[[tuple], bool], pinned: Container[int]) -> int | None:
    """Entries are tuples whose last item is the key; ``is_current(entry)`` says whether it is live."""
    skipped = []
    found = None
    while heap:
        entry = heap[0]
        if not is_current(entry):
            heapq.heappop(heap)  # stale
            continue
        if entry[-1] in pinned:
            skipped.append(heapq.heappop(heap))
            continue
        found = entry[-1]
        break
    for item in skipped:
        heapq.heappush(heap, item)
    return found


def push_bounded(
    heap: list[tuple], entry: tuple, live: int, live_entries: Callable[[], Iterable[tuple]]
) -> None:
    """Push ``entry``; when the heap exceeds ``2 * live + 64`` entries, rebuild it in place from
    ``live_entries()`` (the current entry of every live key, ``entry`` included)."""
    heapq.heappush(heap, entry)
    if len(heap) > 2 * live + 64:
        heap[:] = list(live_entries())
        heapq.heapify(heap)
