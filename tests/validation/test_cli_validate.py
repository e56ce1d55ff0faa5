"""``moesim validate published`` end to end: the CI subset on the real Mixtral trace (skipped when
../shared is absent), its summary schema, and the output and error rules of every writing command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moesim.cli.main import main
from moesim.validation.errors import err_pct


def _ci(out: Path, external_traces: Path, *extra: str) -> int:
    shared = external_traces.parent
    return main(
        [
            "validate",
            "published",
            "--out",
            str(out),
            "--subset",
            "ci",
            "--shared",
            str(shared),
            "--quiet",
            *extra,
        ]
    )


@pytest.mark.shared
def test_ci_subset_on_the_real_trace(tmp_path: Path, external_traces: Path) -> None:
    out = tmp_path / "v"
    assert _ci(out, external_traces) == 0
    s = json.loads((out / "summary.json").read_text())
    assert (out / "report.html").is_file() and (out / "cases.csv").is_file()
    assert (out / "figures" / "published_vs_simulated.png").is_file()
    assert (out / ".moesim-result").read_text().strip() == "validation"
    assert s["format"] == "moesim-validation-published" and s["subset"] == "ci" and s["max_sequences"] == 1
    assert len(s["cases"]) == 4 and s["n_cases"]["out_of_the_box"] == 4
    for c in s["cases"]:
        pub, sim = c["published"]["tpot_ms"], c["out_of_the_box"]["tpot_ms"]
        assert sim > 0 and c["out_of_the_box"]["err_pct"] == pytest.approx(err_pct(sim, pub), abs=1e-3)
        assert c["calibrated"]["tpot_ms"] is not None  # each CI case has a same-platform partner
    errs = sorted(abs(c["out_of_the_box"]["err_pct"]) for c in s["cases"])
    assert s["median_abs_err_pct"]["out_of_the_box"] == pytest.approx((errs[1] + errs[2]) / 2, abs=1e-3)
    assert s["provenance"]["traces"]["mixtral-8x7b"]["sha256"]
    # Same inputs, same summary (the simulated clock never reads the machine's).
    again = tmp_path / "v2"
    assert _ci(again, external_traces) == 0
    first, second = (json.loads((d / "summary.json").read_text()) for d in (out, again))
    assert (
        first["provenance"]
        .pop("command")
        .endswith(f"--out {out} --subset ci --shared {external_traces.parent}")
    )
    second["provenance"].pop("command")
    assert first == second
    assert (again / "cases.csv").read_bytes() == (out / "cases.csv").read_bytes()
    # Its own result is replaced; a foreign directory is refused and left alone.
    assert _ci(out, external_traces) == 0


def test_refuses_a_foreign_directory(tmp_path: Path, capsys) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert main(["validate", "published", "--out", str(foreign), "--shared", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("moesim: error:") and "\n" not in err
    assert (foreign / "notes.txt").read_text() == "keep me" and sorted(p.name for p in foreign.iterdir()) == [
        "notes.txt"
    ]


def test_missing_trace_is_one_line_and_writes_nothing(tmp_path: Path, capsys) -> None:
    out = tmp_path / "v"
    assert (
        main(["validate", "published", "--out", str(out), "--subset", "ci", "--shared", str(tmp_path / "no")])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in err if line.startswith("moesim: error:")]) == 1
    assert "pass --shared DIR" in err[-1] and not out.exists()


def test_bad_flags(tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "v")
    assert main(["validate", "published", "--out", out, "--cases", "nope/x"]) == 2
    assert "no such catalog case" in capsys.readouterr().err
    assert main(["validate", "published", "--out", out, "--max-sequences", "0"]) == 2
    assert "--max-sequences" in capsys.readouterr().err
    assert main(["validate"]) == 2
    assert "moesim validate published --out DIR" in capsys.readouterr().err


def test_refuses_to_write_inside_its_input(tmp_path: Path, capsys) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    assert main(["validate", "published", "--out", str(shared / "v"), "--shared", str(shared)]) == 2
    assert "lies inside an input of this command" in capsys.readouterr().err
    assert list(shared.iterdir()) == []
