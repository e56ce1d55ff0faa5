"""Two passes over a run's chunks at once: the decision pass of a chunk beside the timing pass of
the chunk before, on a second thread.

Each pass reads only its own carried state (``DecideState``, ``TimingState``) and the chunk's
inputs, and the kernels release the GIL (``nogil=True``), so on two cores a run takes about as long
as its slower pass instead of the sum of both. Every chunk is still decided in order and timed in
order, so the results are those of running the passes one after the other.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from moesim.host import usable_cores

C = TypeVar("C")
D = TypeVar("D")

# Off: every chunk decided and timed on the calling thread (MOESIM_FAST_THREADS=1 sets it off too).
ENABLED = os.environ.get("MOESIM_FAST_THREADS", "") != "1"


def overlapped(chunks: Iterable[C], decide: Callable[[C], D], time: Callable[[C, D], None]) -> None:
    """``time(chunk, decide(chunk))`` for every chunk, in order; the timing of a chunk runs on a
    second thread while the next chunk is decided, when there is more than one core."""
    if not ENABLED or usable_cores() < 2:
        for chunk in chunks:
            time(chunk, decide(chunk))
        return
    with ThreadPoolExecutor(1, thread_name_prefix="moesim-timing") as pool:
        pending: Future[None] | None = None
        for chunk in chunks:
            dec = decide(chunk)
            if pending is not None:
                pending.result()  # the chunk before is timed (and its error raised) first
            pending = pool.submit(time, chunk, dec)
        if pending is not None:
            pending.result()
