"""Profiles survive YAML round trips; bad files fail with one line naming file and table."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from moesim.errors import MoesimInputError
from moesim.hardware import LatencyProfile, estimate_profile, load_profile, paper_profile, read_profile


def _queries(p: LatencyProfile) -> list[float]:
    out = []
    for op in p.tables:
        axes = {a: 3.0 if a != "bytes" else 5e6 for a in p.tables[op].axes}
        out.append(p.time_ms(op, **axes))
    return out


@pytest.mark.parametrize("which", ["paper", "estimated"])
def test_round_trip(which: str, deepseek, tmp_path: Path) -> None:
    p = paper_profile("a100-80gb") if which == "paper" else estimate_profile(deepseek, "h100-sxm")
    q = LatencyProfile.from_yaml(p.to_yaml(), "mem")
    assert q.tables == p.tables
    assert (q.name, q.device, q.model, q.extrapolation) == (p.name, p.device, p.model, p.extrapolation)
    assert q.fingerprint() == p.fingerprint()
    assert _queries(q) == _queries(p)
    path = tmp_path / "prof.yaml"
    p.save(path)
    r = load_profile(str(path), deepseek)
    assert r.tables == p.tables and r.source == str(path)


def test_with_link_inf_round_trips(deepseek) -> None:
    p = estimate_profile(deepseek, "h100-sxm").with_link(h2d_gbps=float("inf"))
    q = LatencyProfile.from_yaml(p.to_yaml(), "mem")
    assert q.time_ms("h2d_pinned", bytes=1e9) == p.time_ms("h2d_pinned", bytes=1e9)
    assert q.fingerprint() == p.fingerprint()


def test_file_for_other_model_is_rejected(deepseek, olmoe, tmp_path: Path) -> None:
    path = tmp_path / "ds.yaml"
    estimate_profile(deepseek, "a100-80gb-sxm").save(path)
    with pytest.raises(
        MoesimInputError, match=r"ds.yaml: profile is for model 'deepseek-v2-lite'.*'olmoe-1b-7b'"
    ):
        load_profile(path, olmoe)


def _write(tmp_path: Path, mutate) -> Path:
    data = paper_profile("v100-32gb").to_dict()
    mutate(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d["tables"]["norm"].__setitem__("ms", [-0.1]), r"bad.yaml: table norm: ms holds -0.1"),
        (
            lambda d: d["tables"]["h2d_pinned"].__setitem__("ms", [0.0, float("nan")]),
            r"bad.yaml: table h2d_pinned: ms holds nan",
        ),
        (
            lambda d: d["tables"]["h2d_pinned"]["grid"].__setitem__("bytes", [-1.0, 5.0]),
            r"table h2d_pinned: grid.bytes holds -1.0",
        ),
        (lambda d: d["tables"]["norm"].__setitem__("colour", 1), r"table norm: unknown key 'colour'"),
        (
            lambda d: d["tables"]["norm"]["provenance"].pop("citation"),
            r"table norm: provenance of kind paper lacks citation",
        ),
        (lambda d: d.__setitem__("extrapolation", "guess"), r"bad.yaml: extrapolation is 'guess'"),
        (lambda d: d.__setitem__("version", 7), r"bad.yaml: version 7 is not supported"),
        (lambda d: d["tables"]["norm"]["grid"].__setitem__("batch", [1]), r"table norm: grid has axes"),
    ],
)
def test_bad_files(tmp_path: Path, mutate, match: str) -> None:
    with pytest.raises(MoesimInputError, match=match):
        read_profile(_write(tmp_path, mutate))


def test_unsafe_yaml_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("!!python/object/apply:os.system ['true']\n", encoding="utf-8")
    with pytest.raises(MoesimInputError, match=r"evil.yaml: line 1 is not valid YAML"):
        read_profile(path)
    with pytest.raises(MoesimInputError, match=r"no such file; use paper:"):
        load_profile(tmp_path / "absent.yaml")
