"""What a run's predictor was trained on, and the notes that keep a run from surprising its reader.

A learned predictor fitted on the trace it then replays is scored on its own training data. By
default a run of one fitted on the replayed trace (no ``predictor.fit_trace``, no model file)
trains on a seeded split of the trace's sequences and replays only the others; one loading a model
file from ``moesim predictor train`` replays only the sequences the file does not list as trained
on. ``predictor.replay_training: true`` replays everything (optimistic, and said so).

Notes are plain sentences kept in ``summary.json`` (``provenance.notes``) and printed with the
summary on the console: every optimistic setting, and what a run found out about its own plan
(a plan that cannot fit the cache, a predictor that never prefetched).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from moesim.errors import fail
from moesim.evaluation.splits import split_by_sequence
from moesim.policies.registries import PREDICTORS
from moesim.traces.trace import Trace

if TYPE_CHECKING:
    from moesim.experiments.run import Prepared
    from moesim.experiments.scenario import Scenario
    from moesim.metrics.summary import Summary

# The same split ``moesim predictor train`` and ``eval`` use by default.
TRAIN_FRACTION = 0.8
# Where ``moesim predictor train`` records its training sequences in a model file's info.
DIGESTS_KEY = "train_sequence_digests"

# Fitted on a training trace, but a static ranking kept as the project's default baseline: its
# optimism is printed, not held out (held out, the default scenario's results would change).
_NOT_HELD_OUT = frozenset({"popularity"})


def is_learned(name: str) -> bool:
    """A predictor that learns sequence-level patterns from a training trace (tables or networks)."""
    cls = PREDICTORS.get(name)
    if name in _NOT_HELD_OUT:
        return False
    fitted = any("training trace" in what for what in cls.observes)
    return bool(getattr(cls, "trainable", False) or fitted)


@dataclass
class ReplaySelection:
    """The replayed trace, the trace a fitted predictor trains on (None: the scenario's
    ``fit_trace`` or the replayed trace), and notes on what was chosen."""

    trace: Trace
    fit_trace: Trace | None = None
    notes: list[str] = field(default_factory=list)


def sequence_digests(trace: Trace) -> list[str]:
    """A short content hash of each sequence's decode routing: which sequences a model saw in
    training, recognisable in any trace file or selection that holds them."""
    off = np.asarray(trace.seq_offsets, dtype=np.int64)
    out = []
    for s in range(trace.num_sequences):
        rows = np.ascontiguousarray(trace.experts[off[s] : off[s + 1]], dtype=np.int32)
        out.append(hashlib.blake2b(rows.tobytes(), digest_size=8).hexdigest())
    return out


def _foreign_gates(path: str) -> bool:
    """A gate file exported from a model (next-gate): the model's own router, trained on no trace."""
    from pathlib import Path

    p = Path(path).expanduser()
    if p.suffix != ".safetensors" or not p.is_file():
        return False
    from safetensors import safe_open

    try:
        with safe_open(str(p), framework="np") as fh:
            return "moesim_config" not in (fh.metadata() or {})
    except Exception:  # not readable: the predictor reports it in one line when it loads the file
        return False


def _model_training(pc, path: str) -> list[str] | None:
    from moesim.policies.predictors._common import load_model_file

    _, config = load_model_file(path, pc.name)
    digests = (config.get("info") or {}).get(DIGESTS_KEY)
    return list(digests) if isinstance(digests, list) else None


def _replay_untrained(sc: Scenario, trace: Trace, path: str) -> ReplaySelection:
    """A model file that lists its training sequences: replay the others."""
    pc = sc.predictor
    trained = _model_training(pc, path)
    if trained is None:
        return ReplaySelection(
            trace,
            notes=[
                f"model file {path} does not list its training sequences (trained before moesim recorded "
                "them, or not by moesim predictor train): the run may replay sequences it was trained on"
            ],
        )
    seen = set(trained)
    keep = [i for i, d in enumerate(sequence_digests(trace)) if d not in seen]
    overlap = trace.num_sequences - len(keep)
    if overlap == 0:
        return ReplaySelection(trace)
    if pc.replay_training:
        note = f"{overlap} of the replayed sequences trained model file {path} (optimistic: predictor.replay_training=true)"
        return ReplaySelection(trace, notes=[note])
    if not keep:
        fail(
            f"predictor.params.model: {path} was trained on every sequence of the replayed trace; replay "
            "other sequences, or set predictor.replay_training=true (optimistic)"
        )
    note = f"replaying the {len(keep)} sequences model file {path} was not trained on (left out {overlap})"
    return ReplaySelection(trace.select(keep), notes=[note])


def select_replay(sc: Scenario, trace: Trace) -> ReplaySelection:
    """Hold out the training sequences of a learned predictor fitted on the replayed trace."""
    pc = sc.predictor
    model = pc.params.get("model")
    if model is None:
        model = pc.params.get("gates")  # next-gate's gate file
    if not is_learned(pc.name) or pc.fit_trace:
        return ReplaySelection(trace)
    if pc.name == "st-moe" and pc.params.get("warm_start") is False:  # learns online only
        return ReplaySelection(trace)
    if isinstance(model, str):
        if pc.params.get("gates") is not None and _foreign_gates(model):
            return ReplaySelection(trace)
        return _replay_untrained(sc, trace, model)
    if model is not None:  # an in-memory model (Python API): its training data is the caller's business
        return ReplaySelection(trace)
    if pc.replay_training:
        return ReplaySelection(
            trace,
            notes=[
                f"{pc.name} trained on the replayed trace and scored on its own training sequences "
                "(optimistic: predictor.replay_training=true)"
            ],
        )
    if trace.num_sequences < 2:
        fail(
            f"predictor.replay_training: {pc.name} trains on part of the trace and replays the rest, but "
            f"the trace has {trace.num_sequences} sequence; give predictor.fit_trace, or set "
            "predictor.replay_training=true to replay its training data (optimistic)"
        )
    split = split_by_sequence(trace, TRAIN_FRACTION, sc.seed)
    train, test = split.traces(trace)
    note = (
        f"{pc.name} trained on {len(split.train)} of the trace's {trace.num_sequences} sequences "
        f"({split.how}); replaying the other {len(split.test)} (predictor.replay_training=true replays all)"
    )
    return ReplaySelection(test, train, [note])


