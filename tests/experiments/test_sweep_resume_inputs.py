"""Sweeps keep their inputs honest: a resume after an input changed is refused, a second writer is
locked out, and a worker's death neither serialises the pool nor outlives the parent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from moesim.cli.main import main
from moesim.errors import MoesimInputError
from moesim.experiments.sweep import SweepPlan, _run_local, run_sweep

REPO = Path(__file__).resolve().parents[2]
GRID = "cache.capacity=64,72,80,88,96,104,112,120,128,136,144,152,160,168,176,184"


def _scenario(path: Path, trace: Path, capacity_note: str = "") -> Path:
    path.write_text(
        f"name: resume{capacity_note}\n"
        "model: {name: olmoe-1b-7b}\n"
        f"trace: {{path: {trace}, max_sequences: 1}}\n"
        "hardware: {profile: 'estimated:h100-pcie'}\n"
        "predictor: {name: popularity, horizon: 1}\n"
        "cache: {policy: lru, capacity: 256}\n",
        encoding="utf-8",
    )
    return path


def _sweep_argv(scenario: Path, out: Path, *extra: str) -> list[str]:
    return ["sweep", str(scenario), "--grid", GRID, "--out", str(out), "-j", "1", "--quiet", *extra]


def _killed_sweep(scenario: Path, out: Path) -> None:
    """Start a real sweep process and SIGKILL it once two points are on disk."""
    cmd = [sys.executable, "-m", "moesim.cli.main", *_sweep_argv(scenario, out)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, env=env
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "points").glob("*.json"))) < 2:
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list((out / "points").glob("*.json")))
    assert 2 <= done < 16, f"the sweep was not caught mid-way ({done} points)"


def _snapshot(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def _copy_trace(dst: Path) -> Path:
    import shutil

    shutil.copytree(REPO / "traces" / "default.moetrace", dst)
    return dst


def test_resume_refuses_after_the_scenario_was_edited(tmp_path, capsys):
    trace = _copy_trace(tmp_path / "t.moetrace")
    scen = _scenario(tmp_path / "s.yaml", trace)
    out = tmp_path / "sweep"
    _killed_sweep(scen, out)
    # the finished points' table, as the killed sweep left it (assembled by a refused-free read)
    before = _snapshot(out)
    text = scen.read_text().replace("horizon: 1", "horizon: 2")
    scen.write_text(text)
    capsys.readouterr()
    assert main(_sweep_argv(scen, out, "--resume")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "scenario file was edited" in err[0], err
    assert _snapshot(out) == before  # nothing written: no table, no point, no new sweep.json


def test_resume_refuses_after_the_trace_was_reimported(tmp_path, capsys):
    trace = _copy_trace(tmp_path / "t.moetrace")
    scen = _scenario(tmp_path / "s.yaml", trace)
    out = tmp_path / "sweep"
    _killed_sweep(scen, out)
    # Re-import: a different trace written to the same path (moesim trace synth --force).
    assert main(["trace", "synth", "--out", str(trace), "--force", "--sequences", "2", "--tokens", "16"]) == 0
    before = _snapshot(out)
    capsys.readouterr()
    assert main(_sweep_argv(scen, out, "--resume")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(trace.resolve()) in err[0] and "changed" in err[0], err
    assert _snapshot(out) == before


def test_resume_with_unchanged_inputs_still_works(tiny_scenario, tmp_path):
    plan = SweepPlan.from_grid(tiny_scenario, {"cache.capacity": [64, 128]})
    out = tmp_path / "s"
    run_sweep(plan, out, jobs=1)
    manifest = json.loads((out / "sweep.json").read_text())
    files = manifest["inputs"]["files"]
    assert any(p.endswith("default.moetrace") for p in files) and all(len(h) == 64 for h in files.values())
    assert manifest["inputs"]["base_scenario"]["cache"]["policy"] == "lru"
    (out / "points" / "00001.json").unlink()
    again = run_sweep(plan, out, jobs=1, resume=True)
    assert again.ran == 1 and again.skipped == 1 and again.ok


def test_second_writer_is_locked_out(tiny_scenario, tmp_path):
    import fcntl

    plan = SweepPlan.from_grid(tiny_scenario, {"cache.capacity": [64, 128]})
    out = tmp_path / "s"
    run_sweep(plan, out, jobs=1)
    before = _snapshot(out)
    fd = os.open(out / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running sweep holds it
        with pytest.raises(MoesimInputError, match="another sweep is writing here"):
            run_sweep(plan, out, jobs=1, force=True)
        assert _snapshot(out) == before
    finally:
        os.close(fd)
    assert run_sweep(plan, out, jobs=1, force=True).ok  # released: the next writer gets in


def test_sweep_refuses_a_foreign_directory_even_with_force(tiny_scenario, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "points").mkdir()
    (out / "points" / "notes.txt").write_text("keep me")
    (out / "sweep.json").write_text("{}")
    plan = SweepPlan.from_grid(tiny_scenario, {"cache.capacity": [64]})
    for kw in ({}, {"force": True}, {"resume": True}):
        with pytest.raises(MoesimInputError, match="moesim did not write"):
            run_sweep(plan, out, jobs=1, **kw)
    assert (out / "points" / "notes.txt").read_text() == "keep me"


# -- worker deaths -------------------------------------------------------------------------------
def flaky_point(task: dict) -> dict:
    """Sleeps, records when and where it ran; point 1 kills its worker on its first try (and every
    try when ``always`` is set)."""
    t0 = time.time()
    flag = Path(task["dir"]) / f"tried-{task['index']}"
    if task["index"] == 1 and (task.get("always") or not flag.exists()):
        flag.write_text("x")
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.4)
    return {
        "index": task["index"],
        "status": "ok",
        "pid": os.getpid(),
        "start": t0,
        "end": time.time(),
    }


def _tasks(tmp_path: Path, n: int, always: bool = False) -> list[dict]:
    return [{"index": i, "overrides": {}, "dir": str(tmp_path), "always": always} for i in range(n)]


def test_a_killed_worker_is_replaced_and_the_pool_stays_parallel(tmp_path):
    recs: list[dict] = []
    _run_local(_tasks(tmp_path, 8), recs.append, jobs=2, fn=flaky_point)
    assert sorted(r["index"] for r in recs) == list(range(8))
    assert all(r["status"] == "ok" for r in recs)  # point 1 succeeded on its retry
    # After the death, points still ran two at a time: some later pair overlapped in time.
    after = sorted((r for r in recs if r["index"] >= 2), key=lambda r: r["start"])
    overlaps = sum(1 for a, b in zip(after, after[1:]) if b["start"] < a["end"])
    assert overlaps >= 1, after
    assert (tmp_path / "tried-1").exists()  # the worker really died once
    assert len({r["pid"] for r in after}) == 2  # two live workers shared the rest


def test_a_point_that_always_kills_its_worker_fails_alone(tmp_path):
    recs: list[dict] = []
    _run_local(_tasks(tmp_path, 5, always=True), recs.append, jobs=2, fn=flaky_point)
    by = {r["index"]: r for r in recs}
    assert sorted(by) == list(range(5))
    assert by[1]["status"] == "error" and by[1]["error"].startswith("worker died")
    assert all(by[i]["status"] == "ok" for i in (0, 2, 3, 4))


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_with_their_parent(tiny_scenario, tmp_path):
    out = tmp_path / "orphans"
    cmd = [
        sys.executable,
        "-m",
        "moesim.cli.main",
        "sweep",
        str(tiny_scenario),
        "--grid",
        GRID,
        "--out",
        str(out),
        "-j",
        "2",
        "--quiet",
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.time() + 120
        workers: list[int] = []
        while time.time() < deadline and proc.poll() is None:
            workers = [
                c for c in _children(proc.pid) if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()
            ]
            if len(workers) >= 2 and (out / "points").is_dir():
                break
            time.sleep(0.05)
        assert proc.poll() is None and workers, "the sweep finished before its workers were seen"
        proc.kill()  # the parent only, as an OOM killer or kill -9 would
        proc.wait()
        deadline = time.time() + 20
        while time.time() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers), "workers outlived their parent"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_identity_hashes_the_files_of_every_point(tmp_path):
    from moesim.experiments.sweep import input_identity

    a = _copy_trace(tmp_path / "a.moetrace")
    b = _copy_trace(tmp_path / "b.moetrace")
    plan = SweepPlan.from_grid(None, {"cache.capacity": [64, 128], "trace.path": [str(a), str(b)]})
    ident = input_identity(plan)
    assert str(a.resolve()) in ident["files"] and str(b.resolve()) in ident["files"]
    assert ident["files"][str(a.resolve())] == ident["files"][str(b.resolve())]  # same bytes, same hash
    (b / "trace.json").write_text((b / "trace.json").read_text() + " ")
    assert input_identity(plan)["files"][str(b.resolve())] != ident["files"][str(b.resolve())]
