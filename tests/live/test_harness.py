"""``moesim harness``: a live run writes the same files and summary schema as ``moesim run``."""

from __future__ import annotations

import argparse
import json
import sys

import pytest

from moesim.engine.live_executor import LiveOptions
from moesim.errors import MoesimInputError
from moesim.experiments.live import cut_layers, run_live
from moesim.experiments.run import prepare, run_prepared
from moesim.experiments.scenario import load_scenario
from tests.live.conftest import live_prepared, tiny_model

FILES = {
    "summary.json",
    "tokens.csv",
    "layers.csv",
    "tokens.parquet",
    "layers.parquet",
    "wallclock.json",
    "run_extras.parquet",
}


def _keys(d, prefix=""):
    out = set()
    for k, v in d.items():
        out.add(prefix + k)
        if isinstance(v, dict) and k not in ("provenance",):
            out |= _keys(v, prefix + k + ".")
    return out


def _cli(module, argv):
    parser = argparse.ArgumentParser(prog="moesim")
    sub = parser.add_subparsers()
    module.register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_same_schema_and_files_as_the_simulator(small_scenario, tmp_path):
    p = prepare(load_scenario(small_scenario))
    sim = run_prepared(p)
    live = run_live(p, LiveOptions(keep_awake=False)).result
    assert _keys(live.summary) == _keys(sim.summary)
    assert list(live.tokens.columns) == list(sim.tokens.columns)
    assert list(live.layers.columns) == list(sim.layers.columns)
    # churn per step is decision-side: the same in both executors
    churn = ["evictions", "refetches"]
    assert live.tokens[churn].equals(sim.tokens[churn]) and sim.tokens["evictions"].sum() > 0
    prov = live.summary["provenance"]
    assert prov["executor"] == "live"
    assert prov["live"]["layers_replayed"] == 3 and prov["live"]["device_info"]["torch"]
    out = live.write(tmp_path / "live")
    assert {f.name for f in out.iterdir()} >= FILES
    assert json.loads((out / "summary.json").read_text())["counts"] == live.summary["counts"]


def test_layers_cut(small_scenario):
    p = prepare(load_scenario(small_scenario))
    cut = cut_layers(p, 2)
    assert cut.model.num_moe_layers == 2 and cut.trace.meta.num_layers == 2
    assert cut.trace.experts.shape[1] == 2
    res = run_live(p, LiveOptions(keep_awake=False), layers=2).result
    assert res.summary["counts"]["layer_steps"] == res.summary["counts"]["decode_steps"] * 2
    assert res.summary["provenance"]["live"]["layers_in_model"] == 3
    assert cut_layers(p, None) is p
    with pytest.raises(MoesimInputError, match="--layers 9"):
        cut_layers(p, 9)


def test_harness_cli_writes_a_run(small_scenario, tmp_path, capsys):
    from moesim.cli import harness_cmd

    out = tmp_path / "h"
    rc = _cli(
        harness_cmd,
        [
            "harness",
            str(small_scenario),
            "--device",
            "cpu",
            "--out",
            str(out),
            "--layers",
            "2",
            "--quiet",
            "--set",
            "cache.capacity=6",
            "--decisions",
            "--no-keep-awake",
        ],
    )
    assert rc == 0
    assert {f.name for f in out.iterdir()} >= FILES
    lines = (out / "decisions.jsonl").read_text().splitlines()
    assert lines and json.loads(lines[0])[0] == "start"
    assert json.loads((out / "summary.json").read_text())["provenance"]["scenario"]["cache"]["capacity"] == 6


def test_cli_errors_are_one_line(small_scenario, tmp_path, monkeypatch, capsys):
    from moesim.cli import main as cli_main

    monkeypatch.setattr(cli_main, "COMMAND_MODULES", ["moesim.cli.harness_cmd", "moesim.cli.profile_cmd"])
    import torch

    if not torch.cuda.is_available():
        rc = cli_main.main(["harness", str(small_scenario), "--device", "cuda", "--out", str(tmp_path / "x")])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and "no CUDA device" in err[0]
        assert not (tmp_path / "x").exists()
    rc = cli_main.main(["harness", str(small_scenario), "--device", "tpu", "--out", str(tmp_path / "y")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "use cpu, cuda or cuda:N" in err[0]


def test_unsupported_dtype_and_continuous_batching(trace):
    from dataclasses import replace

    m = replace(tiny_model(), dtype="fp8", expert_bytes=3 * 64 * 128)
    with pytest.raises(MoesimInputError, match="fp8"):
        run_live(live_prepared(trace, m), LiveOptions(keep_awake=False))
    p = live_prepared(trace, tiny_model())
    p.scenario.arrivals.process = "poisson"
    with pytest.raises(MoesimInputError, match="static batches"):
        run_live(p, LiveOptions(keep_awake=False))


def test_torch_stays_out_of_plain_imports():
    import subprocess

    code = (
        "import sys, moesim, moesim.cli.main, moesim.experiments.run, moesim.cli.harness_cmd, "
        "moesim.cli.profile_cmd, moesim.cli.calibrate_cmd; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_keep_awake_spinners_come_and_go():
    import os

    from moesim.engine.live.device import keep_awake

    if not hasattr(os, "SCHED_IDLE"):
        pytest.skip("no SCHED_IDLE on this platform")
    cpus = frozenset(sorted(os.sched_getaffinity(0))[:1])
    with keep_awake(cpus):
        kids = _children()
        assert kids, "a spinner runs during the block"
    assert not (_children() & kids), "spinners are gone afterwards"


def _children() -> set[int]:
    import os

    me = os.getpid()
    out = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == me:
                        out.add(int(pid))
            except (OSError, ValueError, IndexError):
                pass
    return out
