"""The fast executor's compiled kernels: a writable cache folder for a read-only install, and a cold
first run that still finishes and says it is compiling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numba
import pytest

from moesim.engine.fast import jit

REPO = Path(__file__).resolve().parents[2]


def test_read_only_install_caches_under_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(jit, "_writable", lambda path: False)
    before = numba.config.CACHE_DIR
    try:
        folder = jit.configure_cache()
        assert folder == tmp_path / "xdg" / "moesim" / "numba" and folder.is_dir()
        assert str(folder) == numba.config.CACHE_DIR and os.environ["NUMBA_CACHE_DIR"] == str(folder)
    finally:
        numba.config.CACHE_DIR = before


def test_writable_install_caches_beside_the_sources(monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setattr(jit, "_writable", lambda path: True)
    assert jit.configure_cache() == jit._PKG / "__pycache__"


def _run(out: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}
    args = ["run", "--quiet", "--set", "trace.max_sequences=1", "--out", str(out)]
    return subprocess.run(
        [sys.executable, "-m", "moesim.cli.main", *args], env=env, capture_output=True, text=True
    )


@pytest.mark.slow  # compiles every kernel: about 20 CPU-seconds
def test_cold_run_compiles_says_so_and_finishes(tmp_path):
    cache = tmp_path / "numba-cache"
    cold = _run(tmp_path / "a", cache)
    assert cold.returncode == 0, cold.stderr
    assert "compiling fast kernels (first run)..." in cold.stderr
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["provenance"]["executor"] == "fast"
    assert any(cache.rglob("*.nbi"))  # numba's cache index files landed in the given folder
    warm = _run(tmp_path / "b", cache)
    assert warm.returncode == 0, warm.stderr
    assert "compiling" not in warm.stderr
    assert (tmp_path / "a" / "summary.json").read_bytes() == (tmp_path / "b" / "summary.json").read_bytes()


def test_the_cache_folder_is_set_without_importing_numba(tmp_path):
    """A sweep's parent imports jit but runs no kernel: it must not pay numba's import, and a numba
    imported afterwards must still see the folder (through NUMBA_CACHE_DIR)."""
    code = (
        "import os, sys\n"
        "from moesim.engine.fast import jit\n"
        "assert 'numba' not in sys.modules\n"
        "jit._writable = lambda path: False\n"
        "os.environ.pop('NUMBA_CACHE_DIR', None)\n"
        "folder = jit.configure_cache()\n"
        "assert 'numba' not in sys.modules\n"
        "import numba\n"
        "print(numba.config.CACHE_DIR == str(folder), jit.kernels_cached() in (True, False))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env |= {"XDG_CACHE_HOME": str(tmp_path / "xdg"), "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]


def test_kernels_cached_follows_the_marker(tmp_path, monkeypatch):
    monkeypatch.setattr(jit, "_warm", False)
    monkeypatch.setattr(jit, "CACHE_DIR", tmp_path)
    assert not jit.kernels_cached()
    jit._marker().write_text("kernels compiled\n", encoding="utf-8")
    assert jit.kernels_cached()
