"""Offline evaluation: metric definitions on hand-made cases, splits, the timing budget, and the
``moesim predictor`` command end to end on small traces."""

from __future__ import annotations

import json

import numpy as np
import pytest
from predictor_builders import chain_trace, teacher_trace

from moesim.cli.main import main
from moesim.errors import MoesimInputError
from moesim.evaluation.harness import build_predictor, evaluate
from moesim.evaluation.metrics import Accumulator
from moesim.evaluation.splits import domain_split, split_by_domain, split_by_sequence
from moesim.evaluation.timing import TimingBudget
from moesim.hardware import estimate_profile
from moesim.hardware.costs import CostModel
from moesim.traces.native import save_trace
from tests.helpers import make_model


def test_metrics_on_a_hand_made_case():
    acc = Accumulator(L=2, k=2, overprovision=1)
    ranked = np.array([[3, 1, 0, 2], [0, 1, 2, 3], [2, 3, 1, 0]])
    truth = np.array([[1, 3], [2, 3], [0, 1]])
    scores = np.array([[0.9, 0.8, 0.1, 0.0], [0.9, 0.5, 0.4, 0.1], [0.6, 0.3, 0.2, 0.1]])
    acc.add(np.array([0, 0, 1]), np.array([1, 1, 1]), ranked, scores, truth)
    rows = {r["layer"]: r for r in acc.per_layer()}
    # layer 0: row 1 exact (recall 1, top1 1), row 2 misses both in top-2 but gets 2 in top-3
    assert rows[0]["recall_at_k"] == 0.5 and rows[0]["exact_match"] == 0.5 and rows[0]["top1"] == 0.5
    assert rows[0]["overprov_recall"] == 0.75 and rows[0]["overprov_cover"] == 0.5
    assert rows[0]["precision"] == pytest.approx((2 / 3 + 1 / 3) / 2) and rows[0]["prefetched"] == 3
    # layer 1: top-3 = [2, 3, 1] holds 1 of {0, 1}
    assert rows[1]["recall_at_k"] == 0.0 and rows[1]["overprov_recall"] == 0.5 and rows[1]["top1"] == 0.0
    h = acc.per_horizon()[1]
    assert h["predictions"] == 3 and h["recall_at_k"] == pytest.approx(1 / 3) and h["in_time_recall"] is None
    assert 0.0 <= h["ece"] <= 1.0 and sum(b["count"] for b in acc.reliability(1)) == 9


def test_threshold_and_short_rankings():
    acc = Accumulator(L=1, k=2, overprovision=2, threshold=0.5)
    ranked = np.array([[0, 1, 2, 3], [4, -1, -1, -1]])
    scores = np.array([[0.9, 0.4, 0.8, 0.1], [0.7, np.nan, np.nan, np.nan]])
    acc.add(np.zeros(2, int), np.ones(2, int), ranked, scores, np.array([[0, 2], [4, 5]]))
    row = acc.per_horizon()[1]
    assert row["prefetched"] == 1.5  # {0, 2} and {4}
    assert row["overprov_recall"] == pytest.approx((1.0 + 0.5) / 2)
    assert row["precision_at_k"] == pytest.approx((0.5 + 1.0) / 2)  # a one-expert ranking: 1 of 1


def test_in_time_budget_by_hand():
    model = make_model(2, 8, 2)
    costs = CostModel(estimate_profile(model, "h100-pcie"), model)
    tb = TimingBudget(costs, L=2, k=2, prompt_tokens=10)
    c = costs
    front = c.pre_attention_ms(1) + c.attention_ms(1, 10) + c.gate_ms(1)
    back = c.shared_ms(1) + 2 * c.expert_ms(1)
    # after step 0's gate to step 1's gate: the rest of step 0, then step 1 up to its gate
    assert tb.budgets(np.array([0]), np.array([1]), False)[0] == pytest.approx(back + front)
    # two steps ahead crosses into token 1, whose attention sees one more token of context
    front1 = c.pre_attention_ms(1) + c.attention_ms(1, 11) + c.gate_ms(1)
    assert tb.budgets(np.array([1]), np.array([3]), False)[0] == pytest.approx(back + front1 + back + front1)
    pre = tb.budgets(np.array([2]), np.array([2]), True)[0]
    assert pre == pytest.approx(c.attention_ms(1, 11) + c.gate_ms(1))
    tb.predictor_ms = 0.01
    ok = tb.arrival_ok(np.array([tb.copy_ms * 2.5]), 4)
    assert ok.tolist() == [[True, True, False, False]]


