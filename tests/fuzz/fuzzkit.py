"""The bad-input contract, and mutators that make malformed variants of a valid file.

Contract for every input surface, checked through the CLI entry point in-process
(``moesim.cli.main.main``): a command either accepts the input (exit 0, and what it wrote is
valid) or refuses it with exit 2 and exactly one stderr line ``moesim: error: ...`` naming the
file, no traceback, and nothing written to ``--out``. Any other exception escapes ``main`` and
fails the test with its traceback.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from moesim.cli.main import main
from moesim.traces.native import save_trace
from moesim.traces.trace import Trace, TraceMeta


def fuzz(max_examples: int) -> settings:
    """Deterministic and bounded: the whole suite must finish within CI's 3 minutes."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


@dataclass
class Outcome:
    code: int
    out: str
    err: str


def run_cli(argv: list[str]) -> Outcome:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse's own errors
            code = int(exc.code or 0)
    return Outcome(code, out.getvalue(), err.getvalue())


def assert_refused(res: Outcome, names: str | list[str], written: Path | None = None) -> str:
    """Exit 2, one stderr line naming ``names`` (any of them), no traceback, nothing written."""
    assert res.code == 2, f"exit {res.code}, stderr: {res.err[-800:]}"
    lines = res.err.strip().splitlines()
    assert len(lines) == 1, f"{len(lines)} stderr lines: {res.err[-800:]}"
    line = lines[0]
    assert line.startswith("moesim: error: ") and "Traceback" not in res.err
    alts = [names] if isinstance(names, str) else names
    assert any(n in line for n in alts), f"{alts} not named in: {line}"
    if written is not None:
        assert not written.exists(), f"{written} was written although the input was refused"
    return line


def assert_contract(res: Outcome, names: str | list[str], written: Path | None = None) -> bool:
    """Accepted (exit 0) or refused per the contract; returns True when accepted."""
    if res.code == 0:
        return True
    assert_refused(res, names, written)
    return False


# -- byte mutations ------------------------------------------------------------------------------------
@st.composite
def byte_mutation(draw: st.DrawFn, data: bytes) -> bytes:
    """Truncation, a flipped byte, an inserted or deleted run, or a zeroed block."""
    n = len(data)
    op = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "zero", "garbage"]))
    i = draw(st.integers(0, max(0, n - 1)))
    if op == "truncate":
        return data[:i]
    if op == "flip":
        bit = draw(st.integers(0, 7))
        return data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1 :] if n else b"\xff"
    if op == "insert":
        blob = draw(st.binary(min_size=1, max_size=16))
        return data[:i] + blob + data[i:]
    if op == "delete":
        j = draw(st.integers(i, min(n, i + 64)))
        return data[:i] + data[j:]
    if op == "zero":
        j = draw(st.integers(i, min(n, i + 64)))
        return data[:i] + bytes(j - i) + data[j:]
    return draw(st.binary(min_size=0, max_size=64))


# -- JSON-tree mutations -------------------------------------------------------------------------------
DEEP = "__DEEP_NESTING__"
HUGE_INT_TEXT = "9" * 5000  # more digits than Python converts by default

NASTY_VALUES: list[Any] = [
    None,
    True,
    False,
    "",
    "x",
    "3",
    "[1, 2]",
    1.5,
    -1,
    0,
    2**31,
    2**63,
    10**30,
    -(2**63),
    1e308,
    float("nan"),
    float("inf"),
    [],
    {},
    [1, 2, 3],
    {"a": 1},
    [[1], [2]],
    [True, False],
    ["a", "b"],
    "\u00e9\u0000",
    DEEP,
]


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:6]):  # a few elements are enough
            out.extend(_paths(v, (*prefix, i)))
    return out


