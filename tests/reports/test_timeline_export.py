"""Timeline export: Chrome / Perfetto trace-event JSON that validates, with paired flows; Gantt PNG."""

from __future__ import annotations

import json

import pytest

import moesim
from moesim.cli.main import main
from moesim.errors import MoesimInputError
from moesim.reports.timeline import TokenRange, chrome_trace, select_tokens, validate_trace

# The trace-event format's rules for the phases moesim writes, as a JSON Schema.
NUM = {"type": "number"}
INT = {"type": "integer"}
STR = {"type": "string"}
TRACE_EVENT_SCHEMA = {
    "type": "object",
    "required": ["traceEvents"],
    "properties": {
        "displayTimeUnit": {"enum": ["ms", "ns"]},
        "traceEvents": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["ph", "pid", "tid", "name"],
                "properties": {"ph": {"enum": ["X", "M", "s", "f"]}, "pid": INT, "tid": INT, "name": STR},
                "allOf": [
                    {
                        "if": {"properties": {"ph": {"const": "X"}}},
                        "then": {
                            "required": ["ts", "dur"],
                            "properties": {
                                "ts": NUM,
                                "dur": {"type": "number", "minimum": 0},
                                "cat": STR,
                                "args": {"type": "object"},
                            },
                        },
                    },
                    {
                        "if": {"properties": {"ph": {"enum": ["s", "f"]}}},
                        "then": {
                            "required": ["ts", "id", "cat"],
                            "properties": {"ts": NUM, "id": INT, "cat": STR},
                        },
                    },
                    {
                        "if": {"properties": {"ph": {"const": "f"}}},
                        "then": {"required": ["bp"], "properties": {"bp": {"const": "e"}}},
                    },
                    {
                        "if": {"properties": {"ph": {"const": "M"}}},
                        "then": {
                            "required": ["args"],
                            "properties": {
                                "name": {
                                    "enum": [
                                        "process_name",
                                        "thread_name",
                                        "thread_sort_index",
                                        "process_sort_index",
                                    ]
                                }
                            },
                        },
                    },
                ],
            },
        },
    },
}


@pytest.fixture(scope="module")
def timeline_run():
    return moesim.run(
        None,
        {"trace.max_sequences": 1, "predictor.name": "oracle", "predictor.horizon": 2, "cache.capacity": 256},
        timeline=True,
    )


def test_trace_json_validates_and_flows_pair(timeline_run, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    obj = json.loads(json.dumps(chrome_trace(timeline_run.timeline)))
    jsonschema.validate(obj, TRACE_EVENT_SCHEMA)
    assert validate_trace(obj) == []
    evs = obj["traceEvents"]
    xs = [e for e in evs if e["ph"] == "X"]
    names = {e["args"]["name"] for e in evs if e["ph"] == "M" and e["name"] == "thread_name"}
    assert names == {"compute stream", "copy engine H2D"}
    assert {e["cat"] for e in xs} >= {"attention", "expert", "prefetch"}
    # slices on one thread never overlap (Perfetto needs them nested)
    by_tid: dict[int, list] = {}
    for e in xs:
        by_tid.setdefault(e["tid"], []).append((e["ts"], e["ts"] + e["dur"]))
    for spans in by_tid.values():
        spans.sort()
        assert all(b[0] >= a[1] - 1e-3 for a, b in zip(spans, spans[1:]))
    # every flow goes from a prefetch copy to a compute slice of the same expert that starts later
    starts = {e["id"]: e for e in evs if e["ph"] == "s"}
    finishes = {e["id"]: e for e in evs if e["ph"] == "f"}
    assert starts and starts.keys() == finishes.keys()
    copy_at = {(e["tid"], e["ts"]): e for e in xs if e["cat"] == "prefetch"}
    use_at = {(e["tid"], e["ts"]): e for e in xs if e["cat"] == "expert"}
    for fid, s in starts.items():
        f = finishes[fid]
        src, dst = copy_at[(s["tid"], s["ts"])], use_at[(f["tid"], f["ts"])]
        assert src["args"]["key"] == dst["args"]["key"]
        assert dst["ts"] >= src["ts"] + src["dur"] - 1e-3


def test_validator_catches_broken_traces():
    assert validate_trace({"traceEvents": [{"ph": "X", "name": "a", "pid": 1, "tid": 1, "ts": 0}]})
    bad_flow = {"traceEvents": [{"ph": "s", "name": "f", "cat": "c", "id": 1, "pid": 1, "tid": 1, "ts": 5}]}
    assert any("not paired" in p for p in validate_trace(bad_flow))
    assert validate_trace([]) == ["top level must be an object with a traceEvents array"]


def test_token_range_selection(timeline_run):
    sel = select_tokens(timeline_run.timeline, TokenRange(3, 5))
    steps = {e["args"]["step"] for e in sel if e["track"] == "compute"}
    assert steps == {3, 4}
    assert any(e["track"] == "h2d" for e in sel)
    with pytest.raises(MoesimInputError):
        TokenRange.parse("5:2")
    with pytest.raises(MoesimInputError):
        select_tokens(timeline_run.timeline, TokenRange(10_000, 10_001))


def test_run_cli_timeline_and_gantt(tmp_path):
    tl, png = tmp_path / "t.json", tmp_path / "g.png"
    rc = main(
        [
            "run",
            "--quiet",
            "--set",
            "trace.max_sequences=1",
            "--out",
            str(tmp_path / "r"),
            "--timeline",
            str(tl),
            "--gantt",
            str(png),
            "--tokens",
            "1:3",
        ]
    )
    assert rc == 0
    obj = json.loads(tl.read_text())
    assert validate_trace(obj) == []
    steps = {e["args"].get("step") for e in obj["traceEvents"] if e["ph"] == "X" and e["tid"] == 1}
    assert steps == {1, 2}
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    # the run's own files are unchanged by the flags
    plain = tmp_path / "plain"
    # on the simulation executor, as the timeline run (auto would take the fast one: another executor name)
    assert (
        main(["run", "--quiet", "--executor", "sim", "--set", "trace.max_sequences=1", "--out", str(plain)])
        == 0
    )
    assert (plain / "summary.json").read_bytes() == (tmp_path / "r" / "summary.json").read_bytes()
    assert main(["run", "--quiet", "--out", str(tmp_path / "x"), "--gantt", str(png), "--tokens", "zz"]) == 2
