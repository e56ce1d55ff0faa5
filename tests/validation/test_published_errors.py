"""The error arithmetic of a validation, on hand-computed numbers."""

from __future__ import annotations

import pytest

from moesim.validation.errors import (
    Row,
    abs_stats,
    err_pct,
    mean_gap,
    platform_overheads,
    secant_overhead,
)


def test_err_pct_sign_and_size() -> None:
    assert err_pct(110.0, 100.0) == pytest.approx(10.0)
    assert err_pct(75.0, 100.0) == pytest.approx(-25.0)  # simulated faster: negative
    assert err_pct(100.0, 100.0) == 0.0


def test_abs_stats_by_hand() -> None:
    # |errors| = 1, 2, 3, 4, 10: median 3; p90 at rank 0.9 * 4 = 3.6 -> 4 + 0.6 * (10 - 4) = 7.6
    s = abs_stats([-1.0, 2.0, -3.0, 4.0, 10.0])
    assert s == {"n": 5, "median_abs_err_pct": 3.0, "p90_abs_err_pct": 7.6, "max_abs_err_pct": 10.0}
    assert abs_stats([-4.0, 2.0])["median_abs_err_pct"] == 3.0  # even count: mean of the middle two
    assert abs_stats([None, 5.0])["n"] == 1  # a case without a calibrated value is left out
    assert abs_stats([])["median_abs_err_pct"] is None


ROWS = [
    Row("a1", "A", published_ms=300.0, simulated_ms=100.0),  # gap 200
    Row("a2", "A", published_ms=400.0, simulated_ms=180.0),  # gap 220
    Row("a3", "A", published_ms=500.0, simulated_ms=260.0),  # gap 240
    Row("b1", "B", published_ms=50.0, simulated_ms=40.0),  # alone on its platform
]


def test_mean_gap_is_the_least_squares_constant() -> None:
    assert mean_gap(ROWS[:3]) == pytest.approx((200 + 220 + 240) / 3)
    assert mean_gap(ROWS[3:]) == pytest.approx(10.0)


def test_platform_overheads_fit_all_rows() -> None:
    fits = platform_overheads(ROWS)
    assert fits["A"] == {"token_overhead_ms": pytest.approx(220.0), "rows": 3}
    assert fits["B"] == {"token_overhead_ms": pytest.approx(10.0), "rows": 1}


def test_secant_is_exact_for_a_linear_response() -> None:
    """An overhead that is half hidden by copies (simulated TPOT grows by 0.5 ms per ms): the
    additive fit (220) undershoots; one secant step finds 440, where the means meet."""
    rows = ROWS[:3]
    calls = []

    def simulate_at(row: Row, ms: float) -> float:
        calls.append((row.case_id, ms))
        return row.simulated_ms + 0.5 * ms

    o = secant_overhead(rows, simulate_at)
    assert o == pytest.approx(440.0)
    mean_pub = sum(r.published_ms for r in rows) / 3
    assert sum(simulate_at(r, o) for r in rows) / 3 == pytest.approx(mean_pub)
    assert {c for c, _ in calls} == {"a1", "a2", "a3"}


def test_secant_keeps_a_negative_or_flat_fit() -> None:
    fast = [Row("x", "X", 100.0, 150.0), Row("y", "X", 100.0, 130.0)]
    assert secant_overhead(fast, lambda r, ms: 1 / 0) == pytest.approx(-40.0)  # never simulated
    flat = [Row("x", "X", 300.0, 100.0)]
    assert secant_overhead(flat, lambda r, ms: r.simulated_ms) == pytest.approx(200.0)
