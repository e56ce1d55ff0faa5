"""Where expert weights live in a live run: the host tier (pinned on CUDA), the SSD tier (a file on
disk, when the scenario has a host-memory tier smaller than the model), and the fixed pool of
device slots; plus the functions the copy threads run per copy.

Expert ``key = layer * E + id`` is row ``key`` of the host pool and of the SSD file. The slot pool
has one row per cache slot plus a few scratch rows for misses streamed through without becoming
resident (``cache.bypass``); the executor maps resident experts to slots.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from moesim.engine.live.copier import LiveTransfer
from moesim.engine.live.device import LiveDevice
from moesim.engine.live.kernels import fill_random


def _bytes_view(t: torch.Tensor):
    """A writable numpy uint8 view of a contiguous CPU tensor (any dtype, bf16 included)."""
    return t.view(torch.uint8).numpy()


def drop_page_cache(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to forget cached pages of a file range, so the next read hits the disk."""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def write_expert_file(path: Path, rows: int, numel: int, dtype: torch.dtype, seed: int) -> None:
    """Write ``rows`` random experts back to back, flushed to the disk and out of the page cache."""
    block = fill_random(torch.empty(numel, dtype=dtype), seed)
    raw = _bytes_view(block).tobytes()
    with open(path, "wb") as fh:
        for _ in range(rows):
            fh.write(raw)
        fh.flush()
        os.fsync(fh.fileno())
        drop_page_cache(fh.fileno(), 0, 0)


class ExpertStore:
    def __init__(
        self,
        dev: LiveDevice,
        dtype: torch.dtype,
        num_experts_total: int,
        numel: int,
        num_slots: int,
        scratch_slots: int = 0,
        lanes: int = 1,
        ssd: bool = False,
        ssd_dir: str | None = None,
        seed: int = 0,
    ):
        self.dev = dev
        self.dtype = dtype
        self.numel = numel
        self.nbytes = numel * torch.tensor([], dtype=dtype).element_size()
        self.num_slots = num_slots
        self.scratch = list(range(num_slots, num_slots + scratch_slots))
        pin = dev.is_cuda
        self.slots = torch.empty(num_slots + scratch_slots, numel, dtype=dtype, device=dev.torch_device)
        self.slots.zero_()  # touch every page now, not inside the first timed copy
        self.host = torch.empty(num_experts_total, numel, dtype=dtype, pin_memory=pin)
        fill_random(self.host, seed + 1000)
        self.path: Path | None = None
        self._fd: int | None = None
        self._tmpdir: tempfile.TemporaryDirectory | None = None
        self.staging: list[torch.Tensor] = []
        if ssd:
            if ssd_dir is None:
                self._tmpdir = tempfile.TemporaryDirectory(prefix="moesim-ssd-")
                ssd_dir = self._tmpdir.name
            self.path = Path(ssd_dir) / f"moesim-experts-{os.getpid()}-{id(self)}.bin"
            write_expert_file(self.path, num_experts_total, numel, dtype, seed + 1000)
            self._fd = os.open(self.path, os.O_RDONLY)
            # one staging buffer per lane: a lane reads the file into it, then copies to the device
            self.staging = [torch.empty(numel, dtype=dtype, pin_memory=pin) for _ in range(max(1, lanes))]
        self.slot_free_evt: list = [None] * len(self.slots)  # CUDA: last compute that read each slot
        self.copy_streams: list = []
        if dev.is_cuda:
            self.copy_streams = [torch.cuda.Stream(device=dev.torch_device) for _ in range(max(1, lanes))]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            if self._tmpdir is None and self.path is not None:
                self.path.unlink(missing_ok=True)
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def load_now(self, key: int, slot: int) -> None:
        """Untimed, synchronous: an expert resident from the start (preloaded with the model)."""
        self.slots[slot].copy_(self.host[key])

    # -- one copy, run in a copy thread --------------------------------------------------------
    def _read_into(self, key: int, dst: torch.Tensor) -> None:
        fd = self._fd
        assert fd is not None, "SSD read without an SSD tier"
        off = key * self.nbytes
        got = os.preadv(fd, [_bytes_view(dst)], off)  # releases the GIL
        if got != self.nbytes:
            raise OSError(f"short read of expert {key} from {self.path}: {got} of {self.nbytes} bytes")
        drop_page_cache(fd, off, self.nbytes)

    def copy_functions(
        self,
    ) -> tuple[Callable[[LiveTransfer], None], Callable[[LiveTransfer], None] | None]:
        """(issue, complete) for the copy threads: on the CPU the whole copy happens in ``issue``."""
        if self.dev.is_cuda:
            return self._cuda_issue, _cuda_complete
        host, slots = self.host, self.slots

        def cpu_copy(tr: LiveTransfer) -> None:
            if tr.from_ssd:  # the file read lands in host memory (the DRAM tier), then moves
                src = self.staging[tr.lane]
                self._read_into(tr.key, src)
                slots[tr.slot].copy_(src)
            else:
                slots[tr.slot].copy_(host[tr.key])

        return cpu_copy, None

    def copy_arrived(self) -> Callable[[LiveTransfer], bool] | None:
        """CUDA: the non-blocking arrival check that lets a lane issue copies back to back."""
        return _cuda_arrived if self.dev.is_cuda else None

    def _cuda_issue(self, tr: LiveTransfer) -> None:
        stream = self.copy_streams[tr.lane]
        with torch.cuda.device(self.dev.torch_device), torch.cuda.stream(stream):
            if tr.from_ssd:
                src = self.staging[tr.lane]
                # the lane's previous copy from this staging buffer may still be reading it
                stream.synchronize()
                self._read_into(tr.key, src)
            else:
                src = self.host[tr.key]
            for dep in tr.after:  # an earlier copy into the slot, issued on another lane
                if isinstance(dep, LiveTransfer) and dep.end_evt is not None:
                    stream.wait_event(dep.end_evt)
            evt = self.slot_free_evt[tr.slot]
            if evt is not None:  # the compute stream may still read the slot's previous expert
                stream.wait_event(evt)
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record(stream)
            self.slots[tr.slot].copy_(src, non_blocking=True)
            end.record(stream)
        # published only once recorded: an unrecorded event reports itself complete
        tr.start_evt, tr.end_evt = start, end

    def mark_slot_read(self, slot: int, compute_stream) -> None:
        """CUDA: remember the compute that last read ``slot``; a later copy into it waits for it."""
        evt = torch.cuda.Event()
        evt.record(compute_stream)
        self.slot_free_evt[slot] = evt


def _cuda_arrived(tr: LiveTransfer) -> bool:
    return bool(tr.end_evt.query())


def _cuda_complete(tr: LiveTransfer) -> None:
    # the blocking form, for a worker without ``arrived`` (one copy per lane at a time)
    tr.end_evt.synchronize()