def prepared_notes(p: Prepared) -> list[str]:
    """Every note known before the run: the replay selection's, optimistic settings, plans that
    cannot fit."""
    m = p.model
    return [
        *p.notes,
        *setting_notes(p.scenario),
        *plan_notes(p.scenario, p.top_n, p.min_slots, m.num_experts, m.top_k),
    ]


def plan_notes(sc: Scenario, top_n: int, min_slots: int, num_experts: int, top_k: int) -> list[str]:
    """A plan that cannot fit the cache by construction: the experts the planner may take for the
    layer-steps in flight, beside the step being computed, exceed the slots they share."""
    pc = sc.predictor
    if not PREDICTORS.get(pc.name).predicts:
        return []
    n = min(num_experts, top_n + pc.overprovision)
    notes = []
    if pc.name == "popularity" and sc.batch > 1 and pc.params.get("per_sequence", True) is True:
        if n > top_k and (pc.top_n is not None or pc.overprovision):
            notes.append(
                f"popularity plans per sequence: {top_k} experts per layer-step, so predictor.top_n + "
                f"overprovision = {n} takes no more; set predictor.params.per_sequence=false to rank further"
            )
        n = min(n, top_k)  # one sequence's plan (policies/predictors/popularity.py)
    h = max(1, pc.horizon)
    if sc.cache.scope == "per-layer":
        if n > sc.cache.capacity:
            return [
                *notes,
                f"prefetch plan cannot fit the cache: up to {n} experts per prediction (predictor.top_n + "
                f"overprovision) for a per-layer cache of {sc.cache.capacity} slots; the surplus is never "
                "prefetched",
            ]
        return notes
    need = n * h + min_slots
    if need > sc.cache.capacity:
        return [
            *notes,
            f"prefetch plan cannot fit the cache: up to {n} experts per prediction x horizon {h} in flight "
            f"plus the {min_slots} of the step being computed = {need} > cache.capacity {sc.cache.capacity}; "
            "prefetches evict each other before use",
        ]
    return notes


def setting_notes(sc: Scenario) -> list[str]:
    """Optimistic settings known before the run."""
    pc = sc.predictor
    notes = []
    if pc.name == "popularity" and not pc.fit_trace:
        notes.append("popularity fitted on the replayed trace itself (optimistic; set predictor.fit_trace)")
    elif pc.fit_trace and (is_learned(pc.name) or pc.name == "popularity") and _same_file(sc, pc.fit_trace):
        notes.append(
            f"predictor.fit_trace is the replayed trace: {pc.name} is scored on its own training data (optimistic)"
        )
    return notes


def _same_file(sc: Scenario, fit_trace: str) -> bool:
    return sc.resolve_path(fit_trace).resolve() == sc.resolve_path(sc.trace.path).resolve()


def outcome_notes(sc: Scenario, summary: Summary, num_layers: int, min_slots: int) -> list[str]:
    """What the run found about its own plan: one that cannot fit the cache, or no prefetch at all."""
    notes = []
    pf, counts = summary["prefetch"], summary["counts"]
    slots = sc.cache.capacity * (num_layers if sc.cache.scope == "per-layer" else 1)
    steps = max(1, counts.get("decode_steps", 0))
    per_step = pf["issued"] / steps
    if PREDICTORS.get(sc.predictor.name).predicts and pf["issued"] == 0:
        why = "every expert it predicted was already resident, or it predicted none"
        if sc.predictor.name == "prev-token" and sc.cache.policy == "lru" and slots >= num_layers * min_slots:
            why = (
                f"it predicts the previous token's experts, which an LRU cache of {slots} slots (at least "
                f"L x k x batch = {num_layers * min_slots}) still holds; it can only help with a smaller "
                "cache or another cache policy"
            )
        notes.append(f"predictor {sc.predictor.name} issued no prefetch over the whole run: {why}")
    elif per_step > slots >= counts["accesses"] / steps:
        # The cache could hold a decode step's demand; the prefetches alone overflow it.
        notes.append(
            f"prefetch plan cannot fit the cache: {per_step:,.0f} experts prefetched per decode step on "
            f"average, more than the cache's {slots} slots (which hold a step's demand), so prefetches "
            "evict each other and every cached expert each step; lower predictor.top_n (default k x batch)"
        )
    return notes


def add_outcome_notes(p: Prepared, summary: Summary) -> None:
    """Append what the finished run found (``outcome_notes``) to ``summary``'s provenance notes."""
    found = outcome_notes(p.scenario, summary, p.model.num_moe_layers, p.min_slots)
    if found:
        prov = summary["provenance"]
        prov["notes"] = [*prov.get("notes", []), *found]
