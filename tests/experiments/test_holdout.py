"""Learned predictors replay only the sequences they did not train on; every optimistic setting and
every surprise a run finds about its own plan is a note, in summary.json and on the console."""

from __future__ import annotations

import numpy as np
import pytest

from moesim.cli.main import main
from moesim.errors import MoesimInputError
from moesim.evaluation.splits import split_by_sequence
from moesim.experiments.holdout import TRAIN_FRACTION, is_learned, select_replay
from moesim.experiments.run import prepare, run_prepared
from moesim.experiments.scenario import load_scenario
from moesim.traces.native import load_trace, trace_digest
from tests.experiments.conftest import REPO

TRACE = REPO / "traces" / "default.moetrace"


def _sc(*sets: str):
    return load_scenario(None, ["trace.max_sequences=8", "cache.capacity=256", *sets])


def _flat(console: str) -> str:
    """The console table's text with its borders and wrapping removed."""
    return " ".join(console.replace("│", " ").split())


def _notes(summary: dict) -> str:
    return " | ".join(summary["provenance"].get("notes", []))


@pytest.mark.parametrize(
    "name,learned",
    [
        ("markov", True),
        ("st-moe", True),
        ("moe-infinity", True),
        ("finemoe", True),
        ("prophet", True),
        ("pre-attention", True),
        ("next-gate", True),
        ("popularity", False),
        ("prev-token", False),
        ("oracle", False),
        ("none", False),
    ],
)
def test_which_predictors_are_held_out(name, learned):
    assert is_learned(name) is learned


def test_learned_predictor_replays_only_held_out_sequences():
    p = prepare(_sc("predictor.name=markov"))
    full = load_trace(TRACE).select(list(range(8)))
    split = split_by_sequence(full, TRAIN_FRACTION, 0)
    assert p.trace.num_sequences == len(split.test) < 8
    assert trace_digest(p.trace) == trace_digest(full.select(split.test))
    assert trace_digest(p.fit_trace) == trace_digest(full.select(split.train))
    assert not set(split.train) & set(split.test)
    s = run_prepared(p).summary
    assert s["counts"]["tokens"] == p.trace.num_tokens < full.num_tokens
    assert f"replaying the other {len(split.test)}" in _notes(s)


def test_replay_training_replays_everything_and_says_so():
    p = prepare(_sc("predictor.name=markov", "predictor.replay_training=true"))
    assert p.trace.num_sequences == 8 and p.fit_trace is None
    s = run_prepared(p).summary
    assert s["counts"]["tokens"] == 8 * 128
    assert "scored on its own training sequences (optimistic" in _notes(s)


def test_held_out_split_follows_the_seed():
    a = prepare(_sc("predictor.name=markov", "seed=0")).trace
    b = prepare(_sc("predictor.name=markov", "seed=1")).trace
    assert trace_digest(a) != trace_digest(b)


def test_explicit_fit_trace_or_model_is_not_split(tmp_path):
    p = prepare(_sc("predictor.name=markov", f"predictor.fit_trace={TRACE}"))
    assert p.trace.num_sequences == 8
    s = run_prepared(p).summary
    assert "predictor.fit_trace is the replayed trace" in _notes(s)


def test_one_sequence_cannot_be_held_out():
    with pytest.raises(MoesimInputError, match=r"predictor.replay_training: markov .* 1 sequence"):
        prepare(load_scenario(None, ["trace.max_sequences=1", "predictor.name=markov"]))


def test_non_learned_predictors_replay_the_whole_trace():
    sel = select_replay(_sc("predictor.name=popularity"), load_trace(TRACE))
    assert sel.fit_trace is None and sel.notes == [] and sel.trace.num_sequences == 16


