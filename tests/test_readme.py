"""Every command in README.md works as written: the README's bash blocks run, in order, in a temporary
copy of the repository (so nothing in the working tree is written), with ``../shared`` beside the
copy when the real one exists. Commands that read ``../shared`` (and commands that read what those
wrote) are skipped without it; install lines are CI's job (.ci/run runs them) and ``python -m
pytest`` is this suite itself."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, shared_root

# copied into the temporary repository (everything a README command reads)
_COPY = ("moesim", "scenarios", "traces", "reports", "docs", "benchmarks", "pyproject.toml", "README.md")
_NEEDS_TORCH = (["moesim", "profile"], ["moesim", "harness"], ["moesim", "calibrate"], ["moesim", "capture"])
_NOT_RUN = (re.compile(r"^pip install\b"), re.compile(r"^python -m pytest\b"))
# the user's own routing table that the README imports with --format table
_MY_ROUTING = "sequence,token,layer,experts\n" + "".join(
    f'{s},{t},{layer},"[{(s + t + layer) % 8}, {(s + t + layer + 1) % 8}]"\n'
    for s in range(2)
    for t in range(6)
    for layer in range(3)
)


@dataclass
class Command:
    text: str
    line: int  # 1-based line of README.md where the command starts
    args: list[str] = field(default_factory=list)


def readme_commands(readme: Path) -> list[Command]:
    """The commands of the README's ```bash blocks, continuation lines joined, comments dropped."""
    cmds: list[Command] = []
    in_block, pending, start = False, "", 0
    for no, raw in enumerate(readme.read_text(encoding="utf-8").splitlines(), 1):
        if raw.strip().startswith("```"):
            in_block = raw.strip() == "```bash" if not in_block else False
            continue
        if not in_block or (not raw.strip() and not pending):
            continue
        if not pending:
            start = no
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        text = (pending + raw).strip()
        pending = ""
        args = shlex.split(text, comments=True)
        if args:
            cmds.append(Command(text, start, args))
    return cmds


def _outputs(args: list[str]) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--out", "--timeline", "--gantt")]


def _plan(cmds: list[Command], have_shared: bool) -> list[tuple[Command, str | None]]:
    """Each command with the reason it is not run (None: it runs)."""
    unavailable: set[str] = set()
    plan = []
    for cmd in cmds:
        reason = None
        if any(p.match(cmd.text) for p in _NOT_RUN):
            reason = "install / test command (CI runs it)"
        elif cmd.args[:2] in _NEEDS_TORCH and importlib.util.find_spec("torch") is None:
            reason = "needs PyTorch (pip install moesim[torch])"
        elif not have_shared and (
            "../shared" in cmd.text
            or any(a.partition("=")[2] in unavailable or a in unavailable for a in cmd.args)
        ):
            reason = "needs ../shared/external-traces"
            unavailable.update(_outputs(cmd.args))
        plan.append((cmd, reason))
    return plan


def test_readme_commands_are_parsed():
    cmds = readme_commands(REPO_ROOT / "README.md")
    texts = [c.text for c in cmds]
    assert any(t.startswith("moesim run") for t in texts)
    assert any(t.startswith("pip install") for t in texts)
    assert all("..." not in c.args for c in cmds), "a README command with a placeholder cannot run as written"
    plan = _plan(cmds, have_shared=False)
    skipped = {c.text for c, why in plan if why == "needs ../shared/external-traces"}
    assert any(
        "olmoe.moetrace" in t and t.startswith("moesim run") for t in skipped
    )  # reads an import's output
    assert not any(t.startswith("moesim trace synth") for t in skipped)


def _temp_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in _COPY:
        src = REPO_ROOT / name
        if src.is_dir():
            shutil.copytree(src, repo / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, repo / name)
    shared = shared_root()
    if shared is not None:
        (tmp_path / "shared").symlink_to(shared, target_is_directory=True)
    (repo / "my_routing.csv").write_text(_MY_ROUTING, encoding="utf-8")
    # `moesim` on PATH runs this checkout's code, whatever is installed
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "moesim"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m moesim.cli.main "$@"\n', encoding="utf-8")
    shim.chmod(0o755)
    return repo


@pytest.mark.slow
def test_every_readme_command_runs(tmp_path):
    cmds = readme_commands(REPO_ROOT / "README.md")
    repo = _temp_repo(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(repo), PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    env.pop("MOESIM_SHARED", None)
    ran, timings = 0, []
    for cmd, why in _plan(cmds, have_shared=shared_root() is not None):
        if why is not None:
            print(f"README.md:{cmd.line}: not run ({why}): {cmd.text}")
            continue
        t0 = time.perf_counter()
        proc = subprocess.run(
            ["bash", "-c", cmd.text], cwd=repo, env=env, capture_output=True, text=True, timeout=600
        )
        timings.append((time.perf_counter() - t0, cmd.text))
        assert proc.returncode == 0, (
            f"README.md:{cmd.line}: `{cmd.text}` exited {proc.returncode}:\n{proc.stderr[-3000:]}"
        )
        assert "Traceback" not in proc.stderr, f"README.md:{cmd.line}: {proc.stderr[-3000:]}"
        for out in _outputs(cmd.args):
            assert (repo / out).exists(), f"README.md:{cmd.line}: {out} was not written"
        ran += 1
    for secs, text in sorted(timings, reverse=True):
        print(f"{secs:7.1f} s  {text}")
    assert ran >= 15
    # the README's commands write only under runs/ and the files it names, never into tracked files
    assert (repo / "reports" / "calibration-cpu" / "report.md").read_bytes() == (
        REPO_ROOT / "reports" / "calibration-cpu" / "report.md"
    ).read_bytes()
