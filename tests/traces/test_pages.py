"""``moesim.traces.pages.release``: a read-only trace map gives its pages back, values unchanged."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from moesim.traces.pages import release

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")


def _rss_file_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssFile:"):
                return int(line.split()[1])
    raise AssertionError("no RssFile in /proc/self/status")


def _mapped(tmp_path, mode: str = "r") -> np.ndarray:
    path = tmp_path / "a.npy"
    np.save(path, np.arange(8 << 20, dtype=np.int64))  # 64 MiB
    return np.load(path, mmap_mode=mode)


@linux
def test_release_drops_the_pages_and_keeps_the_values(tmp_path) -> None:
    arr = _mapped(tmp_path)
    total = int(arr.sum())  # touches every page
    before = _rss_file_kb()
    release(arr[: len(arr) // 2])  # a view releases its whole map
    after = _rss_file_kb()
    assert before - after > 48 << 10, (before, after)  # most of the 64 MiB went
    assert int(arr.sum()) == total == (8 << 20) * ((8 << 20) - 1) // 2  # read back from the file


@linux
@pytest.mark.parametrize("mode", ["c", "r+"])
def test_a_writable_or_copy_on_write_map_is_left_alone(tmp_path, mode: str) -> None:
    arr = _mapped(tmp_path, mode)
    arr[0] = -5  # a copy-on-write page holds the only copy of this write
    int(arr.sum())
    before = _rss_file_kb()
    release(arr)
    assert _rss_file_kb() >= before - 1024
    assert arr[0] == -5


def test_in_memory_arrays_and_other_objects_are_a_no_op() -> None:
    a = np.arange(10)
    release(a)
    release(None)
    release([1, 2])
    assert a.tolist() == list(range(10))
