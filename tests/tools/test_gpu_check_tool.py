"""tools/gpu_check.sh, without a GPU: the script parses, its Python helpers compile, and its summary
states the numbers a GPU session must commit (PCIe efficiency, host vs GPU time per op, whole-token
ops) from a CUDA-shaped work directory."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "gpu_check.sh"


def _heredoc(name: str) -> str:
    text = SCRIPT.read_text(encoding="utf-8")
    m = re.search(rf"cat >\"\$W/{name}\" <<'PYEOF'\n(.*?)\nPYEOF\n", text, re.S)
    assert m, f"{name} not found in {SCRIPT}"
    return m.group(1)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.parametrize("name", ["bench.py", "summarize.py"])
def test_helpers_compile(name):
    compile(_heredoc(name), name, "exec")


def _summarize(w: Path, out: Path) -> str:
    (w / "summarize.py").write_text(_heredoc("summarize.py"), encoding="utf-8")
    cmd = [sys.executable, str(w / "summarize.py"), str(w), str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    return (out / "summary.md").read_text(encoding="utf-8")


def _table(axes, grid, ms, host):
    return {
        "axes": axes,
        "grid": grid,
        "ms": ms,
        "provenance": {"kind": "measured", "host_median_ms": host, "gpu_queue_busy": True},
    }


def test_summary_states_the_numbers_to_commit(tmp_path):
    w, out = tmp_path / "w", tmp_path / "out"
    (w / "logs").mkdir(parents=True)
    out.mkdir()
    (w / "steps.tsv").write_text("bench\tok\t0\t12\n", encoding="utf-8")
    bench = {
        "device": "NVIDIA H200",
        "torch": "2.13.0",
        "cuda": "13.0",
        "pcie_gen5_x16_peak_gbps": 63.02,
        "moesim_assumed_h2d_gbps": 50.41,
        "h2d_peak_samples_gbps": [55.1, 55.3, 55.2, 55.2, 55.0, 55.4, 55.2, 55.1],
        "h2d_peak_gbps": 55.2,
        "pcie_gen": 5,
        "pcie_lanes": 16,
        "pcie_link": {"gen_max": 5, "width_max": 16, "gen_current": 5, "width_current": 16},
        "link_theoretical_gbps": 63.015,
        "h2d_peak_efficiency": 0.876,
        "h2d_pinned": [
            {
                "bytes": 17301504,
                "isolated_ms_median": 0.36,
                "isolated_gbps": 48.06,
                "b2b_ms": 0.33272,
                "b2b_gbps": 52.0,
                "b2b_pct_of_peak": 82.5,
                "host_enqueue_us": 9.0,
            }
        ],
    }
    (w / "bench.json").write_text(json.dumps(bench), encoding="utf-8")
    tok = {"tokens": [1.0, 8.0]}
    tables = {
        "attention": _table(
            ["batch", "context"], {"batch": [1.0], "context": [256.0, 320.0]}, [[0.05, 0.06]], [[0.2, 0.21]]
        ),
        "expert_ffn": _table(["tokens"], {"tokens": [1.0, 4.0]}, [0.03, 0.04], [0.011, 0.012]),
        "lm_head": _table(["tokens"], tok, [0.25, 0.26], [0.019, 0.02]),
        "sampling": _table(["batch"], {"batch": [1.0]}, [0.07], [0.09]),
        "h2d_pinned": _table(["bytes"], {"bytes": [17301504.0]}, [0.34602], [0.02]),
    }
    prof = {"device": "cuda: NVIDIA H200", "model": "deepseek-v2-lite", "tables": tables}
    (w / "profile-dsv2.yaml").write_text(yaml.safe_dump(prof), encoding="utf-8")
    (w / "cal-dsv2-c48").mkdir()
    with open(w / "cal-dsv2-c48" / "calibration.csv", "w", newline="") as fh:
        wr = csv.DictWriter(fh, ["config", "live_tpot_mean_ms", "sim_err_mean_pct", "decisions_identical"])
        wr.writeheader()
        wr.writerow(
            {
                "config": "none",
                "live_tpot_mean_ms": 9.5,
                "sim_err_mean_pct": -2.5,
                "decisions_identical": True,
            }
        )
    md = _summarize(w, out)
    lines = md.splitlines()
    assert lines[0] == "# moesim gpu_check summary" and lines[2] == "## Numbers to commit"
    assert "median **55.2 GB/s**" in md and "efficiency **0.876**" in md
    assert "samples_gbps=(55.1, 55.3, 55.2, 55.2, 55.0, 55.4, 55.2, 55.1)" in md
    # host vs GPU at the stated points: attention at context 320 (the second column), host/GPU ratio
    assert "| attention | {'batch': 1, 'context': 320} | 0.0600 | 0.2100 | 3.50 | True |" in md
    # asked at 8 tokens, read (and labelled) at the nearest grid point, 4
    assert "| expert_ffn | {'tokens': 4} | 0.0400 | 0.0120 | 0.30 | True |" in md
    assert "| lm_head | {'tokens': 1} | 0.2500 | 0.0190 | 0.08 | True |" in md
    assert "| sampling | {'batch': 1} | 0.0700 | 0.0900 | 1.29 | True |" in md
    # 17301504 B / 0.34602 ms = 50.0 GB/s: 90.6% of the 55.2 GB/s peak, 96.2% of 52.0 GB/s raw
    assert "one expert (17,301,504 B): 50.00 GB/s = 90.6% of the pinned peak" in md
    assert "96.2% of raw back-to-back copies of that size" in md
    assert "whole-token ops absent: ['embedding', 'dense_ffn']" in md
    assert "| cal-dsv2-c48 | none | 9.500 | -2.5 |" in md
    assert (w / "all_calibration.csv").exists()


def test_summary_refuses_to_file_a_non_gen5_link(tmp_path):
    w, out = tmp_path / "w", tmp_path / "out"
    (w / "logs").mkdir(parents=True)
    out.mkdir()
    (w / "steps.tsv").write_text("", encoding="utf-8")
    bench = {
        "h2d_peak_samples_gbps": [25.0] * 8,
        "h2d_peak_gbps": 25.0,
        "pcie_gen": 4,
        "pcie_lanes": 16,
        "link_theoretical_gbps": 31.508,
        "h2d_peak_efficiency": 0.7935,
    }
    (w / "bench.json").write_text(json.dumps(bench), encoding="utf-8")
    md = _summarize(w, out)
    assert "do not file it under MEASUREMENTS[5]" in md and "samples_gbps=" not in md