def test_in_time_grows_with_horizon():
    trace = chain_trace(3, 20, noise=0.0)
    model = make_model(4, 12, 2)
    tb = TimingBudget(CostModel(estimate_profile(model, "h100-pcie"), model), 4, 2, 64)
    rows = {}
    for h in (1, 4):
        acc = evaluate(build_predictor("oracle", trace, trace, h, {}, 0), trace, 0, timing=tb).acc
        rows[h] = acc.per_horizon()[h]
    assert rows[1]["recall_at_k"] == rows[4]["recall_at_k"] == 1.0
    assert rows[1]["in_time_recall"] <= rows[4]["in_time_recall"] <= 1.0


def test_splits():
    trace = chain_trace(12, 5, domains=("a", "b", "c"))
    s = split_by_sequence(trace, 0.5, seed=1)
    assert sorted([*s.train, *s.test]) == list(range(12)) and not set(s.train) & set(s.test)
    dom = np.asarray(trace.seq_domain)
    assert all((dom[s.train] == d).sum() == 2 for d in range(3))  # stratified by domain
    assert np.array_equal(s.train, split_by_sequence(trace, 0.5, seed=1).train)
    assert not np.array_equal(s.train, split_by_sequence(trace, 0.5, seed=2).train)
    h = split_by_domain(trace, "b")
    assert set(dom[h.test]) == {1} and 1 not in set(dom[h.train])
    d = domain_split(trace, "c", 0.5, 0)
    assert set(dom[d.train]) == set(dom[d.test]) == {2}
    for bad in (lambda: split_by_sequence(trace, 1.0, 0), lambda: split_by_domain(trace, "zzz")):
        with pytest.raises(MoesimInputError):
            bad()


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    root = tmp_path_factory.mktemp("pred")
    chain = root / "chain.moetrace"
    save_trace(chain_trace(8, 20, noise=0.05, seed=3, domains=("x", "y")), chain)
    teach = root / "teacher.moetrace"
    save_trace(teacher_trace(6, 20, L=3, E=8, k=2, H=12), teach)
    return chain, teach


TINY = ["--set", "d_model=16", "--set", "ff=32", "--set", "attn_heads=2", "--set", "epochs=2"]