def test_prev_token_without_prefetch_says_why():
    s = run_prepared(prepare(_sc("predictor.name=prev-token", "cache.capacity=128"))).summary
    assert s["prefetch"]["issued"] == 0
    assert "prev-token issued no prefetch over the whole run" in _notes(s)
    assert "LRU cache of 128 slots" in _notes(s)
    # with a cache too small for a token's working set it does prefetch, and no note is left
    s = run_prepared(prepare(_sc("predictor.name=prev-token", "cache.capacity=64"))).summary
    assert s["prefetch"]["issued"] > 0 and "no prefetch" not in _notes(s)


def test_none_predictor_has_no_notes():
    s = run_prepared(prepare(_sc("predictor.name=none"))).summary
    assert "notes" not in s["provenance"]


def test_notes_are_printed_with_the_summary(tmp_path, capsys):
    assert (
        main(
            [
                "run",
                "--set",
                "trace.max_sequences=8",
                "--set",
                "predictor.name=markov",
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 0
    )
    out = _flat(capsys.readouterr().out)
    assert "note" in out and "markov trained on" in out and "replaying the other" in out
    assert main(["run", "--out", str(tmp_path / "d")]) == 0
    assert "popularity fitted on the replayed trace itself (optimistic" in _flat(capsys.readouterr().out)


def test_quiet_prints_no_notes(tmp_path, capsys):
    assert (
        main(
            [
                "run",
                "--quiet",
                "--set",
                "predictor.name=prev-token",
                "--set",
                "trace.max_sequences=2",
                "--set",
                "cache.capacity=128",
                "--out",
                str(tmp_path / "q"),
            ]
        )
        == 0
    )
    assert capsys.readouterr().out == ""


def test_held_out_run_is_deterministic():
    a = run_prepared(prepare(_sc("predictor.name=st-moe"))).summary
    b = run_prepared(prepare(_sc("predictor.name=st-moe"))).summary
    assert a["counts"] == b["counts"] and np.isclose(
        a["latency"]["tpot_ms"]["mean"], b["latency"]["tpot_ms"]["mean"]
    )


def test_sweep_prints_each_note_with_its_points(tmp_path, capsys):
    grid = ["--grid", "predictor.name=prev-token,markov", "--grid", "cache.capacity=128,256"]
    args = ["sweep", "--set", "trace.max_sequences=2", *grid, "-j", "1", "--out", str(tmp_path / "s")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "note (point 0): predictor prev-token issued no prefetch" in out
    assert "note (points 2, 3): markov trained on 1 of the trace's 2 sequences" in out
    assert main([*args[:-1], str(tmp_path / "q"), "--quiet"]) == 0
    assert "note" not in capsys.readouterr().out


def test_model_file_replays_only_sequences_it_was_not_trained_on(tmp_path, capsys):
    from moesim.experiments.holdout import DIGESTS_KEY, sequence_digests
    from moesim.policies.predictors._common import load_model_file

    model = tmp_path / "p.safetensors"
    tiny = ["--set", "d_model=16", "--set", "ff=32", "--set", "attn_heads=2", "--set", "epochs=1"]
    assert main(["predictor", "train", "prophet", "--trace", str(TRACE), *tiny, "--out", str(model)]) == 0
    capsys.readouterr()
    trained = load_model_file(model, "prophet")[1]["info"][DIGESTS_KEY]
    full = load_trace(TRACE)
    split = split_by_sequence(full, 0.8, 0)
    assert sorted(trained) == sorted(sequence_digests(full.select(split.train)))
    sets = [f"predictor.params={{model: {model}}}", "predictor.name=prophet", "cache.capacity=256"]
    p = prepare(load_scenario(None, sets))
    assert trace_digest(p.trace) == trace_digest(full.select(split.test))
    assert f"replaying the {len(split.test)} sequences model file" in " ".join(p.notes)
    # another selection of the same trace: still only the unseen sequences
    p = prepare(load_scenario(None, [*sets, "trace.domain=math"]))
    math = [i for i in split.test if full.seq_domain[i] == full.meta.domains.index("math")]
    assert trace_digest(p.trace) == trace_digest(full.select(math))
    p = prepare(load_scenario(None, [*sets, "predictor.replay_training=true"]))
    assert p.trace.num_sequences == 16 and "optimistic" in " ".join(p.notes)
    # every replayed sequence was a training one: refused, one line
    with pytest.raises(MoesimInputError, match="trained on every sequence of the replayed trace"):
        _all_trained(sets, full, split)


def _all_trained(sets, full, split):
    """A domain whose first sequence trained the model, replayed one sequence."""
    for d, name in enumerate(full.meta.domains):
        idx = [i for i in range(full.num_sequences) if full.seq_domain[i] == d]
        if idx and idx[0] in set(split.train.tolist()):
            return prepare(load_scenario(None, [*sets, f"trace.domain={name}", "trace.max_sequences=1"]))
    pytest.skip("no domain whose first sequence is a training one")


@pytest.mark.parametrize(
    "sets,expect",
    [
        (["predictor.name=oracle", "predictor.horizon=3", "cache.capacity=24"], "= 32 > cache.capacity 24"),
        (["predictor.name=oracle", "predictor.horizon=2", "cache.capacity=24"], None),  # 8 x 2 + 8 = 24 fits
        (
            ["predictor.name=popularity", "predictor.top_n=10", "cache.scope=per-layer", "cache.capacity=8"],
            "up to 10 experts per prediction",
        ),
        (["predictor.name=popularity"], None),
    ],
)
def test_plans_that_cannot_fit_by_construction(sets, expect):
    s = run_prepared(prepare(load_scenario(None, ["trace.max_sequences=1", *sets]))).summary
    fits = [n for n in s["provenance"].get("notes", []) if "cannot fit" in n]
    assert (expect is None and not fits) or (expect is not None and expect in " ".join(fits))


def test_live_runs_carry_the_same_notes():
    pytest.importorskip("torch")
    from moesim.engine.live_executor import LiveOptions
    from moesim.experiments.live import run_live
    from tests.helpers import random_trace
    from tests.live.conftest import E as LE
    from tests.live.conftest import K as LK
    from tests.live.conftest import L as LL
    from tests.live.conftest import live_prepared, tiny_model

    tr = random_trace(np.random.default_rng(7), 2, 6, LL, LE, LK)
    p = live_prepared(tr, tiny_model(), predictor="prev-token", capacity=8)  # 8 >= L x k: always resident
    live = run_live(p, LiveOptions(device="cpu", keep_awake=False)).result.summary
    sim = run_prepared(p).summary
    assert live["prefetch"]["issued"] == sim["prefetch"]["issued"] == 0
    assert live["provenance"]["notes"] == sim["provenance"]["notes"]
    assert "prev-token issued no prefetch" in _notes(live)


def test_next_gate_files(tmp_path):
    from safetensors.numpy import save_file

    from moesim.policies.predictors.next_gate import NextGate

    gates = np.zeros((16, 64, 8), np.float32)
    foreign = tmp_path / "exported.safetensors"
    save_file({f"gate.{i}": gates[i] for i in range(16)}, str(foreign))  # a model's own routers
    full = load_trace(TRACE)
    sel = select_replay(
        load_scenario(None, ["predictor.name=next-gate", f"predictor.params={{gates: {foreign}}}"]), full
    )
    assert sel.trace is full and sel.notes == [] and sel.fit_trace is None
    fitted = tmp_path / "fitted.safetensors"
    NextGate.save_model(gates, fitted)  # moesim's file, which does not list its training sequences
    for key in ("gates", "model"):
        sc = load_scenario(None, ["predictor.name=next-gate", f"predictor.params={{{key}: {fitted}}}"])
        sel = select_replay(sc, full)
        assert sel.trace is full and "does not list its training sequences" in " ".join(sel.notes)


def test_st_moe_without_warm_start_trains_on_nothing():
    sc = load_scenario(None, ["predictor.name=st-moe", "predictor.params={warm_start: false}"])
    sel = select_replay(sc, load_trace(TRACE))
    assert sel.trace.num_sequences == 16 and sel.notes == []
