"""numba for the fast executor: a writable on-disk kernel cache, and one-time warm-up.

Kernels are compiled with ``cache=True``. numba keeps its cache beside the source (``__pycache__``)
when the package folder is writable; a read-only install (a system site-packages, a container
image) gets ``$XDG_CACHE_HOME/moesim/numba`` (default ``~/.cache/moesim/numba``) instead. This
module must be imported before any kernel module is, so the cache directory is set before numba
decorates them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_PKG = Path(__file__).resolve().parent
_MARK = "warm-{}.mark"


def _user_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "moesim" / "numba"


def _writable(path: Path) -> bool:
    cache = path / "__pycache__"
    target = cache if cache.is_dir() else path
    return os.access(target, os.W_OK)


def configure_cache() -> Path:
    """The folder numba caches the kernels in (setting ``NUMBA_CACHE_DIR`` for a read-only install).
    Does not import numba (a sweep's parent process never runs a kernel)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"])
    if _writable(_PKG):
        return _PKG / "__pycache__"
    folder = _user_cache()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["NUMBA_CACHE_DIR"] = str(folder)  # read by numba at import, and by worker processes
    numba = sys.modules.get("numba")
    if numba is not None:  # imported already: its config was read without the folder
        setattr(numba.config, "CACHE_DIR", str(folder))  # noqa: B010  (read when a kernel's cache is created, at decoration)
    return folder


CACHE_DIR = configure_cache()

_warm = False


def _marker() -> Path:
    """A file naming the kernels' sources and numba's version: present once they were compiled."""
    import hashlib
    from importlib.metadata import version

    h = hashlib.blake2b(version("numba").encode(), digest_size=8)
    for name in ("decide.py", "heap.py", "timing.py", "predictions.py"):
        h.update((_PKG / name).read_bytes())
    return CACHE_DIR / _MARK.format(h.hexdigest())


def kernels_cached() -> bool:
    """Whether the kernels were compiled into the cache already (or loaded in this process)."""
    return _warm or _marker().exists()


def warm_kernels() -> None:
    """Compile (or load from the cache) every kernel once, on a tiny input. Says so on stderr when
    the cache is cold (the first run after an install takes several seconds to compile)."""
    global _warm
    if _warm:
        return
    mark = _marker()
    cold = not mark.exists()
    if cold:
        print("compiling fast kernels (first run)...", file=sys.stderr, flush=True)
    from moesim.engine.fast.warmup import run_tiny

    run_tiny()
    _warm = True
    if cold:
        try:
            mark.parent.mkdir(parents=True, exist_ok=True)
            mark.write_text("kernels compiled\n", encoding="utf-8")
        except OSError:
            pass  # an unwritable cache only costs the message again next time