def test_cli_train_then_eval(tmp_path, traces, capsys):
    chain, _ = traces
    model = tmp_path / "p.safetensors"
    assert main(["predictor", "train", "prophet", "--trace", str(chain), *TINY, "--out", str(model)]) == 0
    assert "parameters" in capsys.readouterr().out
    out = tmp_path / "ev"
    args = ["predictor", "eval", "prophet", "--trace", str(chain), "--model", str(model), "--horizons", "1,2"]
    assert (
        main([*args, "--profile", "estimated:h100-pcie", "--model-name", "olmoe-1b-7b", "--out", str(out)])
        == 2
    )
    assert "--model-name olmoe-1b-7b: model has L=16" in capsys.readouterr().err
    assert main([*args, "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["per_horizon"]) == {"1", "2"} and m["model"]["num_params"] > 0
    assert m["eval_path"] == {"1": "batched", "2": "batched"} and m["cpu_latency_ms"]["1"] > 0
    assert (out / "per_layer.csv").read_text().startswith("layer,horizon,predictions")
    assert (out / "latency.yaml").is_file()
    # the interface path gives the same accuracy
    out2 = tmp_path / "ev2"
    assert main([*args, "--interface", "--out", str(out2)]) == 0
    m2 = json.loads((out2 / "metrics.json").read_text())
    assert m2["eval_path"]["1"] == "interface"
    for h in ("1", "2"):
        assert m2["per_horizon"][h]["recall_at_k"] == pytest.approx(
            m["per_horizon"][h]["recall_at_k"], abs=1e-3
        )


def test_cli_eval_table_predictor_with_holdout_domain(tmp_path, traces):
    chain, _ = traces
    out = tmp_path / "ev"
    assert (
        main(
            ["predictor", "eval", "markov", "--trace", str(chain), "--holdout-domain", "y", "--out", str(out)]
        )
        == 0
    )
    m = json.loads((out / "metrics.json").read_text())
    assert m["split"].startswith("by domain") and m["per_horizon"]["1"]["recall_at_k"] > 0.5


def test_cli_pre_attention_end_to_end(tmp_path, traces, capsys):
    _, teach = traces
    model = tmp_path / "pa.pt"
    fast = ["--set", "hidden=32", "--set", "epochs=5", "--set", "arch=1", "--split", "0.67"]
    assert (
        main(["predictor", "train", "pre-attention", "--trace", str(teach), *fast, "--out", str(model)]) == 0
    )
    out = tmp_path / "ev"
    assert (
        main(
            [
                "predictor",
                "eval",
                "pre-attention",
                "--trace",
                str(teach),
                "--model",
                str(model),
                "--split",
                "0.67",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    m = json.loads((out / "metrics.json").read_text())
    assert list(m["per_horizon"]) == ["0"] and m["paper"]["source"].startswith("seed 002")
    assert {"exact_match", "overprov_cover", "top1"} <= set(m["per_horizon"]["0"])


def test_cli_crossdomain(tmp_path, traces, capsys):
    chain, _ = traces
    out = tmp_path / "cd"
    assert (
        main(
            ["predictor", "crossdomain", "markov", "--trace", str(chain), "--split", "0.5", "--out", str(out)]
        )
        == 0
    )
    lines = (out / "matrix.csv").read_text().strip().splitlines()
    assert len(lines) == 1 + 4 and lines[0].startswith("train_domain,test_domain,horizon,predictions")
    assert (out / "heatmap_recall_at_k.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["domains"] == ["x", "y"] and len(summary["cells"]) == 4


def test_cli_predictability(tmp_path, traces, capsys):
    chain, _ = traces
    out = tmp_path / "pr"
    assert (
        main(["predictor", "predictability", "--trace", str(chain), "--context", "2", "--out", str(out)]) == 0
    )
    res = json.loads((out / "predictability.json").read_text())
    assert "frac_of_entropy" in res["meta"]["normalisations"] and len(res["layers"]) == 4
    assert "c=2" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["predictor", "train", "markov"], "has no model to train"),
        (["predictor", "train", "nosuch"], "unknown predictor 'nosuch'"),
        (["predictor", "eval", "markov", "--set", "bogus=1"], "takes no such parameter"),
        (["predictor", "eval", "markov", "--horizons", "0"], "horizons are >= 1"),
        (["predictor", "eval", "markov", "--split", "1.5"], "training fraction"),
        (["predictor", "eval", "markov", "--holdout-domain", "zz"], "no domain 'zz'"),
        (["predictor", "eval", "pre-attention"], "hidden states"),
        (["predictor", "eval", "prophet", "--set", "epochs=0"], "epochs >= 1"),
        (["predictor", "eval", "markov", "--profile", "estimated:h100-pcie"], "go together"),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path, traces, capsys, argv, msg):
    chain, _ = traces
    argv = [*argv[:3], "--trace", str(chain), *argv[3:], "--out", str(tmp_path / "x.safetensors")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1
