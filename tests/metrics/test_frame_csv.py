"""write_frame_csv writes the bytes pandas' to_csv writes, on any values of the dtypes it takes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.metrics import frame_csv
from moesim.metrics.frame_csv import write_frame_csv

FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64)
INTS = st.integers(min_value=-(2**63), max_value=2**63 - 1)
EDGE_FLOATS = [
    0.0,
    -0.0,
    0.5e-6,
    1.5e-6,
    2.5e-6,
    -0.5e-6,
    1e300,
    -1e-300,
    5e-324,
    0.1234565,
    9007199254.7409925,
]


def _pandas_bytes(df: pd.DataFrame, tmp_path, fmt: str) -> bytes:
    ref = tmp_path / "ref.csv"
    df.to_csv(ref, index=False, float_format=fmt, lineterminator="\n")
    return ref.read_bytes()


def _mine(df: pd.DataFrame, tmp_path, fmt: str) -> bytes:
    out = tmp_path / "mine.csv"
    write_frame_csv(df, out, fmt)
    return out.read_bytes()


@st.composite
def frames(draw) -> pd.DataFrame:
    n = draw(st.integers(0, 40))
    kinds = draw(
        st.lists(st.sampled_from(["int64", "float64", "bool", "int32", "uint8"]), min_size=1, max_size=5)
    )
    cols = {}
    for i, kind in enumerate(kinds):
        if kind == "float64":
            vals = draw(st.lists(st.one_of(FLOATS, st.sampled_from(EDGE_FLOATS)), min_size=n, max_size=n))
        elif kind == "bool":
            vals = draw(st.lists(st.booleans(), min_size=n, max_size=n))
        elif kind == "int64":
            vals = draw(st.lists(INTS, min_size=n, max_size=n))
        else:
            info = np.iinfo(kind)
            vals = draw(st.lists(st.integers(int(info.min), int(info.max)), min_size=n, max_size=n))
        cols[f"c{i}_{kind}"] = np.array(vals, dtype=kind)
    return pd.DataFrame(cols)


@settings(max_examples=150, deadline=None)
@given(df=frames(), fmt=st.sampled_from(["%.6f", "%.6g"]), block=st.integers(1, 7))
def test_same_bytes_as_pandas(df, fmt, block, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("csv")
    old = frame_csv.ROWS_PER_BLOCK
    frame_csv.ROWS_PER_BLOCK = block  # blocks of a few rows: NaN in some blocks and not others
    try:
        assert _mine(df, tmp, fmt) == _pandas_bytes(df, tmp, fmt)
    finally:
        frame_csv.ROWS_PER_BLOCK = old


def test_a_run_table_takes_the_fast_path_and_matches(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    n = 5000
    df = pd.DataFrame(
        {
            "group": np.arange(n) // 7,
            "tpot_ms": rng.gamma(2.0, 10.0, n),
            "stall_ms": np.where(rng.random(n) < 0.01, np.nan, rng.random(n)),
            "hits": rng.integers(0, 200, n),
        }
    )
    calls = []
    monkeypatch.setattr(pd.DataFrame, "to_csv", lambda self, *a, **k: calls.append(1))
    mine = _mine(df, tmp_path, "%.6f")
    assert calls == []  # written without pandas' writer
    monkeypatch.undo()
    assert mine == _pandas_bytes(df, tmp_path, "%.6f")


@pytest.mark.parametrize(
    "df",
    [
        pd.DataFrame({"a,b": [1.0]}),  # a name pandas quotes
        pd.DataFrame({"s": ["x", "y,z"]}),  # text
        pd.DataFrame({"f": np.array([1.5], np.float32)}),
        pd.DataFrame(),
    ],
)
def test_other_frames_are_written_by_pandas(df, tmp_path):
    assert _mine(df, tmp_path, "%.6f") == _pandas_bytes(df, tmp_path, "%.6f")
