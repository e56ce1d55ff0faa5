"""Fuzz the scenario surface: malformed variants of a valid scenario YAML file, and malformed
``--set`` values. Each is accepted (exit 0) or refused per the contract (fuzzkit): exit 2, one line
naming the file or the key, nothing written."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from fuzzkit import NASTY_VALUES, assert_contract, byte_mutation, fuzz, json_mutation, run_cli
from hypothesis import given
from hypothesis import strategies as st

# every top-level key and section of a scenario: a refusal names the file, a key or --set
KEYS = [
    "name", "model", "trace", "hardware", "predictor", "cache", "tiers", "miss", "arrivals", "batch",
    "prompt_tokens", "prefill", "refetch_window", "seed", "--set", "unexpected_field",
]  # fmt: skip


def _scenario(base: dict[str, Path]) -> dict:
    doc = yaml.safe_load(base["scenario"].read_text())
    doc["trace"]["path"] = str(base["trace"])  # the copy lives in another directory
    return doc


def _run(path: Path, out: Path, *sets: str) -> None:
    argv = ["run", path, "--out", out, "--quiet"]
    for s in sets:
        argv += ["--set", s]
    assert_contract(run_cli(argv), [str(path), *KEYS], written=out)


@fuzz(40)
@given(data=st.data())
def test_fuzz_scenario_tree(base, data):
    doc = data.draw(json_mutation(_scenario(base)))
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "s.yaml"
        text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
        p.write_text(text.replace("__DEEP_NESTING__", "[" * 5000 + "]" * 5000), encoding="utf-8")
        _run(p, Path(d) / "out")


TEXT_OPS = ["duplicate_key", "alias", "merge_key", "python_tag", "tab", "binary", "bytes"]


@fuzz(30)
@given(op=st.sampled_from(TEXT_OPS), data=st.data())
def test_fuzz_scenario_text(base, op, data):
    text = yaml.safe_dump(_scenario(base), sort_keys=False)
    blob = {
        "duplicate_key": lambda: text.replace("seed: 0", "seed: 0\nseed: 1"),
        "alias": lambda: text.replace("cache:\n", "cache: &c\n", 1) + "extra: *c\n",
        "merge_key": lambda: text.replace("cache:\n", "cache:\n  <<: {policy: fifo}\n", 1),
        "python_tag": lambda: "!!python/object/apply:os.system [true]\n" + text,
        "tab": lambda: text.replace("  ", "\t", 2),
        "binary": lambda: "\x00\x01" + text,
    }.get(op)
    raw = blob().encode() if blob else data.draw(byte_mutation(text.encode()))
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "s.yaml"
        p.write_bytes(raw)
        _run(p, Path(d) / "out")


SET_KEYS = [
    "cache.capacity", "batch", "predictor.horizon", "predictor.params.accuracy", "hardware.h2d_gbps",
    "prompt_tokens", "arrivals.rate_per_s", "trace.max_sequences", "cache.policy", "no.such.key",
]  # fmt: skip
SET_VALUES = ["", "x", "1.5", "-1", "0", "1e30", "1e-300", ".inf", ".nan", "[1, 2]", "{a: 1}", "true",
              "99999999999999999999999999", "&a 1", "*a", "!!python/name:os.system", "[" * 3000]  # fmt: skip


@fuzz(40)
@given(key=st.sampled_from(SET_KEYS), value=st.sampled_from(SET_VALUES + [str(v) for v in NASTY_VALUES]))
def test_fuzz_scenario_set(base, key, value):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "s.yaml"
        p.write_text(yaml.safe_dump(_scenario(base), sort_keys=False), encoding="utf-8")
        _run(p, Path(d) / "out", f"{key}={value}")
