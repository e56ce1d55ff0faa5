"""A live run of a prepared scenario through the run pipeline: the same ``RunResult`` schema as a
simulated run (``moesim.experiments.pipeline.simulate``), the same on-demand baseline.

``layers`` replays only the first N MoE layers (of the trace and the model) to fit a run into the
time or memory at hand; it is recorded in the provenance, and a calibration cuts the simulated run
the same way so both replay the same layer-steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from moesim.engine.live.warmup import prompt_shapes
from moesim.engine.live_executor import LiveExecutor, LiveOptions, check_live_model
from moesim.errors import fail
from moesim.experiments.pipeline import summarise
from moesim.experiments.run import Prepared, build_core, provenance
from moesim.metrics.result import RunResult


def cut_layers(p: Prepared, n: int | None) -> Prepared:
    """``p`` with only its first ``n`` MoE layers (the trace's routing and the model's layers)."""
    L = p.model.num_moe_layers
    if n is None or n == L:
        return p
    if n < 1 or n > L:
        fail(f"--layers {n}: the model has {L} MoE layers; give 1..{L}")
    tr = p.trace
    meta = replace(
        tr.meta,
        num_layers=n,
        layer_indices=tuple(tr.meta.layer_indices[:n]) if tr.meta.layer_indices else (),
    )
    trace = replace(
        tr,
        meta=meta,
        experts=np.ascontiguousarray(tr.experts[:, :n, :]),
        weights=None if tr.weights is None else np.ascontiguousarray(tr.weights[:, :n, :]),
        prefill_experts=None
        if tr.prefill_experts is None
        else np.ascontiguousarray(tr.prefill_experts[:, :n, :]),
        path=None,
    )
    idx = p.model.moe_layer_indices[:n]
    model = replace(p.model, moe_layer_indices=idx, num_layers=idx[-1] + 1)
    return replace(p, model=model, trace=trace)


def max_context(p: Prepared) -> int:
    lens = np.diff(np.asarray(p.trace.seq_offsets))
    return p.prompt_tokens + (int(lens.max()) if len(lens) else 0)


def max_prompt(p: Prepared) -> int:
    """Most prompt tokens in one group's prompt pass (0 when the prompt pass is not replayed)."""
    tr = p.trace
    if not p.scenario.prefill or tr.prefill_offsets is None:
        return 0
    lens = np.diff(np.asarray(tr.prefill_offsets))
    b = p.scenario.batch
    return int(max((lens[i : i + b].sum() for i in range(0, len(lens), b)), default=0))


@dataclass
class LiveRun:
    result: RunResult
    executor: LiveExecutor
    prepared: Prepared  # after the layer cut


def run_live(
    p: Prepared,
    options: LiveOptions,
    layers: int | None = None,
    progress=None,
    record: bool = False,
) -> LiveRun:
    check_live_model(p.model)
    if p.scenario.arrivals.process != "static":
        fail(
            f"arrivals.process: {p.scenario.arrivals.process!r}; the live executor replays static batches only "
            "(under continuous batching who shares a step depends on time); set arrivals.process=static"
        )
    full_layers = p.model.num_moe_layers
    p = cut_layers(p, layers)
    wall0 = time.perf_counter()
    core = build_core(p, record=record)
    ex = LiveExecutor(
        p.model,
        p.prompt_tokens,
        p.scenario.batch,
        max_context(p),
        options,
        progress,
        copy_engines=p.scenario.hardware.copy_engines,
        max_prompt=max_prompt(p),
        prompt_shapes=prompt_shapes(p.trace, p.scenario.batch) if max_prompt(p) else None,
    )
    stats = ex.run(core, p.groups())
    wall_live = time.perf_counter() - wall0
    from moesim.engine.live.device import device_description

    info = device_description(ex.dev)
    prov = provenance(p, "live", info["device"])
    prov["live"] = {
        **options.describe(),
        "layers_replayed": p.model.num_moe_layers,
        "layers_in_model": full_layers,
        "device_info": info,
        "expert_slots": ex.store.num_slots,
        "note": "times are measured wall-clock; the profile named above is not used by a live run",
    }
    result = summarise(p, core, stats, prov)
    result.wallclock = {
        "seconds_total": round(time.perf_counter() - wall0, 4),
        "seconds_setup": round(ex.setup_seconds, 4),
        "seconds_live": round(wall_live - ex.setup_seconds, 4),
    }
    return LiveRun(result, ex, p)
