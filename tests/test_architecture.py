"""The import graph (docs/architecture.md): layered packages, no cycle between packages.

The contracts are in pyproject.toml ([tool.importlinter]); this test runs them so CI enforces them,
and checks the package graph for cycles on its own, naming one import of each arrow of a cycle.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

grimp = pytest.importorskip("grimp", reason="pip install -e '.[dev]' (import-linter)")


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def _package_edges() -> dict[tuple[str, str], tuple[str, str]]:
    """(importer package, imported package) -> one (importer module, imported module) behind it."""
    graph = grimp.build_graph("moesim", cache_dir=None)
    edges: dict[tuple[str, str], tuple[str, str]] = {}
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            a, b = _package(importer), _package(imported)
            if a != b and a != "moesim" and b != "moesim":
                edges.setdefault((a, b), (importer, imported))
    return edges


def _find_cycle(edges: dict[tuple[str, str], tuple[str, str]]) -> list[str] | None:
    succ: dict[str, list[str]] = {}
    for a, b in edges:
        succ.setdefault(a, []).append(b)
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(succ.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(succ):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_cycle_between_packages():
    edges = _package_edges()
    assert ("moesim.experiments", "moesim.engine") in edges  # the graph was read (not empty)
    cycle = _find_cycle(edges)
    if cycle:
        arrows = [f"{a} -> {b} (e.g. {' imports '.join(edges[a, b])})" for a, b in zip(cycle, cycle[1:])]
        pytest.fail("import cycle between packages:\n  " + "\n  ".join(arrows))


def test_find_cycle_finds_one():
    """The checker itself: a cycle of three packages is found, a chain is not."""
    chain = {("a", "b"): ("a.x", "b.y"), ("b", "c"): ("b.y", "c.z")}
    assert _find_cycle(chain) is None
    assert _find_cycle({**chain, ("c", "a"): ("c.z", "a.x")}) == ["a", "b", "c", "a"]


def test_import_contracts_hold():
    pytest.importorskip("importlinter", reason="pip install -e '.[dev]' (import-linter)")
    code = (
        "from importlinter.cli import lint_imports; "
        "raise SystemExit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_timeline_reads_the_engines_cancelled_state():
    """metrics.timeline names the copy engine's state code without importing the engine."""
    from moesim.engine.copy_engine import CANCELLED, PENDING
    from moesim.metrics import timeline

    assert timeline.CANCELLED == CANCELLED
    assert timeline.PENDING == PENDING
