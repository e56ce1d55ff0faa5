"""The differential harness of the fast executor: one scenario run with ``executor: sim`` and with
``executor: fast``, compared exactly.

Equal means: ``summary.json`` bytes identical once the fields that name the executor are blanked
(``provenance.executor``, which records the one that ran, and ``provenance.scenario.executor``,
the key as given), and the tokens, layers and extras tables equal column for column, dtype for
dtype, value for value (exact float equality; NaN equals NaN). The differential, fallback and
mutation tests all go through ``differences`` so that the mutation test proves the very check the
differential tests rely on.
"""

from __future__ import annotations

import copy
import functools
import json
import tempfile
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from moesim.experiments.scenario import Scenario
from moesim.io import dumps_json
from moesim.metrics.result import RunResult
from moesim.traces.native import save_trace
from moesim.traces.trace import Trace

HAS_EXECUTOR_KEY = "executor" in {f.name for f in fields(Scenario)}
needs_fast = pytest.mark.skipif(
    not HAS_EXECUTOR_KEY, reason="the fast executor (scenario key `executor`) is not on this branch yet"
)
FAST = "fast"  # provenance.executor of a run the fast executor made
BLANK = "<executor>"


# -- inputs ----------------------------------------------------------------------------------------
def tiny_config(L: int, E: int, k: int, shared: bool = False) -> dict[str, Any]:
    """A config.json of L MoE layers, E experts, top-k (196,608-byte experts): OLMoE-type, or with
    ``shared`` Qwen2-MoE-type with one always-resident shared expert per layer."""
    common = {
        "hidden_size": 256,
        "num_attention_heads": 4,
        "num_experts": E,
        "num_experts_per_tok": k,
        "num_hidden_layers": L,
        "num_key_value_heads": 4,
        "torch_dtype": "bfloat16",
        "vocab_size": 1000,
    }
    if shared:
        return {
            **common,
            "architectures": ["Qwen2MoeForCausalLM"],
            "model_type": "qwen2_moe",
            "intermediate_size": 512,
            "moe_intermediate_size": 128,
            "shared_expert_intermediate_size": 256,
        }
    return {**common, "architectures": ["OlmoeForCausalLM"], "model_type": "olmoe", "intermediate_size": 128}


def write_inputs(root: Path, trace: Trace, model: str | None = None, shared: bool = False) -> dict[str, Any]:
    """Save ``trace`` (and, without a catalog ``model``, a config.json of its shape, ``shared``:
    with a shared expert) under ``root``; the base overrides of a scenario that replays it on the
    estimated H100 PCIe profile."""
    root.mkdir(parents=True, exist_ok=True)
    path = save_trace(trace, root / "t.moetrace")
    base: dict[str, Any] = {"trace.path": str(path), "hardware.profile": "estimated:h100-pcie"}
    if model is None:
        m = trace.meta
        cfg = root / "config.json"
        cfg.write_text(
            json.dumps(tiny_config(m.num_layers, m.num_experts, m.top_k, shared)), encoding="utf-8"
        )
        name = f"tiny-{m.num_layers}x{m.num_experts}k{m.top_k}{'s' if shared else ''}"
        base.update({"model.name": name, "model.config": str(cfg)})
    else:
        base["model.name"] = model
    return base


# -- runs ------------------------------------------------------------------------------------------
def run(overrides: Mapping[str, Any], executor: str) -> RunResult:
    """One run through the pipeline (as ``moesim run``), with its own cache: no baseline or trace
    is shared between the two executors' runs."""
    from moesim.experiments.cache import RunCache
    from moesim.experiments.overrides import resolve_scenario
    from moesim.experiments.pipeline import run_scenario

    sc = resolve_scenario(None, None, {**overrides, "executor": executor})
    return run_scenario(sc, RunCache())


def executor_of(result: RunResult) -> str:
    return str(result.summary["provenance"]["executor"])


