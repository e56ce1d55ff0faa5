"""Evaluation runs end to end: train (or fit), evaluate per horizon, cross-domain matrix, and the
files they write. The CLI (``moesim/cli/predictor_cmd.py``) is a thin layer over these."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moesim.errors import fail
from moesim.evaluation.harness import (
    build_predictor,
    check_params,
    evaluate,
    fit_learned,
    predictor_class,
)
from moesim.evaluation.metrics import Accumulator
from moesim.evaluation.splits import Split, domain_split
from moesim.evaluation.timing import TimingBudget
from moesim.policies.predictors.base import PRE_ATTENTION
from moesim.traces.trace import Trace

# What the seed papers report, printed next to our measurements.
PAPER_CLAIMS: dict[str, dict[str, Any]] = {
    "prophet": {
        "source": "seeds 000/001 (Prophet reviews)",
        "top1": "80-89% top-1 accuracy (h = 1..3), 8.4M-parameter predictor",
    },
    "pre-attention": {
        "source": "seed 002, Table 4 (first MoE layer)",
        "exact_match": {
            "DeepSeek-V2-Lite": [0.9303, 0.9231],
            "Qwen3-30B": [0.9469, 0.9182],
            "Phi-mini-MoE": [0.9762, 0.9663],
        },
        "overprov_cover": {
            "DeepSeek-V2-Lite": [0.9865, 0.9815],
            "Qwen3-30B": [0.9881, 0.9721],
            "Phi-mini-MoE": [0.9905, 0.9834],
        },
        "top1": {
            "DeepSeek-V2-Lite": [0.9885, 0.9864],
            "Qwen3-30B": [0.9955, 0.9807],
            "Phi-mini-MoE": [0.9895, 0.9802],
        },
        "note": "pairs are [architecture 1, architecture 2]; over-provisioning loads 10 of 64 (k=6), 12 of 128 (k=8), 3 of 16 (k=2)",
    },
    "st-moe": {"source": "seed 003", "accuracy": "85% expert prediction accuracy (metric unspecified)"},
}


@dataclass
class Trained:
    model: Any  # the in-memory model (None for predictors fitted at construction)
    params: dict[str, Any]  # predictor params to build it with (model included)
    fit_trace: Trace | None
    info: dict[str, Any] = field(default_factory=dict)


def prepare_predictor(
    name: str, train: Trace, params: dict[str, Any], seed: int, model_path: str | None = None
) -> Trained:
    """Load ``model_path``, or train a trainable predictor on ``train``; table predictors fit when built."""
    check_params(name, params)
    cls = predictor_class(name)
    if model_path is not None:
        if not getattr(cls, "trainable", False):
            fail(f"--model: predictor {name} does not load model files")
        model = cls.load_model(model_path)  # type: ignore[attr-defined]
        return Trained(model, {**params, "model": model}, train, _model_info(model, loaded=str(model_path)))
    if getattr(cls, "trainable", False):
        model = fit_learned(name, train, params, seed)
        return Trained(model, {**params, "model": model}, train, _model_info(model))
    return Trained(None, dict(params), train, {})


def _model_info(model: Any, loaded: str | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {}
    if hasattr(model, "num_params"):
        info["num_params"] = int(model.num_params)
    elif isinstance(model, np.ndarray):
        info["num_params"] = int(model.size)
    if hasattr(model, "config"):
        info["config"] = {k: v for k, v in model.config.items() if k not in ("info",)}
    if hasattr(model, "info"):
        info["training"] = model.info
    if hasattr(model, "temperatures"):
        info["temperatures"] = [round(float(t), 4) for t in model.temperatures]
    if loaded:
        info["loaded_from"] = loaded
    return info


def make_timing(
    trace: Trace,
    profile_ref: str | None,
    model_name: str | None,
    prompt_tokens: int | None,
    model_config: str | None = None,
) -> TimingBudget | None:
    if profile_ref is None and model_name is None and model_config is None:
        return None
    if profile_ref is None or (model_name is None and model_config is None):
        fail("--profile and --model-name (or --model-config) go together (in-time accuracy needs both)")
    from moesim.hardware import load_profile
    from moesim.hardware.costs import CostModel
    from moesim.models import get_model, model_from_hf_config

    if model_config is not None:
        model = model_from_hf_config(Path(model_config).expanduser(), name=model_name)
        model_name = model.name
    else:
        model = get_model(model_name)
    m = trace.meta
    if (m.num_layers, m.num_experts, m.top_k) != (model.num_moe_layers, model.num_experts, model.top_k):
        fail(
            f"--model-name {model_name}: model has L={model.num_moe_layers}, E={model.num_experts}, "
            f"k={model.top_k}; the trace has L={m.num_layers}, E={m.num_experts}, k={m.top_k}"
        )
    ref = profile_ref
    if ref.partition(":")[0] not in ("paper", "estimated"):
        ref = str(Path(ref).expanduser())
    profile = load_profile(ref, model)
    if prompt_tokens is None:
        prompt_tokens = 512
        if trace.prefill_offsets is not None and trace.num_prefill_tokens:
            prompt_tokens = int(np.diff(trace.prefill_offsets).max())
    return TimingBudget(CostModel(profile, model), m.num_layers, m.top_k, prompt_tokens)


def run_eval(
    name: str,
    trained: Trained,
    test: Trace,
    horizons: list[int],
    seed: int,
    overprovision: int,
    threshold: float | None,
    timing: TimingBudget | None,
    fast: bool = True,
) -> tuple[Accumulator, dict[str, Any]]:
    """Evaluate at every horizon into one accumulator (pre-attention: its single horizon 0)."""
    cls = predictor_class(name)
    if cls.fires == PRE_ATTENTION:
        horizons = [0]
    acc = Accumulator(test.meta.num_layers, test.meta.top_k, overprovision, threshold)
    facts: dict[str, Any] = {"eval_seconds": {}, "eval_path": {}}
    for h in horizons:
        pred = build_predictor(name, trained.fit_trace, test, max(h, 1), trained.params, seed)
        if timing is not None:
            timing.predictor_ms = float(pred.latency_ms(1, timing.prompt_tokens))
        res = evaluate(pred, test, overprovision, threshold, timing, fast=fast, acc=acc)
        facts["eval_seconds"][h] = round(res.seconds, 2)
        facts["eval_path"][h] = res.path
    return acc, facts


def measured_latency(name: str, trained: Trained, test: Trace, seed: int) -> dict[int, float] | None:
    """CPU time of one firing at batch 1, 2, 4, 8 (for ``predictor.params.latency_ms``)."""
    if trained.model is None:
        return None
    pred = build_predictor(name, trained.fit_trace, test, 1, trained.params, seed)
    measure = getattr(pred, "_measure_latency", None) or getattr(pred, "_measure", None)
    if measure is None:
        return None
    try:
        return {b: round(float(measure(b)), 4) for b in (1, 2, 4, 8)}
    except Exception:  # noqa: BLE001 - a predictor without a timeable model: no table
        return None


# -- cross-domain ----------------------------------------------------------------------------------
def crossdomain(
    name: str,
    trace: Trace,
    params: dict[str, Any],
    fraction: float,
    seed: int,
    horizon: int,
    overprovision: int,
    progress=None,
) -> tuple[list[dict[str, Any]], list[str], dict[str, Any]]:
    """Train on each domain's training split, test on every domain's test split."""
    domains = list(trace.meta.domains)
    if len(domains) < 2:
        fail(f"trace has {len(domains)} domain(s); a cross-domain matrix needs at least 2")
    splits: dict[str, Split] = {d: domain_split(trace, d, fraction, seed) for d in domains}
    tests = {d: trace.select(splits[d].test) for d in domains}
    rows, info = [], {}
    for di in domains:
        trained = prepare_predictor(name, trace.select(splits[di].train), params, seed)
        info[di] = {k: v for k, v in trained.info.items() if k != "config"}
        for dj in domains:
            if progress:
                progress(f"train {di} -> test {dj}")
            acc, _ = run_eval(name, trained, tests[dj], [horizon], seed, overprovision, None, None)
            ph = acc.per_horizon()
            row = next(iter(ph.values())) if ph else {}
            rows.append({"train_domain": di, "test_domain": dj, "horizon": next(iter(ph), horizon), **row})
    return rows, domains, info


def heatmap(rows: list[dict[str, Any]], domains: list[str], metric: str, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    M = np.full((len(domains), len(domains)), np.nan)
    for r in rows:
        v = r.get(metric)
        if v is not None:
            M[domains.index(r["train_domain"]), domains.index(r["test_domain"])] = v
    fig, ax = plt.subplots(figsize=(1.6 * len(domains) + 2, 1.4 * len(domains) + 1.5))
    im = ax.imshow(
        M,
        cmap="viridis",
        vmin=np.nanmin(M) if np.isfinite(M).any() else 0,
        vmax=np.nanmax(M) if np.isfinite(M).any() else 1,
    )
    for i in range(len(domains)):
        for j in range(len(domains)):
            if math.isfinite(M[i, j]):
                ax.text(
                    j,
                    i,
                    f"{M[i, j]:.3f}",
                    ha="center",
                    va="center",
                    color="w" if M[i, j] < np.nanmean(M) else "k",
                )
    ax.set_xticks(range(len(domains)), domains, rotation=30)
    ax.set_yticks(range(len(domains)), domains)
    ax.set_xlabel("test domain")
    ax.set_ylabel("train domain")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