def _set(doc: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return doc


def _delete(doc: Any, path: tuple) -> Any:
    node = doc
    for p in path[:-1]:
        node = node[p]
    del node[path[-1]]
    return doc


@st.composite
def json_mutation(draw: st.DrawFn, doc: Any) -> Any:
    """A deep copy of ``doc`` with one node replaced by a nasty value, deleted, or given an extra key."""
    doc = copy.deepcopy(doc)
    paths = _paths(doc)
    path = draw(st.sampled_from(paths))
    op = draw(st.sampled_from(["replace", "replace", "replace", "delete", "extra", "stringify"]))
    if op == "delete" and path:
        return _delete(doc, path)
    if op == "extra":
        node = doc
        for p in path:
            node = node[p]
        if isinstance(node, dict):
            node["unexpected_field"] = draw(st.sampled_from(NASTY_VALUES[:12]))
            return doc
        if isinstance(node, list):
            node.append(draw(st.sampled_from(NASTY_VALUES)))
            return doc
    if op == "stringify":  # the value written as a string (a list as "[1, 2]", a number as "3")
        node = doc
        for p in path:
            node = node[p]
        return _set(doc, path, json.dumps(node) if not isinstance(node, str) else node)
    return _set(doc, path, draw(st.sampled_from(NASTY_VALUES)))


def dump_json(doc: Any, indent: int | None = None) -> str:
    """JSON text of a mutated document; ``DEEP`` becomes 100,000 nested arrays, and huge numbers
    are spelled out (beyond what ``json`` reads back)."""
    text = json.dumps(doc, indent=indent, allow_nan=True)
    text = text.replace(json.dumps(DEEP), "[" * 100_000 + "]" * 100_000)
    return text.replace(str(10**30), HUGE_INT_TEXT)


# -- valid files shared by the suite ---------------------------------------------------------------
OLMOE_CONFIG = {
    "architectures": ["OlmoeForCausalLM"],
    "model_type": "olmoe",
    "hidden_size": 2048,
    "intermediate_size": 1024,
    "num_attention_heads": 16,
    "num_experts": 64,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 16,
    "num_key_value_heads": 16,
    "torch_dtype": "bfloat16",
    "vocab_size": 50304,
}


def tiny_trace(L: int = 16, E: int = 64, k: int = 8) -> Trace:
    """Six sequences of three tokens (enough for predictor eval's train/test split)."""
    rng = np.random.default_rng(5)
    S, T = 6, 3
    n = S * T
    return Trace(
        meta=TraceMeta(model="olmoe-1b-7b", num_layers=L, num_experts=E, top_k=k, domains=("a",)),
        experts=np.argsort(rng.random((n, L, E)), axis=-1)[..., :k].astype(np.int16),
        seq_offsets=np.arange(0, n + 1, T, dtype=np.int64),
        seq_domain=np.zeros(S, np.int16),
        weights=-np.sort(-rng.random((n, L, k)), axis=-1).astype(np.float32),
        token_ids=np.arange(n, dtype=np.int32),
    )


def make_base(root: Path) -> dict[str, Path]:
    """A tiny trace, scenario, profile, config.json and run directory: the valid files fuzzed."""
    trace = save_trace(tiny_trace(), root / "t.moetrace")
    scenario = root / "s.yaml"
    scenario.write_text(
        "name: fz\nmodel:\n  name: olmoe-1b-7b\ntrace:\n  path: t.moetrace\nhardware:\n"
        "  profile: estimated:h100-pcie\npredictor:\n  name: none\ncache:\n  policy: lru\n"
        "  capacity: 32\nbatch: 1\nprompt_tokens: 8\nseed: 0\n",
        encoding="utf-8",
    )
    from moesim.hardware.load import load_profile
    from moesim.hardware.profile_io import profile_to_yaml
    from moesim.models import get_model

    profile = root / "p.yaml"
    profile.write_text(profile_to_yaml(load_profile("estimated:h100-pcie", get_model("olmoe-1b-7b"))))
    config = root / "config.json"
    config.write_text(json.dumps(OLMOE_CONFIG))
    run = root / "run"
    res = run_cli(["run", scenario, "--out", run, "--quiet"])
    assert res.code == 0, res.err
    return {
        "root": root,
        "trace": trace,
        "scenario": scenario,
        "profile": profile,
        "config": config,
        "run": run,
    }
