"""Third-party plug-ins: a package built and pip-installed here (offline, into a --target directory)
registers a cache policy and a predictor through entry points; the CLI, a process-pool sweep, a Ray
sweep and the Python API all find them, ``moesim list`` names their package, and a broken entry
point is one line naming it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.plugins.toy_plugin import MODULE, PYPROJECT

REPO = Path(__file__).resolve().parents[2]
TINY = ["--set", "trace.max_sequences=1"]


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("toy")
    src = root / "src"
    src.mkdir()
    (src / "pyproject.toml").write_text(PYPROJECT, encoding="utf-8")
    (src / "moesim_toy.py").write_text(MODULE, encoding="utf-8")
    target = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-build-isolation", "--no-deps"]
        + ["--target", str(target), str(src)],
        check=True,
        capture_output=True,
        cwd=root,
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(target), str(REPO)])
    return env


def moesim(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "moesim.cli.main", *args], env=env, capture_output=True, text=True, cwd=cwd
    )


def test_cli_runs_an_installed_cache_policy_with_its_declared_params(plugin_env, tmp_path):
    out = tmp_path / "run"
    args = ["run", *TINY, "--set", "cache.policy=toy-mru", "--set", "cache.params.spare=2", "--quiet"]
    proc = moesim(plugin_env, *args, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["provenance"]["scenario"]["cache"]["policy"] == "toy-mru"
    lru = moesim(plugin_env, "run", *TINY, "--quiet", "--out", str(tmp_path / "lru"))
    assert lru.returncode == 0, lru.stderr
    other = json.loads((tmp_path / "lru" / "summary.json").read_text(encoding="utf-8"))
    assert summary["counts"]["hits"] != other["counts"]["hits"]  # MRU is not LRU: the policy ran
    bad = moesim(plugin_env, "run", *TINY, "--set", "cache.policy=toy-mru", "--set", "cache.params.spare=-1")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert "cache.params.spare" in bad.stderr and "Traceback" not in bad.stderr


def test_list_shows_plugins_with_their_package_and_the_broken_one(plugin_env):
    proc = moesim(plugin_env, "list", "plugins")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.split()[:2] == ["toy-mru", "moesim-toy-plugin"] for line in lines), proc.stdout
    assert any(line.split()[:2] == ["toy-same-ids", "moesim-toy-plugin"] for line in lines)
    assert any(line.split()[:2] == ["lru", "moesim"] for line in lines)
    assert any("toy-broken" in line and "BROKEN" in line for line in lines)


def test_a_broken_entry_point_is_one_line_naming_it(plugin_env, tmp_path):
    proc = moesim(plugin_env, "run", *TINY, "--set", "miss.policy=toy-broken", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "toy-broken" in proc.stderr and "moesim_toy_missing_module" in proc.stderr
    assert "moesim-toy-plugin" in proc.stderr and not (tmp_path / "x").exists()
    # an unused broken plug-in does not stop other runs
    ok = moesim(plugin_env, "run", *TINY, "--quiet", "--out", str(tmp_path / "y"))
    assert ok.returncode == 0, ok.stderr


def test_process_pool_sweep_workers_load_the_plugins(plugin_env, tmp_path):
    out = tmp_path / "sweep"
    grid = ["--grid", "cache.policy=toy-mru,lru", "--grid", "predictor.name=toy-same-ids,none"]
    proc = moesim(plugin_env, "sweep", *TINY, *grid, "-j", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    points = sorted((out / "points").glob("*.json"))
    records = [json.loads(p.read_text(encoding="utf-8")) for p in points]
    assert [r["status"] for r in records] == ["ok"] * 4, [r["error"] for r in records]
    assert records[0]["summary"]["prefetch"]["issued"] > 0  # the plug-in predictor predicted


def test_python_api_uses_the_plugins(plugin_env, tmp_path):
    code = (
        "import moesim; r = moesim.run(None, {'trace.max_sequences': 1, 'cache.policy': 'toy-mru', "
        "'predictor.name': 'toy-same-ids', 'cache.params.spare': 1}); "
        "print(r.summary['provenance']['scenario']['cache']['policy'], r.summary['prefetch']['issued'] > 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=plugin_env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["toy-mru", "True"]


def test_ray_sweep_workers_load_the_plugins(plugin_env, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    proc = moesim(
        plugin_env,
        "sweep",
        *TINY,
        "--grid",
        "cache.policy=toy-mru,lru",
        "--backend",
        "ray",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((out / "points").glob("*.json"))]
    assert [r["status"] for r in records] == ["ok", "ok"], [r["error"] for r in records]