def run_pair(overrides: Mapping[str, Any]) -> tuple[RunResult, RunResult]:
    """The scenario run by the simulator and by the fast executor (each checked to be the one
    that ran: a fast run that quietly fell back would make every comparison vacuous)."""
    sim = run(overrides, "sim")
    fast = run(overrides, "fast")
    assert executor_of(sim) == "sim", executor_of(sim)
    assert executor_of(fast) == FAST, f"executor=fast ran {executor_of(fast)!r}"
    return sim, fast


@functools.cache
def fast_covers(**overrides: Any) -> bool:
    """Whether ``executor: auto`` takes the fast path on a tiny scenario with ``overrides`` (for the
    features the issue leaves optional, e.g. ``cache.policy="arc"``)."""
    import numpy as np

    from tests.helpers import random_trace

    trace = random_trace(np.random.default_rng(0), 2, [3, 2], 2, 4, 1)
    with tempfile.TemporaryDirectory(prefix="fastdiff-") as tmp:
        base = write_inputs(Path(tmp), trace)
        return executor_of(run({**base, "cache.capacity": 4, **overrides}, "auto")) == FAST


# -- the comparison --------------------------------------------------------------------------------
def summary_text(result: RunResult) -> str:
    """summary.json's bytes (``RunResult.write`` writes ``dumps_json(summary)``) with the executor
    fields blanked."""
    s = copy.deepcopy(result.summary)
    prov = s.get("provenance", {})
    if "executor" in prov:
        prov["executor"] = BLANK
    if isinstance(prov.get("scenario"), dict) and "executor" in prov["scenario"]:
        prov["scenario"]["executor"] = BLANK
    return dumps_json(s)


def _json_paths(a: Any, b: Any, where: str = "") -> list[str]:
    """Where two JSON documents differ (first few)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                out.append(f"{where}.{key}: only in {'fast' if key in b else 'sim'}")
            else:
                out += _json_paths(a[key], b[key], f"{where}.{key}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _json_paths(x, y, f"{where}[{i}]")]
    return [] if a == b and type(a) is type(b) else [f"{where}: sim {a!r} != fast {b!r}"]


def _table_differences(name: str, a: pd.DataFrame | None, b: pd.DataFrame | None) -> list[str]:
    if a is None or b is None:
        return [] if a is None and b is None else [f"{name}: present in only one run"]
    if list(a.columns) != list(b.columns):
        return [f"{name}: columns {list(a.columns)} != {list(b.columns)}"]
    if len(a) != len(b):
        return [f"{name}: {len(a)} rows != {len(b)} rows"]
    out = []
    for col in a.columns:
        x, y = a[col].to_numpy(), b[col].to_numpy()
        if x.dtype != y.dtype:
            out.append(f"{name}.{col}: dtype {x.dtype} != {y.dtype}")
            continue
        if x.dtype.kind == "f":
            same = (x == y) | (np.isnan(x) & np.isnan(y))
        else:
            same = np.array([p == q for p, q in zip(x, y)], dtype=bool)
        if not same.all():
            i = int(np.argmin(same))
            out.append(
                f"{name}.{col}: {int((~same).sum())} of {len(x)} rows differ, first row {i}: "
                f"sim {x[i]!r} != fast {y[i]!r}"
            )
    return out


def differences(sim: RunResult, fast: RunResult) -> list[str]:
    """Every way the two runs differ (empty when they are equal in the sense of this module)."""
    out = []
    if summary_text(sim) != summary_text(fast):
        paths = _json_paths(json.loads(summary_text(sim)), json.loads(summary_text(fast)))
        out.append("summary.json: " + ("; ".join(paths[:8]) or "bytes differ (same values)"))
    out += _table_differences("tokens", sim.tokens, fast.tokens)
    out += _table_differences("layers", sim.layers, fast.layers)
    out += _table_differences("extras", sim.extras, fast.extras)
    return out


def assert_same(sim: RunResult, fast: RunResult, what: Any = "") -> None:
    diffs = differences(sim, fast)
    assert not diffs, f"sim and fast differ{f' ({what})' if what else ''}:\n" + "\n".join(diffs[:12])
