"""``moesim calibrate``: does the simulator agree with this machine, and where not, why?

For every scenario x grid point: simulate with this device's measured profile, run the same
configuration live (LiveExecutor, median of ``repeats`` runs), and compare:

- TPOT, signed error of the simulation against the live run at mean / p50 / p90 / p99
  (``(sim - live) / live``), stall time, bytes moved;
- the decision sequences (the policy core's logs): present / miss, prefetch issue and eviction
  sequences do not depend on time, so they must be IDENTICAL; a difference is a bug;
- timing classifications, which do depend on time and are reported as agreement figures: hit vs
  late hit (per decode step), wasted vs cancelled prefetches.

Two simulations are compared with each live run: ``sim``, the op tables alone (kernels and copies,
``CostModel(loop_overhead=False)``), and ``sim+loop``, the simulator as shipped: the same plus the
live loop's own measured costs (profile ops ``layer_overhead_pre_gate`` / ``layer_overhead_post_gate``,
see moesim/profiling/overhead.py), which ``CostModel`` adds before the gate and after it.

Every live repeat runs alone: the previous repeat's executor and its expert store are released
first. The noise each configuration's repeats ran under is recorded (moesim/experiments/noise.py):
the spread between repeats, the load average, other processes' CPU time on this process's cores,
and the compute thread's run-queue wait. A configuration is *noisy* when its repeats disagree by
more than the |TPOT error| reported for it; ``max_noise`` refuses the whole result instead.

Output (written atomically into one directory): report.md, calibration.csv (one row per config),
tpot.png, tpot_error.png, tpot_cdf.png, profile.yaml, provenance.json.
"""

from __future__ import annotations

import gc
import itertools
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from moesim.errors import fail
from moesim.experiments import noise as noise_mod
from moesim.experiments import pipeline
from moesim.experiments.cache import RunCache
from moesim.experiments.run import Prepared
from moesim.experiments.scenario import load_scenario, parse_override
from moesim.hardware.costs import CostModel
from moesim.io import atomic_dir, dumps_json
from moesim.metrics.result import RunResult

Pct = Literal["mean", "p50", "p90", "p99"]  # the keys of a summary's latency percentiles
PCTS: tuple[Pct, ...] = ("mean", "p50", "p90", "p99")
LOOP_OPS = ("layer_overhead_pre_gate", "layer_overhead_post_gate")


def simulate(p: Prepared, costs: CostModel, record: bool = True) -> RunResult:
    """The pipeline's simulation with a given cost model, static batches (as the live runs)."""
    return pipeline.simulate(
        p, costs=costs, executor_name="sim (op tables only)", batching=False, record=record
    )


# -- configurations -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    scenario: Path
    overrides: tuple[str, ...]  # the grid point's --set overrides

    @property
    def label(self) -> str:
        parts = [self.scenario.stem] + [o.split(".")[-1] for o in self.overrides]
        return " ".join(parts)


def parse_grid(grid: list[str]) -> list[tuple[str, list[str]]]:
    axes = []
    for text in grid:
        key, value = parse_override(text)
        raw = text.partition("=")[2]
        vals = [v.strip() for v in raw.split(",") if v.strip()]
        if not key or not vals:
            fail(f"--grid {text!r}: expected key=v1,v2,... e.g. --grid cache.capacity=16,32")
        axes.append((key, vals))
    return axes


def expand(scenarios: list[str], grid: list[str]) -> list[Config]:
    if not scenarios:
        fail("calibrate: give at least one scenario YAML")
    axes = parse_grid(grid)
    combos = list(itertools.product(*[[f"{k}={v}" for v in vals] for k, vals in axes])) or [()]
    out: list[Config] = []
    for sc in scenarios:
        path = Path(sc)
        if not path.is_file():
            fail(f"{sc}: scenario file not found")
        out.extend(Config(path, tuple(c)) for c in combos)
    return out


