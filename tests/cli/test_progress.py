"""Progress when stderr is not a terminal: plain lines (logs, CI, notebooks), off under --quiet,
never on stdout and never in the results."""

from __future__ import annotations

import io

import pytest

from moesim.cli import progress
from moesim.cli.main import main
from moesim.cli.progress import point_progress, token_progress


@pytest.fixture
def every_update(monkeypatch):
    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)


def test_plain_lines_when_not_a_terminal(every_update, capsys):
    with token_progress(100, "simulating x") as advance:
        assert advance is not None
        for _ in range(4):
            advance(25)
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == ""
    assert lines[0].startswith("simulating x: 25/100 tokens (25%)")
    assert lines[3].startswith("simulating x: 100/100 tokens (100%)")
    assert lines[-1].startswith("simulating x: 100/100 tokens (100%)") and "done in" in lines[-1]
    assert len(lines) == 5 and not any("\r" in x or "\x1b" in x for x in lines)


def test_short_work_prints_nothing(capsys):
    with token_progress(100, "quick") as advance:
        advance(100)
    assert capsys.readouterr().err == ""


def test_lines_are_rate_limited(monkeypatch):
    clock = iter([0.0, 1.0, 2.0, 6.0, 7.0, 12.5, 13.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    buf = io.StringIO()
    lines = progress._Lines(6, "w", "tokens", stream=buf)  # t0 = 0
    for _ in range(5):  # at 1, 2, 6, 7, 12.5 s
        lines.advance(1)
    lines.close()  # at 13 s
    got = buf.getvalue().splitlines()
    assert got == [
        "w: 3/6 tokens (50%), 6 s elapsed",
        "w: 5/6 tokens (83%), 12 s elapsed",
        "w: 5/6 tokens (83%), done in 13 s",
    ]


def test_disabled_is_silent(every_update, capsys):
    with token_progress(10, "x", enabled=False) as advance:
        assert advance is None
    with point_progress(10, "x", enabled=False) as update:
        assert update is None
    assert capsys.readouterr().err == ""


def test_sweep_points_line(every_update, capsys):
    with point_progress(4, "sweep 4 points") as update:
        update(1, 0, 3)
        update(1, 1, 1)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("sweep 4 points: 2/4 points, 0 failed (50%)")
    assert lines[1].startswith("sweep 4 points: 4/4 points, 1 failed (100%)")


def test_terminal_still_gets_a_bar(monkeypatch, capsys):
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: True, raising=False)
    with token_progress(10, "bar") as advance:
        advance(10)
    assert "bar: " not in capsys.readouterr().err  # rich's transient bar, not plain lines


def test_run_reports_progress_unless_quiet(every_update, tmp_path, capsys):
    args = ["run", "--set", "trace.max_sequences=2", "--set", "predictor.name=oracle"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "simulating default: " in err and "/256 tokens" in err
    assert main([*args, "--quiet", "--out", str(tmp_path / "b")]) == 0
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    for name in ("summary.json", "tokens.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_sweep_reports_progress_unless_quiet(every_update, tmp_path, capsys):
    args = ["sweep", "--set", "trace.max_sequences=1", "--grid", "cache.capacity=128,256", "-j", "1"]
    assert main([*args, "--out", str(tmp_path / "s")]) == 0
    assert "/2 points, 0 failed" in capsys.readouterr().err
    assert main([*args, "--quiet", "--out", str(tmp_path / "q")]) == 0
    assert "points" not in capsys.readouterr().err
