"""Every command that writes leaves a user's files alone (moesim/outputs.py, docs/outputs.md).

For each writing command: an existing directory or file moesim did not write is left untouched
(byte-compared) and the command exits 2 with one line, with or without ``--force``; ``--force``
replaces only a moesim-made result.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from moesim.cli.main import main
from moesim.outputs import FILES_INDEX, MARKER

REPO = Path(__file__).resolve().parents[2]
TRACE = REPO / "traces" / "default.moetrace"


@pytest.fixture
def scen(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "tiny.yaml"
    path.parent.mkdir()
    path.write_text(
        "name: tiny\n"
        "model: {name: olmoe-1b-7b}\n"
        f"trace: {{path: {TRACE}, max_sequences: 1}}\n"
        "hardware: {profile: 'estimated:h100-pcie'}\n"
        "predictor: {name: none}\n"
        "cache: {policy: lru, capacity: 256}\n",
        encoding="utf-8",
    )
    return path


def _inputs(tmp_path: Path) -> dict[str, str]:
    d = tmp_path / "in"
    d.mkdir(exist_ok=True)
    prompts = d / "prompts.txt"
    prompts.write_text("hello\n")
    run_dir = d / "a-run"
    run_dir.mkdir(exist_ok=True)
    (run_dir / "summary.json").write_text("{}")
    return {"prompts": str(prompts), "run": str(run_dir), "new": str(tmp_path / "new.moetrace")}


# command -> (argv for an output path, whether the output is a directory)
Argv = Callable[[str, str, dict[str, str]], list[str]]
COMMANDS: dict[str, tuple[Argv, bool]] = {
    "run": (lambda o, s, i: ["run", s, "--quiet", "--out", o], True),
    "run --timeline": (lambda o, s, i: ["run", s, "--quiet", "--out", i["new"], "--timeline", o], False),
    "run --gantt": (lambda o, s, i: ["run", s, "--quiet", "--out", i["new"], "--gantt", o], False),
    "sweep": (
        lambda o, s, i: ["sweep", s, "--grid", "cache.capacity=64", "--out", o, "-j", "1", "--quiet"],
        True,
    ),
    "compare": (
        lambda o, s, i: (
            ["compare", s, "--predictors", "none", "--caches", "lru", "--no-bounds"]
            + ["--out", o, "-j", "1", "--quiet"]
        ),
        True,
    ),
    "report": (lambda o, s, i: ["report", i["run"], "--out", o], True),
    "trace import": (
        lambda o, s, i: ["trace", "import", i["prompts"], "--format", "table", "--out", o],
        True,
    ),
    "trace synth": (
        lambda o, s, i: ["trace", "synth", "--out", o, "--sequences", "1", "--tokens", "4"],
        True,
    ),
    "trace synth --save-params": (
        lambda o, s, i: ["trace", "synth", "--out", i["new"], "--like", str(TRACE), "--save-params", o],
        False,
    ),
    "trace synth --report": (
        lambda o, s, i: ["trace", "synth", "--out", i["new"], "--like", str(TRACE), "--report", o],
        True,
    ),
    "trace stats": (lambda o, s, i: ["trace", "stats", str(TRACE), "--out", o, "--no-hit-rates"], True),
    "trace export": (
        lambda o, s, i: ["trace", "export", str(TRACE), "--format", "libcachesim", "--out", o],
        False,
    ),
    "predictor train": (
        lambda o, s, i: ["predictor", "train", "prophet", "--trace", str(TRACE), "--out", o],
        False,
    ),
    "predictor eval": (
        lambda o, s, i: ["predictor", "eval", "popularity", "--trace", str(TRACE), "--out", o],
        True,
    ),
    "predictor crossdomain": (
        lambda o, s, i: ["predictor", "crossdomain", "popularity", "--trace", str(TRACE), "--out", o],
        True,
    ),
    "predictor predictability": (
        lambda o, s, i: ["predictor", "predictability", "--trace", str(TRACE), "--out", o],
        True,
    ),
    "profile": (lambda o, s, i: ["profile", "--model", "olmoe-1b-7b", "--out", o], False),
    "harness": (lambda o, s, i: ["harness", s, "--out", o, "--quiet"], True),
    "calibrate": (lambda o, s, i: ["calibrate", s, "--out", o, "--quiet"], True),
    "capture": (
        lambda o, s, i: ["capture", "--model", "no-such-model", "--prompts", i["prompts"], "--out", o],
        True,
    ),
}


def snapshot(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every entry under ``root`` (and ``root`` itself): mode and bytes."""
    paths = [root, *sorted(root.rglob("*"))] if root.is_dir() else [root]
    return {
        str(p.relative_to(root.parent)): (p.stat().st_mode, p.read_bytes() if p.is_file() else None)
        for p in paths
    }


