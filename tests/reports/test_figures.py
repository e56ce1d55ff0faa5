"""What a reviewer sees in the report figures: bounds drawn even when the grid holds them, series that
stay distinguishable, no chart or legend entry without data, categorical axes as bars, integers
printed as integers and bytes in GiB."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import BarContainer
from matplotlib.lines import Line2D

from moesim.reports.compare_report import _line_plot
from moesim.reports.html import HtmlReport, fmt, fmt_bytes, pyplot
from moesim.reports.style import Series, same_as_notes, series_style
from moesim.reports.sweep_report import _fig_metric


def _comp(rows: list[tuple[str, str, str, int, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "status": "ok",
                "role": role,
                "predictor": p,
                "cache": c,
                "capacity": cap,
                "hit_rate": hit,
                "waste_fraction": waste,
            }
            for p, c, role, cap, hit, waste in rows
        ]
    )


def _grid_comp() -> pd.DataFrame:
    """A comparison whose grid itself holds none + belady and the oracle: every role is 'policy'."""
    rows = []
    for cap in (64, 128, 256):
        rows += [
            ("none", "lru", "policy", cap, 0.2 + cap / 1000, math.nan),
            ("none", "lfu", "policy", cap, 0.2 + cap / 1000, math.nan),  # coincides with none + lru
            ("popularity", "lru", "policy", cap, 0.3 + cap / 1000, 0.4),
            ("none", "belady", "policy", cap, 0.5 + cap / 1000, math.nan),
            ("oracle", "lru", "policy", cap, 0.6 + cap / 1000, 0.1),
        ]
    return _comp(rows)


def _lines(fig) -> list[Line2D]:
    return [ln for ax in fig.axes for ln in ax.get_lines() if len(ln.get_xdata()) > 0]


def _legend_labels(fig) -> list[str]:
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    return [t.get_text() for lg in legends for t in lg.get_texts()]


def test_bounds_in_the_grid_are_drawn_as_bounds():
    fig = _line_plot(_grid_comp(), [("hit_rate", "hits / accesses")], "hit rate", "t")
    labels = _legend_labels(fig)
    assert "none + belady  (belady bound)" in labels
    assert "oracle + lru  (oracle bound)" in labels
    belady = next(ln for ln in _lines(fig) if ln.get_label().startswith("none + belady"))
    assert belady.get_linestyle() == "--" and belady.get_color() == "black"
    oracle = next(ln for ln in _lines(fig) if ln.get_label().startswith("oracle + lru"))
    assert oracle.get_linestyle() == ":"
    pyplot().close(fig)


def test_lines_are_distinguishable_and_coinciding_ones_say_so():
    fig = _line_plot(_grid_comp(), [("hit_rate", "hits / accesses")], "hit rate", "t")
    lines = _lines(fig)
    assert len(lines) == 5
    styles = {(ln.get_color(), ln.get_marker(), str(ln.get_linestyle())) for ln in lines}
    assert len(styles) == len(lines)
    # none + lfu and none + lru have the same points: the later one names the earlier
    assert any(lab.startswith("none + lru") and "(= none + lfu)" in lab for lab in _legend_labels(fig))
    pyplot().close(fig)
    twelve = {
        (series_style(i)["color"], series_style(i)["marker"], str(series_style(i)["ls"])) for i in range(12)
    }
    assert len(twelve) == 12


def test_same_as_notes_only_for_equal_points():
    a = Series("a", [1, 2], [0.5, 0.6])
    b = Series("b", [1, 2], [0.5, 0.6000001])
    c = Series("c", [1, 2], [0.5, 0.6])
    assert same_as_notes([a, b, c]) == ["a", "b", "c  (= a)"]


def test_series_without_values_are_left_out_and_named():
    fig = _line_plot(_grid_comp(), [("waste_fraction", "wasted / prefetched")], "waste", "t")
    labels = _legend_labels(fig)
    assert not any(lab.startswith(("none + lru", "none + lfu", "none + belady")) for lab in labels)
    assert len(_lines(fig)) == 2  # popularity + lru and the oracle
    assert "no value for: none + lfu, none + lru, none + belady  (belady bound)" in fig.axes[0].get_title()
    pyplot().close(fig)
    nothing = _grid_comp().assign(waste_fraction=math.nan)
    assert _line_plot(nothing, [("waste_fraction", "w")], "waste", "t") is None


def test_one_capacity_is_drawn_as_bars():
    comp = _grid_comp()
    fig = _line_plot(comp[comp["capacity"] == 64], [("hit_rate", "h")], "hit rate", "t")
    ax = fig.axes[0]
    assert not _lines(fig) and len(ax.patches) == 5
    assert [t.get_text() for t in ax.get_yticklabels()][-1].endswith("(oracle bound)")
    pyplot().close(fig)


def _sweep_table(predictors=("none", "oracle", "prev-token"), caps=(128, 256, 512)) -> pd.DataFrame:
    rows = []
    for p in predictors:
        for cap in caps:
            prefetches = p == "oracle"
            rows.append(
                {
                    "predictor.name": p,
                    "cache.capacity": cap,
                    "waste_fraction": 0.0 if prefetches else math.nan,
                    "hit_rate": 0.3 + cap / 1000 + (0.1 if prefetches else 0.0),
                }
            )
    return pd.DataFrame(rows)


def test_sweep_chart_leaves_out_series_without_data():
    keys = ["predictor.name", "cache.capacity"]
    fig = _fig_metric(_sweep_table(), keys, "waste_fraction", "waste")
    assert _legend_labels(fig) == ["oracle"]
    assert "none; prev-token" in fig.axes[0].get_title()
    assert fig.axes[0].get_ylim()[1] >= 1.0  # a flat 0 reads as 0 on a 0..1 axis
    pyplot().close(fig)
    assert _fig_metric(_sweep_table(predictors=("none", "prev-token")), keys, "waste_fraction", "w") is None


def test_sweep_prefers_a_numeric_x_axis_and_draws_categories_as_bars():
    fig = _fig_metric(_sweep_table(), ["predictor.name", "cache.capacity"], "hit_rate", "hit rate")
    assert fig.axes[0].get_xlabel() == "cache.capacity"
    assert len(_lines(fig)) == 3
    pyplot().close(fig)
    one_cap = _sweep_table(caps=(128,)).assign(**{"cache.policy": "lru"})
    two = pd.concat([one_cap, one_cap.assign(**{"cache.policy": "lfu", "hit_rate": 0.2})])
    fig = _fig_metric(two, ["predictor.name", "cache.policy"], "hit_rate", "hit rate")
    ax = fig.axes[0]
    assert ax.get_xlabel() in ("predictor.name", "cache.policy")
    assert not [ln for ln in _lines(fig) if len(ln.get_xdata()) > 1]  # no line across categories
    assert sum(isinstance(c, BarContainer) for c in ax.containers) == 2 or len(ax.patches) >= 6
    pyplot().close(fig)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (11714.0, "11,714"),
        (np.float64(3.0), "3"),
        (np.int64(123456), "123,456"),
        (0.25, "0.25"),
        (12.345, "12.35"),
        (math.nan, "–"),
    ],
)
def test_fmt(value, text):
    assert fmt(value) == text


def test_bytes_in_gib_in_tables():
    assert fmt_bytes(859_044 * 2**20) == "838.9 GiB"
    assert fmt_bytes(2.5 * 2**30) == "2.5 GiB"
    rep = HtmlReport("t")
    rep.table(pd.DataFrame({"bytes_h2d": [float(859_044 * 2**20)], "prefetch_issued": [11714.0]}))
    page = rep.render()
    assert "838.9 GiB" in page and "11,714<" in page and "11,714.0" not in page
    assert "class='tablewrap'" in page and "overflow-x:auto" in page
