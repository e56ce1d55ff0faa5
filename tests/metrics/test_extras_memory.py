"""``build_extras`` without copies: the table equals the former copying build, byte for byte once
written, and its full-length columns share memory with ``RunStats``' sample arrays."""

from __future__ import annotations

from array import array

import numpy as np
import pandas as pd
import pytest

from moesim.metrics.stats import RunStats
from moesim.metrics.summary import build_extras


def _copying_build(stats: RunStats) -> pd.DataFrame:
    """The former build_extras (copies every column, then pandas consolidates them): the reference."""
    lead = np.frombuffer(stats.lead_samples, dtype=np.float64) if len(stats.lead_samples) else np.zeros(0)
    slack = np.frombuffer(stats.slack_samples, dtype=np.float64) if len(stats.slack_samples) else np.zeros(0)
    n = max(len(lead), len(slack))

    def pad(a: np.ndarray) -> np.ndarray:
        return np.concatenate([a, np.full(n - len(a), np.nan)]) if len(a) < n else a.copy()

    return pd.DataFrame({"lead_ms": pad(lead), "slack_ms": pad(slack)})


def _stats(n_lead: int, n_slack: int, seed: int = 0) -> RunStats:
    rng = np.random.default_rng(seed)
    stats = RunStats(num_layers=2)
    stats.lead_samples.extend(rng.exponential(3.0, n_lead).tolist())
    stats.slack_samples.extend((rng.exponential(1.0, n_slack) - 0.5).tolist())  # some negative (late)
    return stats


CASES = [(0, 0), (1, 1), (1000, 1000), (1000, 997), (5, 0), (0, 7), (3, 1000)]


@pytest.mark.parametrize("n_lead,n_slack", CASES)
def test_extras_equal_the_copying_build(n_lead: int, n_slack: int, tmp_path) -> None:
    stats = _stats(n_lead, n_slack)
    old, new = _copying_build(stats), build_extras(stats)
    pd.testing.assert_frame_equal(new, old, check_exact=True)
    n = max(n_lead, n_slack)
    assert len(new) == n
    for col, m in (("lead_ms", n_lead), ("slack_ms", n_slack)):
        assert new[col].isna().to_numpy().tolist() == [False] * m + [True] * (n - m)  # padding at the end
    old.to_parquet(tmp_path / "old.parquet", index=False)
    new.to_parquet(tmp_path / "new.parquet", index=False)
    assert (tmp_path / "new.parquet").read_bytes() == (tmp_path / "old.parquet").read_bytes()


def test_a_nan_sample_is_kept_as_the_copying_build_keeps_it(tmp_path) -> None:
    stats = RunStats(num_layers=1)
    stats.lead_samples.extend([1.0, float("nan"), 2.0])
    stats.slack_samples.extend([0.5, 0.25])
    old, new = _copying_build(stats), build_extras(stats)
    pd.testing.assert_frame_equal(new, old, check_exact=True)
    old.to_parquet(tmp_path / "old.parquet", index=False)
    new.to_parquet(tmp_path / "new.parquet", index=False)
    assert (tmp_path / "new.parquet").read_bytes() == (tmp_path / "old.parquet").read_bytes()


def test_full_length_columns_are_views_not_copies() -> None:
    stats = _stats(1000, 990)
    extras = build_extras(stats)
    lead = np.frombuffer(stats.lead_samples, dtype=np.float64)
    slack = np.frombuffer(stats.slack_samples, dtype=np.float64)
    assert np.shares_memory(extras["lead_ms"].to_numpy(), lead)
    assert not np.shares_memory(extras["slack_ms"].to_numpy(), slack)  # the shorter one is padded
    with pytest.raises(ValueError):  # read-only: the table cannot write into the run's samples
        extras["lead_ms"].to_numpy()[0] = 0.0
    assert stats.lead_samples[0] == lead[0]


