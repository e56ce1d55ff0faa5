"""An installed moesim (a wheel, not an editable install) runs its shipped scenarios from any
directory: the scenarios, traces, model configs and profile they read are package data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from moesim.data import DATA_DIR, shipped_scenario, shipped_scenario_names
from moesim.experiments.scenario import load_scenario
from tests.conftest import REPO_ROOT


def test_every_shipped_scenario_resolves_its_files_inside_the_package(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be found through the working directory
    names = shipped_scenario_names()
    assert "default" in names and sum(n.startswith("seed-claims/") for n in names) >= 5
    for name in names:
        sc = load_scenario(name)
        files = [sc.trace.path, sc.model.config, sc.hardware.profile]
        for ref in files:
            if ref is None or ":" in ref:  # catalog names, estimated:/paper: profiles
                continue
            path = sc.resolve_path(ref).resolve()
            assert path.exists(), (name, ref)
            assert path.is_relative_to(DATA_DIR), (name, ref, path)


def test_shipped_names_and_repository_paths_agree(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert (
        shipped_scenario("default")
        == shipped_scenario("scenarios/default.yaml")
        == DATA_DIR / "scenarios/default.yaml"
    )
    st = shipped_scenario("seed-claims/st-moe-accuracy")
    assert st == shipped_scenario("scenarios/seed-claims/st-moe-accuracy/scenario.yaml")
    assert st is not None and st.name == "scenario.yaml"
    assert shipped_scenario("../pyproject.toml") is None and shipped_scenario("nope") is None
    # a file that exists where the user is wins over the shipped name
    (tmp_path / "default").write_text("name: mine\n", encoding="utf-8")
    assert load_scenario("default").name == "mine"


def test_repository_paths_are_the_package_data(repo_root):
    for rel in ("scenarios/default.yaml", "traces/default.moetrace/trace.json", "scenarios/seed-claims"):
        assert (repo_root / rel).resolve().is_relative_to(DATA_DIR), rel


def _build_wheel(dest: Path) -> Path:
    src = dest / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO_ROOT / name, src / name)
    shutil.copytree(REPO_ROOT / "moesim", src / "moesim", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dest),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = dest.glob("moesim-*.whl")
    return wheel


@pytest.mark.slow
def test_wheel_installs_and_runs_from_anywhere(tmp_path):
    pytest.importorskip("setuptools")
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert "moesim/data/traces/default.moetrace/experts.npy" in names
    assert "moesim/data/scenarios/seed-claims/st-moe-accuracy/scenario.yaml" in names
    assert any(n.endswith("licenses/LICENSE") or n.endswith("/LICENSE") for n in names)
    # a clean environment: no PYTHONPATH (it would make pip think moesim is already installed)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MOESIM_SHARED")}
    venv = tmp_path / "venv"
    # the dependencies come from the system site-packages; moesim itself only from the wheel
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, env=env)
    py = venv / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall", str(wheel)],
        check=True,
        env=env,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run(
        [str(py), "-c", "import moesim; print(moesim.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout
    for args, out in (
        (["run"], "runs/default"),
        (["run", "seed-claims/st-moe-accuracy"], "runs/st-moe-accuracy"),
    ):
        proc = subprocess.run(
            [str(venv / "bin" / "moesim"), *args, "--quiet"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr
        summary = json.loads((work / out / "summary.json").read_text())
        assert summary["counts"]["tokens"] > 0
    assert sorted(p.name for p in work.iterdir()) == ["runs"]
