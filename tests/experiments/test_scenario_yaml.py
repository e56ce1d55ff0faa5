"""Scenario YAML is read strictly: YAML 1.2 numbers, no duplicate keys or aliases, one line for every
unreadable file, and no value silently altered on its way into a scenario."""

from __future__ import annotations

import json
import math

import pytest

from moesim.cli.main import main
from moesim.errors import MoesimInputError
from moesim.experiments.scenario import load_scenario
from moesim.yamlio import loads


def write(tmp_path, text: str | bytes):
    path = tmp_path / "s.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "text, value",
    [
        ("1e3", 1000.0),
        ("-2.5E-2", -0.025),
        (".inf", math.inf),
        ("-.inf", -math.inf),
        ("010", 10),  # decimal, not YAML 1.1's octal
        ("0x10", 16),
        ("on", "on"),  # YAML 1.1 read these as booleans
        ("yes", "yes"),
        ("1:30", "1:30"),  # YAML 1.1 read this as 90
        ("2024-01-02", "2024-01-02"),  # no date objects in provenance
        ("true", True),
        ("~", None),
    ],
)
def test_yaml_1_2_scalars(text, value):
    assert loads(f"a: {text}", "x") == {"a": value}


def test_nan_parses_as_a_float():
    assert math.isnan(loads("a: .nan", "x")["a"])


@pytest.mark.parametrize(
    "text, needle",
    [
        ("name: a\nname: b\n", "duplicate key 'name'"),
        ("cache:\n  capacity: 64\n  capacity: 128\n", "duplicate key 'capacity'"),
        ("cache: &c {capacity: 64}\ntiers: *c\n", "anchor &c"),
        ("base: {capacity: 64}\ncache:\n  <<: {policy: lru}\n", "merge keys"),
        ("cache: {capacity: !!python/object:os.system x}\n", "constructor"),
        ("name: [unclosed\n", "is not valid YAML"),
    ],
)
def test_refused_constructs_are_one_line_naming_the_file(tmp_path, needle, text):
    path = write(tmp_path, text)
    with pytest.raises(MoesimInputError) as err:
        load_scenario(path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and needle in msg and "\n" not in msg, msg


@pytest.mark.parametrize(
    "content, needle",
    [
        (b"\xff\xfe\x00n\x00a\x00m\x00e", "not a UTF-8 text file"),
        (b"name: x\x00\n", "NUL byte"),
        ("a: " + "[" * 5000 + "]" * 5000, "nested too deeply"),
        ("a: " + "{b: " * 5000 + "1" + "}" * 5000, "nested too deeply"),
    ],
    ids=["utf-16", "nul", "deep-list", "deep-mapping"],
)
def test_binary_and_deeply_nested_files_are_one_line(tmp_path, content, needle):
    path = write(tmp_path, content)
    with pytest.raises(MoesimInputError) as err:
        load_scenario(path)
    assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("trace: {max_sequences: '3'}", "trace.max_sequences must be an integer, got '3'"),
        ("trace: {max_sequences: 2.5}", "trace.max_sequences must be an integer, got 2.5"),
        ("trace: {max_sequences: 3.0}", "trace.max_sequences must be an integer, got 3.0"),
        ("trace: {max_sequences: true}", "trace.max_sequences must be an integer, got True"),
        ("cache: {capacity: 1e3}", "cache.capacity must be an integer, got 1000.0"),
        ("name: 5", "name must be a string, got 5"),
        ("trace: {path: [a]}", "trace.path must be a string"),
        ("cache: {bypass: 1}", "cache.bypass must be true or false, got 1"),
        ("cache: {bypass: 'yes'}", "cache.bypass must be true or false"),
        ("hardware: {h2d_gbps: true}", "hardware.h2d_gbps must be a number, got True"),
        ("hardware: {h2d_gbps: '16'}", "hardware.h2d_gbps must be a number, got '16'"),
        ("arrivals: {times_ms: '0, 1'}", "arrivals.times_ms must be a list, got '0, 1'"),
        ("arrivals: {times_ms: [0, x]}", "arrivals.times_ms[1] must be a number, got 'x'"),
        ("arrivals: {times_ms: [0, true]}", "arrivals.times_ms[1] must be a number, got True"),
        ("predictor: {params: [1]}", "predictor.params must be a mapping"),
        ("cache: 5", "cache must be a mapping"),
    ],
)
def test_values_that_would_be_altered_are_refused(tmp_path, text, needle):
    path = write(tmp_path, text + "\n")
    with pytest.raises(MoesimInputError) as err:
        load_scenario(path)
    assert needle in str(err.value), str(err.value)


