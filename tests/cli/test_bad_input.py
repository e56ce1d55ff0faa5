"""Bad input: one line naming the file/field and the fix, exit code 2, no traceback, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from moesim.cli.main import main
from moesim.traces.native import load_trace, save_trace

DEFAULT_TRACE = Path(__file__).resolve().parents[2] / "traces" / "default.moetrace"


@pytest.fixture
def small_trace(tmp_path) -> Path:
    tr = load_trace(DEFAULT_TRACE).select([0, 1])
    return save_trace(tr, tmp_path / "small.moetrace")


def _corrupt(tmp_path: Path, edit) -> Path:
    tr = load_trace(DEFAULT_TRACE).select([0, 1])
    tr.experts = np.array(tr.experts)
    tr.weights = np.array(tr.weights)
    edit(tr)
    return save_trace(tr, tmp_path / "bad.moetrace", validate=False)


def _truncate(tmp_path: Path) -> Path:
    path = save_trace(load_trace(DEFAULT_TRACE).select([0]), tmp_path / "trunc.moetrace")
    f = path / "experts.npy"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return path


def _profile_without_expert_table(tmp_path: Path) -> Path:
    from moesim.hardware import load_profile
    from moesim.models import get_model

    prof = load_profile("estimated:h100-pcie", get_model("olmoe-1b-7b"))
    d = prof.to_dict()
    d["tables"] = (
        [t for t in d["tables"] if t["op"] != "expert_ffn"]
        if isinstance(d["tables"], list)
        else {k: v for k, v in d["tables"].items() if k != "expert_ffn"}
    )
    import yaml

    out = tmp_path / "noexpert.yaml"
    out.write_text(yaml.safe_dump(d))
    return out


def _scenario(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return p


CASES = {
    "truncated trace file": (lambda t: ["--set", f"trace.path={_truncate(t)}"], "experts.npy"),
    "expert id >= E": (
        lambda t: ["--set", f"trace.path={_corrupt(t, lambda tr: tr.experts.__setitem__((3, 2, 1), 70))}"],
        "expert id 70",
    ),
    "duplicate ids in a row": (
        lambda t: [
            "--set",
            f"trace.path={_corrupt(t, lambda tr: tr.experts.__setitem__((5, 1, 1), tr.experts[5, 1, 0]))}",
        ],
        "layer 1",
    ),
    "NaN router weight": (
        lambda t: [
            "--set",
            f"trace.path={_corrupt(t, lambda tr: tr.weights.__setitem__((4, 0, 0), np.nan))}",
        ],
        "weights",
    ),
    "layer count mismatch with the model": (lambda t: ["--set", "model.name=mixtral-8x7b"], "MoE layers"),
    "wrong top-k for the model": (lambda t: ["--set", "model.name=qwen3-30b-a3b"], "trace has"),
    "unknown scenario key": (lambda t: ["--set", "cache.polcy=lru"], "cache.polcy"),
    "unknown key in a scenario file": (
        lambda t: [str(_scenario(t, "name: x\ncache:\n  capacty: 3\n"))],
        "cache.capacty",
    ),
    "unknown section": (lambda t: ["--set", "cach.policy=lru"], "cach"),
    "capacity below k": (lambda t: ["--set", "cache.capacity=4"], "cache.capacity"),
    "per-layer capacity below k": (
        lambda t: ["--set", "cache.scope=per-layer", "--set", "cache.capacity=7"],
        "cache.capacity",
    ),
    "negative bandwidth": (lambda t: ["--set", "hardware.h2d_gbps=-5"], "hardware.h2d_gbps"),
    "NaN bandwidth": (lambda t: ["--set", "hardware.h2d_gbps=.nan"], "hardware.h2d_gbps"),
    "missing profile table": (
        lambda t: ["--set", f"hardware.profile={_profile_without_expert_table(t)}"],
        "expert_ffn",
    ),
    "unknown profile reference": (lambda t: ["--set", "hardware.profile=estimated:tpu-v9"], "tpu-v9"),
    "paper profile for another model": (lambda t: ["--set", "hardware.profile=paper:a100-80gb"], "paper"),
    "unknown predictor": (lambda t: ["--set", "predictor.name=prophecy"], "predictor.name"),
    "unknown cache policy": (lambda t: ["--set", "cache.policy=random"], "cache.policy"),
    "unknown model": (lambda t: ["--set", "model.name=gpt-5-moe"], "gpt-5-moe"),
    "wrong type": (lambda t: ["--set", "cache.capacity=lots"], "cache.capacity"),
    "missing trace file": (lambda t: ["--set", f"trace.path={t / 'nope.moetrace'}"], "nope.moetrace"),
    "unknown domain": (lambda t: ["--set", "trace.domain=poetry"], "poetry"),
    "malformed YAML": (lambda t: [str(_scenario(t, "name: [unclosed\n"))], "YAML"),
    "missing scenario file": (lambda t: [str(t / "missing.yaml")], "missing.yaml"),
    "override without '='": (lambda t: ["--set", "cache.capacity"], "key=value"),
    "negative horizon": (lambda t: ["--set", "predictor.horizon=-1"], "predictor.horizon"),
    "unknown predictor param": (lambda t: ["--set", "predictor.params={depth: 3}"], "predictor.params"),
    "batch zero": (lambda t: ["--set", "batch=0"], "batch"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_one_line_exit_2_nothing_written(case, tmp_path, capsys):
    make_args, needle = CASES[case]
    out = tmp_path / "out"
    code = main(["run", *make_args(tmp_path), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("moesim: error: ") and needle in err, err
    assert "Traceback" not in err
    assert not out.exists()


def test_real_process_exit_code_and_no_traceback(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "moesim.cli.main", "run", "--set", "cache.policy=random", "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not out.exists()
