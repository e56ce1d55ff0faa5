"""Recording a timeline window (``moesim run --tokens``) equals recording the whole run and then
selecting the window (``select_tokens``), byte for byte in the exported trace-event JSON."""

from __future__ import annotations

import json

import pytest

from moesim.errors import MoesimInputError
from moesim.experiments.run import prepare, run_prepared
from moesim.experiments.scenario import load_scenario
from moesim.metrics.timeline import TimelineWindow, WindowedEvents, window_events
from moesim.reports.timeline import TokenRange, chrome_trace, select_tokens
from moesim.traces import save_trace
from moesim.traces.synth import synthesize

CASES = {
    # batch 1, prefetches several layers ahead into a small cache: copies cross every window edge
    "b1-oracle": {"trace.max_sequences": 2, "predictor.name": "oracle", "predictor.horizon": 3,
                  "cache.capacity": 96},
    # static batch of 2, two copy engines, popularity prefetch
    "b2-lanes": {"trace.max_sequences": 3, "batch": 2, "hardware.copy_engines": 2, "cache.capacity": 160},
    # continuous batching with prompt passes: steps come back (each request's prompt pass is step -1)
    "poisson": {"batch": 2, "arrivals.process": "poisson", "arrivals.rate_per_s": 50.0, "prefill": True,
                "predictor.name": "oracle", "cache.capacity": 128},
}  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _prefill_trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("tw") / "p.moetrace"
    save_trace(synthesize(3, 12, seed=3, prefill_tokens=5, num_layers=16, num_experts=64, top_k=8), path)
    CASES["poisson"]["trace.path"] = str(path)


def _run(overrides: dict, timeline):
    sc = load_scenario(None, [f"{k}={v}" for k, v in overrides.items()])
    return run_prepared(prepare(sc), timeline=timeline)


def _export(events) -> bytes:
    return json.dumps(chrome_trace(events, {"scenario": "t"}), separators=(",", ":")).encode()


@pytest.mark.parametrize("case", sorted(CASES))
def test_window_recording_equals_whole_run_then_filter(case):
    full = _run(CASES[case], True)
    _, steps = window_events(full.timeline, 0, 0)
    assert steps > 8
    windows = [(0, 3), (steps // 2 - 1, steps // 2 + 2), (steps - 2, steps), (steps - 1, steps + 5)]
    crossing = 0
    for a, b in windows:
        expect = select_tokens(full.timeline, TokenRange(a, b))
        got = _run(CASES[case], TimelineWindow(a, b))
        assert isinstance(got.timeline, WindowedEvents) and got.timeline.num_steps == steps
        assert _export(select_tokens(got.timeline, TokenRange(a, b))) == _export(expect)
        assert got.summary == full.summary  # recording less changes no number
        lo = min(e["start_ms"] for e in expect if e["track"] == "compute")
        crossing += sum(1 for e in expect if e["track"] == "h2d" and e["start_ms"] < lo < e["end_ms"])
        assert len(got.timeline) < len(full.timeline)
    if case == "b1-oracle":
        assert crossing > 0  # the case exercises copies in flight when a window opens


def test_window_past_the_run_fails_like_the_filter(tmp_path, capsys):
    from moesim.cli.main import main

    got = _run(CASES["b1-oracle"], TimelineWindow(10_000, 10_001))
    assert got.timeline == []
    steps = got.timeline.num_steps
    with pytest.raises(MoesimInputError, match=f"the run has only {steps} decode steps"):
        select_tokens(got.timeline, TokenRange(10_000, 10_001))
    args = ["run", "--quiet", "--set", "trace.max_sequences=1", "--out", str(tmp_path / "r")]
    assert main([*args, "--timeline", str(tmp_path / "t.json"), "--tokens", "5000:5002"]) == 2
    assert "the run has only 128 decode steps" in capsys.readouterr().err  # an empty window, not 0


def test_cli_window_file_equals_filtered_whole_run(tmp_path):
    from moesim.cli.main import main

    base = ["run", "--quiet", "--set", "trace.max_sequences=2", "--set", "predictor.name=oracle",
            "--set", "predictor.horizon=3", "--set", "cache.capacity=96"]  # fmt: skip
    assert (
        main([*base, "--out", str(tmp_path / "w"), "--timeline", str(tmp_path / "w.json"), "--tokens", "5:9"])
        == 0
    )
    full = _run(
        {"trace.max_sequences": 2, "predictor.name": "oracle", "predictor.horizon": 3, "cache.capacity": 96},
        True,
    )
    meta = json.loads((tmp_path / "w.json").read_text())["otherData"]
    expect = json.dumps(
        chrome_trace(select_tokens(full.timeline, TokenRange(5, 9)), meta), separators=(",", ":")
    )
    assert (tmp_path / "w.json").read_text() == expect + "\n"
