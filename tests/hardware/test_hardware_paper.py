"""Seed 002 Tables 1 and 5 come back from the paper profiles."""

from __future__ import annotations

import pytest

from moesim.errors import MoesimInputError
from moesim.hardware import load_profile, paper_profile

# (norm, attention, post-attention norm, expert selection, expert computation) from Table 1;
# (disk->GPU, memory->GPU) for 6 experts from Table 5.
TABLE1 = {
    "v100-32gb": (0.1292, 1.1279, 0.1292, 0.1432, 10.3075),
    "a100-40gb": (0.0771, 0.7607, 0.0823, 0.0972, 6.1970),
    "a100-80gb": (0.0750, 0.7385, 0.0797, 0.1018, 6.8111),
}
TABLE5 = {"v100-32gb": (48.1, 9.5), "a100-40gb": (49.8, 8.5), "a100-80gb": (33.5, 4.0)}
EXPERT_BYTES = 17_301_504


@pytest.mark.parametrize("key", sorted(TABLE1))
def test_table1_ops_come_back(key: str, deepseek) -> None:
    p = load_profile(f"paper:{key}", deepseek)
    norm, attn, post, sel, experts = TABLE1[key]
    assert p.time_ms("norm", tokens=1) == pytest.approx(norm, abs=1e-12)
    assert p.time_ms("attention", batch=1, context=2048) == pytest.approx(attn, abs=1e-12)
    assert p.time_ms("post_attention_norm", tokens=1) == pytest.approx(post, abs=1e-12)
    assert p.time_ms("expert_selection", tokens=1) == pytest.approx(sel, abs=1e-12)
    assert p.time_ms("gate", tokens=1) == pytest.approx(post + sel, abs=1e-12)
    assert 6 * p.time_ms("expert_ffn", tokens=1) == pytest.approx(experts, abs=1e-9)
    assert p.extrapolations == []


@pytest.mark.parametrize("key", sorted(TABLE5))
def test_table5_transfers_sum_to_paper(key: str) -> None:
    p = paper_profile(key)
    disk, mem = TABLE5[key]
    assert abs(sum(p.time_ms("h2d_pinned", bytes=EXPERT_BYTES) for _ in range(6)) - mem) < 0.05
    assert abs(sum(p.time_ms("ssd_read", bytes=EXPERT_BYTES) for _ in range(6)) - disk) < 0.05
    # proportional to bytes: zero fixed overhead
    assert p.time_ms("h2d_pinned", bytes=0) == 0.0
    assert p.time_ms("h2d_pinned", bytes=2 * EXPERT_BYTES) == pytest.approx(
        2 * p.time_ms("h2d_pinned", bytes=EXPERT_BYTES)
    )
    assert p.extrapolations == []


def test_every_table_is_paper_with_citation() -> None:
    for key in TABLE1:
        p = paper_profile(key)
        assert p.model == "deepseek-v2-lite"
        for t in p.tables.values():
            assert t.provenance["kind"] == "paper"
            assert "Pre-Attention Expert Prediction" in t.provenance["citation"]
        assert "total / 6" in " ".join(p.tables["expert_ffn"].provenance["notes"])
        assert p.tables["ssd_read"].provenance["includes_h2d"] is True


def test_attention_does_not_depend_on_context_and_batch_is_flagged() -> None:
    p = paper_profile("a100-40gb")
    assert p.tables["attention"].axes == ("batch",)
    assert p.time_ms("attention", batch=1, context=1) == p.time_ms("attention", batch=1, context=100_000)
    assert p.time_ms("attention", batch=8, context=10) == pytest.approx(0.7607)
    assert p.extrapolations == [
        "paper:a100-40gb: attention.batch above table range [1, 1] (farthest 8): held constant (single-point grid)"
    ]


def test_batch_outside_follows_error_policy() -> None:
    p = load_profile("paper:v100-32gb", extrapolation="error")
    with pytest.raises(MoesimInputError, match=r"paper:v100-32gb.*expert_ffn.*tokens=2.*\[1, 1\]"):
        p.time_ms("expert_ffn", tokens=2)


def test_paper_profile_rejects_other_models(olmoe) -> None:
    with pytest.raises(MoesimInputError, match=r"paper:a100-80gb.*deepseek-v2-lite.*olmoe-1b-7b.*estimated:"):
        load_profile("paper:a100-80gb", olmoe)


def test_unknown_paper_key() -> None:
    with pytest.raises(
        MoesimInputError, match=r"hardware.profile: unknown profile 'paper:h100'.*estimated:<"
    ):
        load_profile("paper:h100")


def test_missing_table_points_at_fixes(deepseek) -> None:
    p = load_profile("paper:a100-40gb", deepseek)
    assert not p.has("shared_expert_ffn")
    with pytest.raises(
        MoesimInputError, match=r"paper:a100-40gb.*no table for shared_expert_ffn.*add .*estimated"
    ):
        p.time_ms("shared_expert_ffn", tokens=1)


def test_plus_estimated_fills_gaps_and_keeps_paper_tables(deepseek) -> None:
    p = load_profile("paper:a100-40gb+estimated", deepseek)
    kinds = p.table_kinds()
    assert kinds["expert_ffn"] == "paper" and kinds["h2d_pinned"] == "paper"
    assert kinds["shared_expert_ffn"] == "estimated" and kinds["d2h"] == "estimated"
    assert p.tables["d2h"].provenance["inputs"]["device"] == "a100-40gb-pcie"
    assert p.time_ms("norm", tokens=1) == pytest.approx(0.0771)
    assert p.time_ms("shared_expert_ffn", tokens=1) > 0
    assert "shared_expert_ffn" in p.provenance["filled_from"]["ops"]
