"""Hand back the resident pages of a read-only memory-mapped trace array after a pass over it.

A pass over a whole trace (validation, the provenance digest) leaves every page it read resident in
the process: on a million-token OLMoE trace that is ~790 MB (experts and weights) counted in its
RSS for the rest of the run although the replay reads only ``experts``, bit by bit. The pages of a
read-only map are clean copies of the file: dropped, they are read back from the page cache if they
are needed again, so this changes memory, never a value.
"""

from __future__ import annotations

import mmap
from typing import Any


def release(arr: Any) -> None:
    """Drop the resident pages of ``arr``'s read-only memory map (the whole map, views included).

    A no-op for an in-memory array, a writable or copy-on-write map (whose pages may hold writes)
    and where ``madvise`` is missing."""
    mm = getattr(arr, "_mmap", None)  # np.memmap (and its views) keep their mmap.mmap here
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if mm is None or advice is None or getattr(arr, "mode", None) != "r" or not hasattr(mm, "madvise"):
        return
    try:
        mm.madvise(advice)
    except (OSError, ValueError):  # a closed map or a kernel that refuses the advice: keep the pages
        return
