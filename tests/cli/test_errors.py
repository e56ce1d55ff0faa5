"""What reaches the terminal when a command fails: one line, never a traceback (moesim/cli/main.py).

Operating-system errors and missing optional packages exit 2; an unexpected exception is an
internal error (exit 3) whose traceback goes to a log file.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from moesim.cli import main as cli_main
from moesim.cli.main import EXIT_INTERNAL, main
from moesim.metrics.result import RunResult

REPO = Path(__file__).resolve().parents[2]
TRACE = REPO / "traces" / "default.moetrace"


@pytest.fixture
def scen(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(
        f"name: tiny\ntrace: {{path: {TRACE}, max_sequences: 1}}\npredictor: {{name: none}}\n",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize(
    "code,words",
    [
        (errno.ENOSPC, "No space left on device"),
        (errno.EROFS, "read-only"),
        (errno.EACCES, "permission denied"),
        (errno.ENOTDIR, "not a directory"),
        (errno.EISDIR, "is a directory"),
    ],
)
def test_os_errors_are_one_line_naming_the_path(code, words, scen, tmp_path, monkeypatch, capsys):
    out = tmp_path / "r"

    def write(self, path):
        raise OSError(code, os.strerror(code), str(Path(path) / "tokens.parquet"))

    monkeypatch.setattr(RunResult, "write", write)
    assert main(["run", str(scen), "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("moesim: error: ") and "tokens.parquet" in err[0]
    assert words.lower() in err[0].lower()
    assert "Traceback" not in err[0]


def test_a_read_only_directory_is_refused_before_work(scen, tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes through directory permissions")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["run", str(scen), "--quiet", "--out", str(ro / "r")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "cannot write in" in err[0]
    finally:
        ro.chmod(0o755)


def test_an_unwritable_place_is_refused_before_work(scen, tmp_path, monkeypatch, capsys):
    import moesim.outputs

    monkeypatch.setattr(moesim.outputs.os, "access", lambda *a, **k: False)  # as on a read-only disk
    out = tmp_path / "deep" / "r"
    assert main(["run", str(scen), "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot write in {tmp_path}" in err[0] and "read-only" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]


def test_internal_error_is_one_line_and_a_log(scen, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def boom(*a, **k):
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr("moesim.experiments.run.run_prepared", boom)
    assert main(["run", str(scen), "--quiet", "--out", str(tmp_path / "r")]) == EXIT_INTERNAL == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    line = err[0]
    assert line.startswith("moesim: internal error: ZeroDivisionError: float division by zero;")
    assert "please report it with the log at" in line
    log = Path(line.rsplit("the log at ", 1)[1])
    assert log.parent == tmp_path / "cache" / "moesim" / "logs"
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "in boom" in text and "moesim run" not in line


def test_internal_error_log_falls_back_to_the_temp_dir(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))  # cannot hold a directory
    monkeypatch.setattr(cli_main.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    path = cli_main._write_log("trace text")
    assert path is not None and path.parent == tmp_path / "tmp" and path.read_text() == "trace text"


def _cli_without(module: str, argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh interpreter where ``module`` cannot be imported."""
    code = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "from moesim.cli.main import main\n"
        f"sys.exit(main({argv!r}))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


@pytest.mark.parametrize(
    "module,argv,extra",
    [
        ("torch", ["profile", "--model", "olmoe-1b-7b", "--out", "p.yaml"], "moesim[torch]"),
        ("torch", ["harness", "SCEN", "--out", "h"], "moesim[torch]"),
        (
            "transformers",
            ["capture", "--model", "m", "--prompts", "PROMPTS", "--out", "c.moetrace"],
            "moesim[torch]",
        ),
        (
            "ray",
            ["sweep", "SCEN", "--grid", "cache.capacity=64,128", "--out", "s", "--backend", "ray"],
            "moesim[ray]",
        ),
    ],
)
def test_missing_optional_package_names_its_extra(module, argv, extra, scen, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\n")
    argv = [str(scen) if a == "SCEN" else str(prompts) if a == "PROMPTS" else a for a in argv]
    proc = _cli_without(module, argv, tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("moesim: error:") and module in lines[0] and extra in lines[0]
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["tiny.yaml", "p.txt"])  # nothing written


def test_require_names_the_extra(monkeypatch):
    from moesim.optional import MissingDependencyError, require

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'moesim\[ray\]'"):
        require("ray")
    assert require("json").dumps([1]) == "[1]"


def test_a_full_disk_names_the_result_and_leaves_no_temporary(tmp_path, monkeypatch):
    import moesim.io as mio
    from moesim.cli.main import os_error_line

    real_fdopen = os.fdopen

    class Full:
        def __init__(self, fd, mode):
            self.fh = real_fdopen(fd, mode)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.fh.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write(2) does: no file name

    monkeypatch.setattr(mio.os, "fdopen", Full)
    target = tmp_path / "summary.json"
    with pytest.raises(OSError) as info:
        mio.atomic_write_json(target, {"a": 1})
    line = os_error_line(info.value)
    assert line.startswith(f"{target}: No space left on device") and "free some space" in line
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone
