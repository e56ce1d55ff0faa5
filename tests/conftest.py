"""Shared fixtures: the repository root and the optional ../shared folder of external traces."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_root() -> Path | None:
    env = os.environ.get("MOESIM_SHARED")
    cand = Path(env) if env else REPO_ROOT.parent / "shared"
    return cand if (cand / "external-traces").is_dir() else None


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def external_traces() -> Path:
    """``../shared/external-traces``; tests using it skip cleanly when it is absent."""
    root = shared_root()
    if root is None:
        pytest.skip("../shared/external-traces not present")
    return root / "external-traces"


@pytest.fixture(scope="session", autouse=True)
def _fast_kernels_compiled() -> None:
    """Compile (or load) the fast executor's kernels once before any test: on a cold numba cache
    the first fast run prints a one-time 'compiling' note on stderr, which would otherwise land in
    whichever test's captured stderr happens to come first (tests/engine/test_fast_jit.py tests the
    note itself, with a cache folder of its own)."""
    from moesim.engine.fast.jit import warm_kernels

    warm_kernels()