def test_documented_non_finite_values_load_and_others_are_range_errors(tmp_path):
    sc = load_scenario(write(tmp_path, "hardware: {h2d_gbps: .inf}\n"))
    assert sc.hardware.h2d_gbps == math.inf
    for text, needle in [
        ("hardware: {h2d_gbps: .nan}", "hardware.h2d_gbps must be a number (not NaN)"),
        ("hardware: {h2d_gbps: -.inf}", "hardware.h2d_gbps: must be >= 0.001, got -inf"),
        ("hardware: {h2d_overhead_us: .inf}", "hardware.h2d_overhead_us: must be <= "),
        ("tiers: {dram_gb: .inf}", "tiers.dram_gb: must be <= "),
        ("predictor: {threshold: .inf}", "predictor.threshold: must be <= "),
    ]:
        with pytest.raises(MoesimInputError) as err:
            load_scenario(write(tmp_path, text + "\n"))
        assert needle in str(err.value), str(err.value)


@pytest.mark.parametrize(
    "override, needle",
    [
        ("prompt_tokens=1e30", "--set: prompt_tokens must be an integer, got 1e+30"),
        ("prompt_tokens=1000000000000000000000000000000", "prompt_tokens: must be <= 10000000"),
        ("batch=100000000000", "batch: must be <= 65536"),
        ("arrivals.rate_per_s=1e-300", "arrivals.rate_per_s: must be >= 1e-06, got 1e-300"),
        ("arrivals.times_ms=[0, 1e300]", "arrivals.times_ms[1]: must be in [0, 1e+12] ms"),
        ("hardware.copy_engines=0", "hardware.copy_engines: must be >= 1, got 0"),
        ("seed=-1", "seed: must be >= 0, got -1"),
    ],
)
def test_values_float_arithmetic_would_lose_are_range_errors(tmp_path, capsys, override, needle):
    out = tmp_path / "out"
    code = main(
        ["run", "--set", "arrivals.process=poisson", "--set", "arrivals.rate_per_s=1"]
        + ["--set", override, "--out", str(out), "--quiet"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and needle in err, err
    assert not out.exists()


def test_run_with_the_ideal_link_writes_inf_as_a_string(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        ["run", "--set", "hardware.h2d_gbps=.inf", "--set", "trace.max_sequences=1"]
        + ["--out", str(out), "--quiet"]
    )
    assert code == 0, capsys.readouterr().err
    text = (out / "summary.json").read_text(encoding="utf-8")
    assert "Infinity" not in text and "NaN" not in text
    summary = json.loads(text)
    assert summary["provenance"]["scenario"]["hardware"]["h2d_gbps"] == "inf"
    # the ideal link is faster than any finite one: same scenario at 16 GB/s has a larger TPOT
    finite = tmp_path / "finite"
    assert (
        main(
            ["run", "--set", "hardware.h2d_gbps=16", "--set", "trace.max_sequences=1"]
            + ["--out", str(finite), "--quiet"]
        )
        == 0
    )
    slow = json.loads((finite / "summary.json").read_text(encoding="utf-8"))
    assert summary["latency"]["tpot_ms"]["mean"] < slow["latency"]["tpot_ms"]["mean"]


def test_sweep_over_a_grid_with_inf_completes_and_resumes(tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["sweep", "--grid", "hardware.h2d_gbps=16,.inf", "--set", "trace.max_sequences=1", "-j", "1"]
    assert main([*args, "--out", str(out)]) == 0, capsys.readouterr().err
    manifest = json.loads((out / "sweep.json").read_text(encoding="utf-8"))
    assert manifest["points"] == [{"hardware.h2d_gbps": 16}, {"hardware.h2d_gbps": "inf"}]
    records = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((out / "points").glob("*.json"))]
    assert [r["status"] for r in records] == ["ok", "ok"]
    table = (out / "results.csv").read_text(encoding="utf-8").splitlines()
    assert len(table) == 3  # header and both points
    before = (out / "results.csv").read_bytes()
    assert main([*args, "--out", str(out), "--resume"]) == 0
    assert "2 already finished" in capsys.readouterr().out
    assert (out / "results.csv").read_bytes() == before


def test_a_file_read_again_is_a_fresh_copy_and_an_edit_is_seen(tmp_path):
    from moesim.yamlio import load_file

    path = tmp_path / "s.yaml"
    path.write_text("cache:\n  capacity: 64\n", encoding="utf-8")
    first = load_file(path)
    first["cache"]["capacity"] = 1  # a caller changing its document (overrides do)
    assert load_file(path) == {"cache": {"capacity": 64}}
    path.write_text("cache:\n  capacity: 65\n", encoding="utf-8")  # same size, maybe the same mtime
    assert load_file(path) == {"cache": {"capacity": 65}}
