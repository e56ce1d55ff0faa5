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