def _foreign(where: Path, as_dir: bool) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    if as_dir:
        target = where / "mine"
        (target / "sub").mkdir(parents=True)
        (target / "notes.txt").write_text("my notes\n")
        (target / "sub" / "data.bin").write_bytes(bytes(range(256)))
        (target / "summary.json").write_text('{"mine": true}\n')  # looks like a result, is not one
        return target
    target = where / "mine.safetensors"
    target.write_bytes(b"my precious bytes\n")
    return target


def _one_error_line(err: str, path: Path) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("moesim: error:") and str(path) in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
@pytest.mark.parametrize("wrong_type", [False, True], ids=["same-type", "wrong-type"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_foreign_output_is_left_untouched(command, wrong_type, force, scen, tmp_path, capsys):
    argv_of, is_dir = COMMANDS[command]
    inputs = _inputs(tmp_path)
    area = tmp_path / "area"
    target = _foreign(area, is_dir != wrong_type)
    before = snapshot(area)
    argv = argv_of(str(target), str(scen), inputs) + (["--force"] if force else [])
    capsys.readouterr()
    assert main(argv) == 2
    _one_error_line(capsys.readouterr().err, target)
    assert snapshot(area) == before
    assert not Path(inputs["new"]).exists()  # no other output was begun either


def _run(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(argv)
    return rc, capsys.readouterr().err


def test_run_replaces_its_own_result_and_another_kind_only_with_force(scen, tmp_path, capsys):
    out = tmp_path / "r"
    assert _run(["run", str(scen), "--quiet", "--out", str(out)], capsys)[0] == 0
    assert (out / MARKER).read_text() == "run\n"
    (out / "stale.txt").write_text("x")  # a leftover inside moesim's own result goes with it
    assert _run(["run", str(scen), "--quiet", "--out", str(out)], capsys)[0] == 0
    assert not (out / "stale.txt").exists() and (out / "summary.json").is_file()

    sweep = tmp_path / "s"
    argv = ["sweep", str(scen), "--grid", "cache.capacity=64", "--out", str(sweep), "-j", "1", "--quiet"]
    assert _run(argv, capsys)[0] == 0
    assert (sweep / MARKER).read_text() == "sweep\n"
    before = snapshot(sweep)
    rc, err = _run(["run", str(scen), "--quiet", "--out", str(sweep)], capsys)
    assert rc == 2 and "holds a moesim sweep result, not a run; pass --force" in _one_error_line(err, sweep)
    assert snapshot(sweep) == before
    assert _run(["run", str(scen), "--quiet", "--out", str(sweep), "--force"], capsys)[0] == 0
    assert (sweep / MARKER).read_text() == "run\n" and not (sweep / "sweep.json").exists()


def test_sweep_and_trace_ask_for_force_over_their_own_kind(scen, tmp_path, capsys):
    out = tmp_path / "t.moetrace"
    argv = ["trace", "synth", "--out", str(out), "--sequences", "1", "--tokens", "4"]
    assert _run(argv, capsys)[0] == 0
    assert not (out / MARKER).exists()  # a trace's own trace.json says what it is
    before = snapshot(out)
    rc, err = _run([*argv, "--seed", "1"], capsys)
    assert rc == 2 and "--force" in _one_error_line(err, out) and snapshot(out) == before
    assert _run([*argv, "--seed", "1", "--force"], capsys)[0] == 0
    assert snapshot(out) != before


def test_a_file_result_is_replaced_only_while_moesim_s(scen, tmp_path, capsys):
    tl = tmp_path / "t.json"
    argv = [
        "run",
        str(scen),
        "--quiet",
        "--out",
        str(tmp_path / "r"),
        "--timeline",
        str(tl),
        "--tokens",
        "0:2",
    ]
    assert _run(argv, capsys)[0] == 0
    index = json.loads((tmp_path / FILES_INDEX).read_text())
    assert index["t.json"]["kind"] == "timeline"
    assert _run(argv, capsys)[0] == 0  # unchanged since moesim wrote it: replaced
    tl.write_text(tl.read_text() + " ")  # the user edited it: now it is theirs
    before = tl.read_bytes()
    for extra in ([], ["--force"]):
        rc, err = _run(argv + extra, capsys)
        assert rc == 2 and tl.read_bytes() == before
        _one_error_line(err, tl)


def test_output_equal_to_or_holding_an_input_is_refused(scen, tmp_path, capsys):
    import shutil

    trace = tmp_path / "copy.moetrace"
    shutil.copytree(TRACE, trace)
    scen.write_text(scen.read_text().replace(str(TRACE), str(trace)))
    before = snapshot(trace)
    cases = [
        (["run", str(scen), "--quiet", "--out", str(trace)], trace),  # the trace it reads
        (["run", str(scen), "--quiet", "--out", str(scen)], scen),  # the scenario itself
        (["run", str(scen), "--quiet", "--out", str(tmp_path)], tmp_path),  # a folder holding them
        (["trace", "stats", str(trace), "--out", str(trace / "stats")], trace / "stats"),  # inside it
        (["trace", "synth", "--out", str(trace), "--like", str(trace), "--force"], trace),
        (["trace", "import", str(scen), "--format", "table", "--out", str(scen), "--force"], scen),
    ]
    for argv, path in cases:
        rc, err = _run(argv, capsys)
        assert rc == 2, argv
        assert "input" in _one_error_line(err, path)
    assert snapshot(trace) == before


@pytest.mark.parametrize(
    "name,expected",
    [("../../escaped", "escaped"), ("/tmp/abs-name", "tmp_abs-name"), ("a/b\\c", "a_b_c"), ("..", None)],
)
def test_a_scenario_name_is_a_name_not_a_path(name, expected, scen, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    scen.write_text(scen.read_text().replace("name: tiny", f"name: {json.dumps(name)}"))
    rc, err = _run(["run", str(scen), "--quiet"], capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "work"]  # nothing escaped
    if expected is None:  # nothing left to name a directory with
        assert rc == 2 and len(err.strip().splitlines()) == 1 and not (work / "runs").exists()
        return
    assert rc == 0
    assert [p.name for p in (work / "runs").iterdir()] == [expected]
    assert (work / "runs" / expected / "summary.json").is_file()


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_results_follow_the_umask(mask, scen, tmp_path, capsys):
    old = os.umask(mask)
    try:
        out = tmp_path / "r"
        assert _run(["run", str(scen), "--quiet", "--out", str(out)], capsys)[0] == 0
        t = tmp_path / "t.moetrace"
        assert _run(["trace", "synth", "--out", str(t), "--sequences", "1", "--tokens", "4"], capsys)[0] == 0
    finally:
        os.umask(old)
    for root in (out, t):
        for p in [root, *root.rglob("*")]:
            want = (0o777 if p.is_dir() else 0o666) & ~mask
            assert stat.S_IMODE(p.stat().st_mode) == want, (p, oct(p.stat().st_mode))


def test_every_output_path_is_checked_before_work(scen, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = tmp_path / "r"
    for flag in ("--timeline", "--gantt"):
        rc, err = _run(
            ["run", str(scen), "--quiet", "--out", str(out), flag, str(blocker / "t.json")], capsys
        )
        assert rc == 2 and "is a file, not a directory" in _one_error_line(err, blocker / "t.json")
        assert not out.exists()  # refused before the run, not after its results were written
    rc, err = _run(["run", str(scen), "--quiet", "--out", str(blocker / "sub")], capsys)
    assert rc == 2 and blocker.read_text() == "x"