def test_samples_stay_appendable_arrays_until_extras_are_built() -> None:
    stats = RunStats(num_layers=1)
    assert isinstance(stats.lead_samples, array) and stats.lead_samples.typecode == "d"
    stats.lead_samples.append(1.0)
    stats.slack_samples.append(0.5)
    extras = build_extras(stats)
    del extras
    stats.lead_samples.append(2.0)  # no view left: the array grows again
    assert list(stats.lead_samples) == [1.0, 2.0]


# -- the tokens table from typed arrays -------------------------------------------------------------
_TOK = {  # RunStats series -> tokens column, as build_tables names them
    "tok_group": "group",
    "tok_step": "step",
    "tok_batch": "batch",
    "tok_latency_ms": "tpot_ms",
    "tok_compute_ms": "compute_ms",
    "tok_stall_ms": "stall_ms",
    "tok_hits": "hits",
    "tok_late": "late_hits",
    "tok_misses": "misses",
    "tok_bytes_h2d": "bytes_h2d",
    "tok_evictions": "evictions",
    "tok_refetches": "refetches",
}


class _Core:
    """The CoreCounters build_tables reads (one layer)."""

    L = 1
    layer_accesses = [8]
    layer_present = [5]
    layer_prefetch_issued = [3]
    layer_prefetch_useful = [2]
    layer_evictions = [1]


def _rows(n: int, seed: int = 1) -> list[tuple]:
    rng = np.random.default_rng(seed)
    return [
        (
            g,
            t - 1,
            1,
            float(rng.random() * 30),
            float(rng.random()),
            0.0,
            int(rng.integers(0, 9)),
            0,
            int(rng.integers(0, 9)),
            int(rng.integers(0, 2**40)),
            3,
            0,
        )  # fmt: skip
        for g in range(2)
        for t in range(n)
    ]


def _tables_from_lists(rows: list[tuple]) -> pd.DataFrame:
    """The tokens table as build_tables made it when RunStats held lists of Python numbers."""
    cols = list(zip(*rows)) if rows else [()] * len(_TOK)
    return pd.DataFrame({name: list(col) for name, col in zip(_TOK.values(), cols)})


@pytest.mark.parametrize("n", [0, 1, 257])
def test_tokens_table_from_arrays_equals_the_list_built_one(n: int, tmp_path) -> None:
    from moesim.engine.steps import TokenTally, append_token_row
    from moesim.metrics.summary import build_tables

    rows = _rows(n)
    stats = RunStats(num_layers=1)
    for g, t, b, lat, comp, stall, hits, late, misses, nbytes, ev, ref in rows:
        tally = TokenTally(0, 0, 0, stall=stall, compute=comp, hits=hits, late=late, misses=misses)
        append_token_row(stats, g, t, b, lat, tally, (nbytes, ev, ref))
    assert all(isinstance(getattr(stats, f), array) for f in _TOK)
    tokens, _ = build_tables(_Core(), stats, ())
    ref = _tables_from_lists(rows)
    pd.testing.assert_frame_equal(tokens, ref, check_exact=True)  # dtypes too (object when empty)
    for t, name in ((tokens, "new"), (ref, "old")):
        t.to_csv(tmp_path / f"{name}.csv", index=False, float_format="%.6f", lineterminator="\n")
        t.to_parquet(tmp_path / f"{name}.parquet", index=False)
    for ext in ("csv", "parquet"):
        assert (tmp_path / f"new.{ext}").read_bytes() == (tmp_path / f"old.{ext}").read_bytes()
    if n:  # the table owns its data: the run's arrays stay appendable
        stats.tok_step.append(7)


def test_a_series_given_as_a_list_is_read_as_before() -> None:
    from moesim.metrics.summary import build_tables

    stats = RunStats(num_layers=1)
    for f in _TOK:
        setattr(stats, f, [1.5] if f.endswith("_ms") else [2])
    tokens, _ = build_tables(_Core(), stats, ())
    assert tokens["tpot_ms"].dtype == np.float64 and tokens["step"].dtype == np.int64
