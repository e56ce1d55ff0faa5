"""End to end: ``moesim run`` as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pandas as pd

from moesim.cli.main import main


def test_default_run_fresh_process(tmp_path):
    out = tmp_path / "default"
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "moesim.cli.main", "run", "--out", str(out)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert time.perf_counter() - t < 60
    assert "TPOT ms" in proc.stdout and "hit rate" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["provenance"]["executor"] == "fast"  # the default scenario is covered (executor: auto)
    assert summary["counts"]["tokens"] == 2048 and summary["counts"]["layer_steps"] == 2048 * 16
    for name in ("tokens.csv", "layers.csv", "tokens.parquet", "layers.parquet", "wallclock.json"):
        assert (out / name).is_file()
    assert len(pd.read_csv(out / "layers.csv")) == 16


def test_summary_is_byte_identical_across_reruns(tmp_path):
    args = ["run", "--quiet", "--set", "trace.max_sequences=3", "--set", "predictor.name=oracle"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    for name in ("summary.json", "tokens.csv", "layers.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_overrides_reach_the_run(tmp_path):
    out = tmp_path / "o"
    overrides = {
        "cache.policy": "belady",
        "cache.capacity": "16",
        "cache.scope": "per-layer",
        "predictor.name": "prev-token",
        "predictor.horizon": "2",
        "hardware.profile": "estimated:a100-80gb-sxm",
        "batch": "2",
        "trace.max_sequences": "4",
        "model.name": "olmoe-1b-7b",
    }
    argv = ["run", "--quiet", "--out", str(out)]
    for k, v in overrides.items():
        argv += ["--set", f"{k}={v}"]
    assert main(argv) == 0
    s = json.loads((out / "summary.json").read_text())
    sc = s["provenance"]["scenario"]
    assert (sc["cache"]["policy"], sc["cache"]["capacity"], sc["cache"]["scope"]) == (
        "belady",
        16,
        "per-layer",
    )
    assert (sc["predictor"]["name"], sc["predictor"]["horizon"], sc["batch"]) == ("prev-token", 2, 2)
    assert s["provenance"]["profile"] == "estimated:a100-80gb-sxm"
    assert s["counts"]["tokens"] == 4 * 128 and s["counts"]["decode_steps"] == 2 * 128


def test_scenario_file_and_relative_trace(tmp_path, repo_root):
    scen = tmp_path / "my.yaml"
    scen.write_text(
        f"name: mine\ntrace:\n  path: {repo_root / 'traces' / 'default.moetrace'}\n  max_sequences: 2\n"
        "predictor:\n  name: none\ncache:\n  capacity: 64\n"
    )
    out = tmp_path / "r"
    assert main(["run", str(scen), "--quiet", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["provenance"]["scenario"]["name"] == "mine"
    assert s["prefetch"]["issued"] == 0 and s["traffic"]["ratio_bytes_vs_on_demand"] == 1.0