# -- the profile ------------------------------------------------------------------------------------
def profile_settings_for(prepared: list[Prepared], base=None):
    """Grids covering every shape the configurations will ask for, so nothing is extrapolated."""
    from moesim.experiments.live import max_context
    from moesim.profiling.profiler import ProfileSettings

    s = base or ProfileSettings()
    B = max(p.scenario.batch for p in prepared)
    lo = min(p.prompt_tokens for p in prepared)
    hi = max(max_context(p) for p in prepared)
    contexts = sorted({max(1, lo), max(1, (lo + hi) // 2), max(2, hi)})
    s.batches = tuple(range(1, B + 1))
    s.tokens = tuple(range(1, B + 1)) if B > 1 else (1, 2)
    s.contexts = tuple(contexts) if len(contexts) > 1 else (contexts[0], contexts[0] + 1)
    return s


# -- one configuration ----------------------------------------------------------------------------
@dataclass
class ConfigRun:
    config: Config
    prepared: Prepared
    sim: RunResult
    sim_loop: RunResult | None
    live: RunResult
    live_means: list[float]
    diagnostics: dict[str, float] = field(default_factory=dict)
    noise: noise_mod.Noise | None = None  # what else the machine did during the live repeats


def first_difference(a: list[tuple] | None, b: list[tuple] | None) -> str | None:
    if a is None or b is None:
        return "decision log missing"
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"record {i}: sim {x} vs live {y}"
    if len(a) != len(b):
        return f"lengths differ: sim {len(a)} vs live {len(b)} records"
    return None


def _diagnostics(ex, profile, tokens: pd.DataFrame) -> dict[str, float]:
    """What the live loop did, against what the tables say (record_steps runs)."""
    if ex.dev.is_cuda:
        return _cuda_diagnostics(ex, profile, tokens)
    from moesim.profiling.overhead import _pred_post, _pred_pre

    out: dict[str, float] = {}
    trs = [t for t in ex.transfers if t.end >= 0 and t.start >= 0]
    if trs:
        out["live_copy_ms_median"] = float(np.median([t.end - t.start for t in trs]))
        out["live_copy_wait_ms_median"] = float(np.median([t.start - t.issue for t in trs]))
    pre, post = [], []
    for r in ex.steps:
        if r.step == 0 or r.misses or not r.copies_idle or r.stall > 0 or r.batch > 64:
            continue
        pre.append((r.t_gate - r.prev_end) - _pred_pre(profile, r.batch, r.context))
        post.append((r.t_end - r.t_gate - r.stall) - _pred_post(profile, r.batch, r.counts))
    if pre:
        out["live_loop_pre_gate_ms_median"] = float(np.median(pre))
        out["live_loop_post_gate_ms_median"] = float(np.median(post))
        out["all_hit_steps"] = len(pre)
    busy = [
        (r.t_end - r.t_gate - r.stall) - _pred_post(profile, r.batch, r.counts)
        for r in ex.steps
        if r.step > 0 and not r.copies_idle and r.batch <= 64
    ]
    if busy:
        out["live_post_gate_residual_copies_in_flight_ms_median"] = float(np.median(busy))
    return out


def _cuda_diagnostics(ex, profile, tokens: pd.DataFrame) -> dict[str, float]:
    """CUDA: the host's step timestamps say when work was queued, not when the GPU ran it, so
    only device-side times are used: each copy from its start / end events (its wait from its
    issue to its start event, on the executor's clock) and the loop's cost from each all-hit
    token's latency (its end events) less its kernels, per layer-step (not separable around the
    gate, as in the profiler's own CUDA measurement)."""
    marks = ex._marks  # maps the events onto the host clock the issue times are on
    evts = [t for t in ex.transfers if t.start_evt is not None and t.end_evt is not None]
    out: dict[str, float] = {}
    if evts:
        out["live_copy_ms_median"] = float(np.median([t.start_evt.elapsed_time(t.end_evt) for t in evts]))
        out["live_copy_wait_ms_median"] = float(np.median([marks.value(t.start_evt) - t.issue for t in evts]))
    per_step = token_loop_residuals(ex.steps, tokens, profile, ex.model.num_moe_layers)
    if len(per_step):
        out["live_loop_step_ms_median"] = float(np.median(per_step))
        out["all_hit_tokens"] = len(per_step)
    return out


def token_loop_residuals(steps, tokens: pd.DataFrame, profile, L: int) -> np.ndarray:
    """Per layer-step: (token latency - its kernels from the profile) / L, for the decode tokens
    (after a group's first) whose every layer-step hit with no copy in flight. A group's decode
    layer-steps are its last ``tokens x L`` records (the prompt pass, if replayed, comes first)."""
    from moesim.profiling.overhead import _pred_post, _pred_pre

    by_group: dict[int, list] = {}
    for r in steps:
        by_group.setdefault(r.group, []).append(r)
    out = []
    for g, rows in tokens.groupby("group", sort=False):
        recs = sorted(by_group.get(int(g), []), key=lambda r: r.step)
        first = len(recs) - len(rows) * L
        if first < 0:
            continue
        for t, lat in zip(rows["step"].to_numpy(), rows["tpot_ms"].to_numpy()):
            block = recs[first + int(t) * L : first + (int(t) + 1) * L]
            if t == 0 or any(r.misses or not r.copies_idle or r.batch > 64 for r in block):
                continue
            pred = sum(
                _pred_pre(profile, r.batch, r.context) + _pred_post(profile, r.batch, r.counts) for r in block
            )
            out.append((float(lat) - pred) / L)
    return np.asarray(out)


def run_config(
    cfg: Config,
    profile_path: Path,
    sets: list[str],
    layers: int | None,
    options,
    repeats: int,
    log: Callable[[str], None],
    cache: RunCache | None = None,
) -> ConfigRun:
    from moesim.experiments.live import cut_layers, run_live

    sc = load_scenario(cfg.scenario, [*sets, *cfg.overrides, f"hardware.profile={profile_path}"])
    p = cut_layers(pipeline.load(sc, cache), layers)
    sim = simulate(p, CostModel(p.profile, p.model, sc.hardware.copy_engines, loop_overhead=False))
    has_loop = all(p.profile.has(op) for op in LOOP_OPS)
    sim_loop = pipeline.simulate(p, record=True) if has_loop else None
    kept: list[tuple[RunResult, Prepared, dict[str, float]]] = []
    parts = []
    for i in range(repeats):
        log(f"  live run {i + 1}/{repeats}")
        before = noise_mod.sample()
        lr = run_live(p, options, record=True)
        parts.append(noise_mod.between(before, noise_mod.sample()))
        kept.append((lr.result, lr.prepared, _diagnostics(lr.executor, p.profile, lr.result.tokens)))
        del lr  # the executor holds this repeat's expert store (pinned host memory on CUDA)
        release_device_memory(options.device)
    means = [r.summary["latency"]["tpot_ms"]["mean"] for r, _, _ in kept]
    result, prepared, diag = kept[int(np.argsort(means)[len(means) // 2])]  # the median run, whole
    return ConfigRun(cfg, prepared, sim, sim_loop, result, means, diag, noise_mod.combine(parts))


def release_device_memory(device: str) -> None:
    """Free a finished live run's stores before the next one allocates its own: the cycles the
    executor's threads leave, then (CUDA) the caching allocators' device and pinned host blocks."""
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        host_empty = getattr(torch._C, "_host_emptyCache", None)  # pinned blocks: newer torch only
        if host_empty is not None:
            host_empty()


# -- comparison -------------------------------------------------------------------------------------
def _err(sim: float, live: float) -> float:
    return (sim - live) / live * 100.0 if live else float("nan")


def _late_agreement(sim: RunResult, live: RunResult) -> float:
    a, b = sim.tokens["late_hits"].to_numpy(), live.tokens["late_hits"].to_numpy()
    if len(a) != len(b) or not len(a):
        return float("nan")
    return float((a == b).mean())


def compare_row(cr: ConfigRun) -> dict[str, Any]:
    live, sim = cr.live.summary, cr.sim.summary
    row: dict[str, Any] = {
        "config": cr.config.label,
        "scenario": str(cr.config.scenario),
        "overrides": " ".join(cr.config.overrides),
        "decode_steps": live["counts"]["decode_steps"],
        "layer_steps": live["counts"]["layer_steps"],
    }
    variants = [("sim", sim)]
    if cr.sim_loop is not None:
        variants.append(("simloop", cr.sim_loop.summary))
    for pct in PCTS:
        row[f"live_tpot_{pct}_ms"] = live["latency"]["tpot_ms"][pct]
    for name, s in variants:
        for pct in PCTS:
            row[f"{name}_tpot_{pct}_ms"] = s["latency"]["tpot_ms"][pct]
            row[f"{name}_err_{pct}_pct"] = _err(s["latency"]["tpot_ms"][pct], live["latency"]["tpot_ms"][pct])
    row["live_stall_ms"] = live["latency"]["stall_ms_total"]
    for name, s in variants:
        row[f"{name}_stall_ms"] = s["latency"]["stall_ms_total"]
        row[f"{name}_stall_err_ms"] = s["latency"]["stall_ms_total"] - live["latency"]["stall_ms_total"]
    row["live_compute_only_tpot_ms"] = live["latency"]["compute_only_tpot_ms"]
    row["sim_compute_only_tpot_ms"] = sim["latency"]["compute_only_tpot_ms"]
    row["live_bytes_h2d"] = live["traffic"]["bytes_h2d"]
    row["sim_bytes_h2d"] = sim["traffic"]["bytes_h2d"]
    diff = first_difference(cr.sim.decisions, cr.live.decisions)
    row["decisions_identical"] = diff is None
    row["decision_records"] = len(cr.live.decisions or [])
    row["first_decision_difference"] = diff or ""
    row["live_late_hits"] = live["counts"]["late_hits"]
    row["sim_late_hits"] = sim["counts"]["late_hits"]
    row["late_hit_step_agreement"] = _late_agreement(cr.sim, cr.live)
    for what in ("wasted", "cancelled"):
        row[f"live_prefetch_{what}"] = live["prefetch"][what]
        row[f"sim_prefetch_{what}"] = sim["prefetch"][what]
    m = np.asarray(cr.live_means)
    row["live_repeats"] = len(m)
    row["live_repeat_spread_pct"] = (
        float((m.max() - m.min()) / np.median(m) * 100) if len(m) > 1 else math.nan
    )
    if cr.noise is not None:
        row.update(cr.noise.row())
    row["reported_abs_err_pct"] = abs(
        row["simloop_err_mean_pct" if cr.sim_loop is not None else "sim_err_mean_pct"]
    )
    row["noise_verdict"] = noise_verdict(row["live_repeat_spread_pct"], row["reported_abs_err_pct"])
    row.update(cr.diagnostics)
    return row


def noise_verdict(spread_pct: float, abs_err_pct: float) -> str:
    """``noisy`` when the live runs disagree with each other by more than the error reported
    against them: the error is then below what this machine could resolve."""
    if math.isnan(spread_pct) or math.isnan(abs_err_pct):
        return "unmeasured"  # one repeat has no spread
    return "noisy" if spread_pct > abs_err_pct else "ok"


def headline(df: pd.DataFrame) -> dict[str, Any]:
    out: dict[str, Any] = {"configs": len(df)}
    for name in ("sim", "simloop"):
        if f"{name}_err_mean_pct" not in df:
            continue
        for pct in PCTS:
            out[f"{name}_median_abs_err_{pct}_pct"] = float(df[f"{name}_err_{pct}_pct"].abs().median())
        out[f"{name}_max_abs_err_mean_pct"] = float(df[f"{name}_err_mean_pct"].abs().max())
    out["decisions_identical"] = bool(df["decisions_identical"].all())
    key = "simloop" if "simloop_err_mean_pct" in df else "sim"
    spread = df["live_repeat_spread_pct"]
    out["median_repeat_spread_pct"] = float(spread.median())
    out["max_repeat_spread_pct"] = float(spread.max())
    out["noisy_configs"] = int((df["noise_verdict"] == "noisy").sum())
    out["noise_verdict"] = noise_verdict(
        out["median_repeat_spread_pct"], out[f"{key}_median_abs_err_mean_pct"]
    )
    return out


# -- plots --------------------------------------------------------------------------------------------
def _plots(tmp: Path, df: pd.DataFrame, runs: list[ConfigRun]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{i}" for i in range(len(df))]
    x = np.arange(len(df))
    has_loop = "simloop_tpot_mean_ms" in df
    # 1. mean TPOT with p99 markers
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(df) + 2), 4))
    series = [("live", "live", "tab:blue"), ("sim", "sim", "tab:orange")]
    if has_loop:
        series.append(("simloop", "sim+loop", "tab:green"))
    w = 0.8 / len(series)
    for j, (col, name, color) in enumerate(series):
        ax.bar(
            x + (j - (len(series) - 1) / 2) * w,
            df[f"{col}_tpot_mean_ms"],
            w,
            label=f"{name} mean",
            color=color,
        )
        ax.plot(
            x + (j - (len(series) - 1) / 2) * w,
            df[f"{col}_tpot_p99_ms"],
            "v",
            color=color,
            markeredgecolor="k",
        )
    ax.set_xticks(x, labels)
    ax.set_xlabel("configuration (see the table in report.md)")
    ax.set_ylabel("TPOT ms (bars: mean, triangles: p99)")
    ax.legend(fontsize=8)
    ax.set_title("TPOT: live run vs simulation")
    fig.tight_layout()
    fig.savefig(tmp / "tpot.png", dpi=120)
    plt.close(fig)
    # 2. signed errors
    fig, axes = plt.subplots(1, 2 if has_loop else 1, figsize=(12 if has_loop else 7, 4), squeeze=False)
    for ax, (col, name) in zip(axes[0], [("sim", "sim"), ("simloop", "sim+loop")]):
        for j, pct in enumerate(PCTS):
            ax.bar(x + (j - 1.5) * 0.2, df[f"{col}_err_{pct}_pct"], 0.2, label=pct)
        ax.axhline(0, color="k", lw=0.8)
        for lim in (-15, 15):
            ax.axhline(lim, color="grey", lw=0.6, ls="--")
        ax.set_xticks(x, labels)
        ax.set_xlabel("configuration")
        ax.set_ylabel("signed TPOT error % ((sim - live) / live)")
        ax.set_title(name)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(tmp / "tpot_error.png", dpi=120)
    plt.close(fig)
    # 3. per-token TPOT distributions
    n = min(len(runs), 12)
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for i, cr in enumerate(runs[:n]):
        ax = axes[i // cols][i % cols]
        for res, name, color in [(cr.live, "live", "tab:blue"), (cr.sim, "sim", "tab:orange")] + (
            [(cr.sim_loop, "sim+loop", "tab:green")] if cr.sim_loop is not None else []
        ):
            v = np.sort(res.tokens["tpot_ms"].to_numpy())
            ax.plot(v, np.linspace(0, 1, len(v)), label=name, color=color)
        ax.set_title(f"{i}", fontsize=9)
        ax.set_xlabel("TPOT ms", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    for j in range(n, rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.suptitle("per-token TPOT, empirical CDF")
    fig.tight_layout()
    fig.savefig(tmp / "tpot_cdf.png", dpi=110)
    plt.close(fig)


# -- the report ------------------------------------------------------------------------------------
def _fmt(x: Any, nd: int = 2) -> str:
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "NO"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    if isinstance(x, (float, np.floating)):
        return "n/a" if np.isnan(x) else f"{x:.{nd}f}"
    return str(x)


def _op_line(profile, op: str, **axes) -> str:
    where = " ".join(f"{k}={v:,}" if k == "bytes" else f"{k}={v:g}" for k, v in axes.items())
    if not profile.has(op):
        return f"| {op} {where} | (not measured) |"
    return f"| {op} {where} | {profile.time_ms(op, **axes):.4f} |"


def _derived(df: pd.DataFrame, profile, m) -> list[str]:
    """Ratios that explain the errors, from this run's profile and live diagnostics."""
    out = []

    def ratio(a: str, b: str, **axes) -> float | None:
        if profile.has(a) and profile.has(b):
            den = profile.time_ms(b, **axes)
            return profile.time_ms(a, **axes) / den if den else None
        return None

    r = ratio("h2d_pinned_during_compute", "h2d_pinned", bytes=m.expert_bytes)
    if r is not None:
        out.append(
            f"- a copy while the compute thread runs expert FFNs takes x{r:.2f} its time alone (profile)"
        )
    r = ratio("expert_ffn_during_copies", "expert_ffn", tokens=1)
    if r is not None:
        out.append(f"- an expert FFN while copies stream takes x{r:.2f} its time alone (profile)")
    if "live_copy_ms_median" in df and profile.has("h2d_pinned"):
        h2d = profile.time_ms("h2d_pinned", bytes=m.expert_bytes)
        out.append(
            f"- copies inside the live runs took x{df['live_copy_ms_median'].median() / h2d:.2f} the profile's "
            f"h2d_pinned (median over configurations; max x{df['live_copy_ms_median'].max() / h2d:.2f})"
        )
    stall = df[df["sim_stall_ms"] > 1.0]
    if len(stall):
        out.append(
            f"- live / simulated stall time: median x{(stall['live_stall_ms'] / stall['sim_stall_ms']).median():.1f} "
            f"over the {len(stall)} configurations that stall more than 1 ms in simulation"
        )
    share = (df["live_stall_ms"] / (df["live_tpot_mean_ms"] * df["decode_steps"])).fillna(0) * 100
    out.append(f"- stall share of live time: median {share.median():.1f}%, max {share.max():.1f}%")
    return ["Derived:", "", *out, ""] if out else []


def render_report(
    df: pd.DataFrame, head: dict[str, Any], prov: dict[str, Any], runs: list[ConfigRun], profile
) -> str:
    has_loop = "simloop_err_mean_pct" in df
    m = runs[0].prepared.model
    lines = [
        f"# Calibration: simulator vs live run on {prov['device_info']['device']}",
        "",
        f"Generated by `{prov['command']}` on {prov['device_info']['date']} "
        f"(moesim {prov['moesim_version']}, torch {prov['device_info']['torch']}, "
        f"Python {prov['device_info']['python']}, host {prov['device_info']['host']}, "
        f"{prov['device_info']['platform']}).",
        "",
        "## Headline",
        "",
        f"- Configurations: {head['configs']}; model `{m.name}` ({m.num_moe_layers} MoE layers replayed, "
        f"E={m.num_experts}, k={m.top_k}, {m.expert_bytes / 2**20:.2f} MiB per expert, {m.dtype}).",
        f"- **Median |TPOT error| of the simulator from the op tables alone (`sim`): {head['sim_median_abs_err_mean_pct']:.1f}% "
        f"(mean TPOT)**, {head['sim_median_abs_err_p50_pct']:.1f}% (p50), "
        f"{head['sim_median_abs_err_p90_pct']:.1f}% (p90), {head['sim_median_abs_err_p99_pct']:.1f}% (p99); "
        f"worst config {head['sim_max_abs_err_mean_pct']:.1f}%.",
    ]
    if has_loop:
        lines.append(
            f"- **The simulator as shipped, with the live loop's measured overhead (`sim+loop`): {head['simloop_median_abs_err_mean_pct']:.1f}% "
            f"(mean TPOT)**, {head['simloop_median_abs_err_p50_pct']:.1f}% (p50), "
            f"{head['simloop_median_abs_err_p90_pct']:.1f}% (p90), "
            f"{head['simloop_median_abs_err_p99_pct']:.1f}% (p99); worst config "
            f"{head['simloop_max_abs_err_mean_pct']:.1f}%."
        )
    lines += [
        f"- Decision sequences identical in every configuration: **{_fmt(head['decisions_identical'])}** "
        "(present/miss, prefetch issue and eviction records of the policy core's log).",
        f"- Live runs per configuration: {int(df['live_repeats'].iloc[0])} (the median run by mean TPOT is "
        f"compared); spread between repeats ((max - min) / median of their mean TPOTs): median "
        f"{_fmt(head['median_repeat_spread_pct'], 1)}%, max {_fmt(head['max_repeat_spread_pct'], 1)}%.",
        f"- **Noise verdict: {head['noise_verdict']}** ({head['noisy_configs']} of {head['configs']} "
        "configurations noisy: their repeats disagree by more than the error reported for them; "
        "*unmeasured* with one repeat). Other processes took "
        f"{_fmt(head.get('other_cpu_pct', math.nan), 1)}% of this process's cores during the live runs "
        f"({_fmt(head.get('other_cpu_s', math.nan), 1)} CPU s); the compute thread waited "
        f"{_fmt(head.get('compute_thread_wait_ms', math.nan), 0)} ms for a core.",
        f"- Load average (1 min) before / after: {prov['loadavg_before'][0]:.2f} / {prov['loadavg_after'][0]:.2f} "
        f"on {prov['cpu_count']} CPUs.",
        "",
        "Signed error = (sim - live) / live: negative means the simulator is optimistic.",
        "",
        "![TPOT](tpot.png)",
        "",
        "![signed TPOT errors](tpot_error.png)",
        "",
        "## Per configuration",
        "",
    ]
    hdr = ["#", "config", "live mean", "sim mean", "err mean %", "err p50 %", "err p90 %", "err p99 %"]
    if has_loop:
        hdr += ["sim+loop mean", "+loop err mean %", "+loop err p99 %"]
    hdr += ["stall live / sim ms", "MiB moved live / sim", "decisions", "late hits live / sim", "late agree"]
    hdr += ["repeat spread %", "other CPU %", "noise"]
    lines.append("| " + " | ".join(hdr) + " |")
    lines.append("|" + "---|" * len(hdr))
    for i, r in df.iterrows():
        cells = [
            str(i),
            r["config"],
            _fmt(r["live_tpot_mean_ms"], 3),
            _fmt(r["sim_tpot_mean_ms"], 3),
            _fmt(r["sim_err_mean_pct"], 1),
            _fmt(r["sim_err_p50_pct"], 1),
            _fmt(r["sim_err_p90_pct"], 1),
            _fmt(r["sim_err_p99_pct"], 1),
        ]
        if has_loop:
            cells += [
                _fmt(r["simloop_tpot_mean_ms"], 3),
                _fmt(r["simloop_err_mean_pct"], 1),
                _fmt(r["simloop_err_p99_pct"], 1),
            ]
        cells += [
            f"{r['live_stall_ms']:.1f} / {r['sim_stall_ms']:.1f}",
            f"{r['live_bytes_h2d'] / 2**20:.0f} / {r['sim_bytes_h2d'] / 2**20:.0f}",
            "identical" if r["decisions_identical"] else f"DIFFER: {r['first_decision_difference']}",
            f"{int(r['live_late_hits'])} / {int(r['sim_late_hits'])}",
            _fmt(r["late_hit_step_agreement"], 2),
            _fmt(r["live_repeat_spread_pct"], 1),
            _fmt(r.get("other_cpu_pct", math.nan), 1),
            r["noise_verdict"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "![per-token TPOT CDFs](tpot_cdf.png)",
        "",
        "Per-config numbers (all percentiles, compute-only TPOT, wasted / cancelled prefetches, live "
        "diagnostics) are in `calibration.csv`.",
        "",
        "## Decisions and timing classifications",
        "",
        "Residency changes when a copy is issued, so what is present or missed, which prefetches are issued "
        "and which experts are evicted do not depend on time: both executors drive the same `PolicyCore` in "
        "the same call order and their logs are compared record by record (column *decisions*). Whether a "
        "present expert had arrived when the gate decided (hit) or was still in flight (late hit), and "
        "whether an evicted prefetch had started copying (wasted) or not (cancelled), depend on time: "
        "*late agree* is the fraction of decode steps with the same number of late hits in both runs, and "
        "the wasted / cancelled counts of both are in the CSV. Bytes moved can differ only through "
        "cancellations (a cancelled prefetch moves nothing).",
        "",
        "## The profile",
        "",
        f"Measured by `moesim profile` on this device ({profile.name}; `profile.yaml` here, with p10/p90 "
        "spreads in each table's provenance). Key values (ms):",
        "",
        "| op | ms |",
        "|---|---|",
        _op_line(profile, "attention", batch=1, context=runs[0].prepared.prompt_tokens),
        _op_line(profile, "norm", tokens=1),
        _op_line(profile, "gate", tokens=1),
        _op_line(profile, "expert_ffn", tokens=1),
        _op_line(profile, "h2d_pinned", bytes=m.expert_bytes),
        _op_line(profile, "layer_overhead_pre_gate", batch=1),
        _op_line(profile, "layer_overhead_post_gate", batch=1),
        _op_line(profile, "copy_handoff"),
        _op_line(profile, "h2d_pinned_during_compute", bytes=m.expert_bytes),
        _op_line(profile, "expert_ffn_during_copies", tokens=1),
        "",
    ]
    diag_cols = [
        c
        for c in df.columns
        if c.startswith("live_copy") or c.startswith("live_loop") or c.startswith("live_post")
    ]
    if diag_cols:
        lines += [
            "## Live diagnostics (medians over the configurations)",
            "",
            "| figure | ms |",
            "|---|---|",
        ]
        for c in diag_cols:
            lines.append(f"| {c} | {df[c].median():.4f} |")
        lines.append("")
    lines += _derived(df, profile, m)
    lines += prov.get("findings", [])
    lines += [
        "",
        "## Provenance",
        "",
        "```json",
        dumps_json({k: v for k, v in prov.items() if k != "findings"}).strip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def _refuse_if_noisy(df: pd.DataFrame, max_noise: float | None) -> None:
    if max_noise is None:
        return
    bad = df[df["live_repeat_spread_pct"] > max_noise]
    if len(bad):
        worst = bad["live_repeat_spread_pct"].idxmax()
        fail(
            f"--max-noise {max_noise:g}: {len(bad)} of {len(df)} configurations' live repeats disagree by more "
            f"(worst: {df.at[worst, 'config']!r}, {df.at[worst, 'live_repeat_spread_pct']:.1f}%, other processes "
            f"{df.at[worst, 'other_cpu_pct']:.1f}% of the cores); nothing written: rerun on a quieter machine, "
            "with more --repeats, or a higher --max-noise"
        )


@dataclass
class CalibrateOptions:
    device: str = "cpu"
    profile: str | None = None
    grid: list[str] = field(default_factory=list)
    sets: list[str] = field(default_factory=list)
    layers: int | None = None
    repeats: int = 3
    threads: int | None = None
    profile_repeats: int | None = None
    keep_runs: bool = False
    realtime: bool = False  # SCHED_FIFO for profiling and live threads (shared machines)
    max_noise: float | None = None  # refuse (write nothing) when a config's repeat spread exceeds it, %
    findings: list[str] = field(default_factory=list)  # Markdown appended to the report
    command: str = "moesim calibrate"


def calibrate(scenarios: list[str], out: str | Path, opts: CalibrateOptions, log=None) -> dict[str, Any]:
    """Profile (unless given), simulate, run live, compare; write the report into ``out``."""
    from moesim import __version__
    from moesim.engine.live.device import device_description, resolve_device
    from moesim.engine.live_executor import LiveOptions, check_live_model
    from moesim.experiments.live import cut_layers
    from moesim.hardware import load_profile
    from moesim.host import usable_cores

    log = log or (lambda msg: None)
    if opts.repeats < 1:
        fail(f"--repeats: must be >= 1, got {opts.repeats}")
    if opts.max_noise is not None and (opts.repeats < 2 or not opts.max_noise >= 0):
        fail(
            f"--max-noise {opts.max_noise}: needs --repeats >= 2 (the spread between repeats) and a percentage >= 0"
        )
    configs = expand(scenarios, opts.grid)
    dev = resolve_device(opts.device, opts.threads)
    load0 = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    t0 = time.perf_counter()
    cache = RunCache()  # the configurations share their traces and baselines
    # check every configuration before measuring anything (one-line errors, nothing written)
    probe = []
    for cfg in configs:
        sc = load_scenario(cfg.scenario, [*opts.sets, *cfg.overrides])
        p = cut_layers(pipeline.load(sc, cache), opts.layers)
        check_live_model(p.model)
        probe.append(p)
    model = probe[0].model
    if any(p.model.name != model.name for p in probe):
        fail("calibrate: all scenarios must use the same model (one profile serves them all)")
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix=".moesim-calibrate-"))
    try:
        if opts.profile is not None:
            profile_path = Path(opts.profile)
            profile = load_profile(str(profile_path), model)
        else:
            from moesim.profiling.profiler import Profiler

            settings = profile_settings_for(probe)
            settings.threads = opts.threads
            settings.realtime = opts.realtime
            if opts.profile_repeats is not None:
                settings.repeats = opts.profile_repeats
            log(f"profiling {model.name} on {opts.device}")
            profile = Profiler(model, opts.device, settings, log=lambda m: None).run()
            profile_path = workdir / "profile.yaml"
            profile.save(profile_path)
        live_opts = LiveOptions(
            device=opts.device, threads=opts.threads, record_steps=True, realtime=opts.realtime
        )
        runs = []
        for i, cfg in enumerate(configs):
            log(f"[{i + 1}/{len(configs)}] {cfg.label}")
            runs.append(
                run_config(cfg, profile_path, opts.sets, opts.layers, live_opts, opts.repeats, log, cache)
            )
        df = pd.DataFrame([compare_row(cr) for cr in runs])
        head = headline(df)
        noises = [cr.noise for cr in runs if cr.noise is not None]
        if noises:
            head.update(noise_mod.combine(noises).row())
            del head["load1_before"], head["load1_after"]  # the provenance has the whole run's
        _refuse_if_noisy(df, opts.max_noise)
        load1 = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
        prov = {
            "moesim_version": __version__,
            "command": opts.command,
            "device_info": device_description(dev),
            "cpu_count": usable_cores(),
            "loadavg_before": [round(x, 2) for x in load0],
            "loadavg_after": [round(x, 2) for x in load1],
            "profile": profile.name,
            "profile_sha256": profile.fingerprint(),
            "profile_given": opts.profile,
            "layers": opts.layers,
            "repeats": opts.repeats,
            "live_options": live_opts.describe(),
            "grid": opts.grid,
            "sets": opts.sets,
            "scenarios": [str(s) for s in scenarios],
            "trace_sha256": sorted({cr.live.summary["provenance"]["trace_sha256"] for cr in runs}),
            "seconds": round(time.perf_counter() - t0, 1),
            "findings": opts.findings,
        }
        report = render_report(df, head, prov, runs, profile)

        def build(tmp: Path) -> None:
            umask = os.umask(0)
            os.umask(umask)
            tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; a report is ordinary data
            df.to_csv(tmp / "calibration.csv", index=False, float_format="%.6f", lineterminator="\n")
            (tmp / "report.md").write_text(report, encoding="utf-8")
            (tmp / "summary.json").write_text(
                dumps_json({"headline": head, "provenance": prov}), encoding="utf-8"
            )
            (tmp / "profile.yaml").write_text(profile.to_yaml(), encoding="utf-8")
            if opts.findings:  # kept beside the report, so a rerun can take it again (--findings)
                (tmp / "findings.md").write_text("\n".join(opts.findings) + "\n", encoding="utf-8")
            _plots(tmp, df, runs)
            if opts.keep_runs:
                for j, cr in enumerate(runs):
                    cr.sim.write(tmp / "runs" / f"{j:02d}-sim")
                    cr.live.write(tmp / "runs" / f"{j:02d}-live")
                    if cr.sim_loop is not None:
                        cr.sim_loop.write(tmp / "runs" / f"{j:02d}-simloop")

        atomic_dir(Path(out), build)
    finally:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return {"headline": head, "table": df, "out": str(out)}
