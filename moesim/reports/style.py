"""Plot styling shared by the reports: series that stay distinguishable when they overlap, and
categorical axes drawn as grouped bars rather than lines."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Colour, marker and line style all change from one series to the next (colour-blind safe tab10
# colours; markers differ in shape so that coinciding series still show both).
_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "*", "p"]
_LINESTYLES = ["-", "--", "-.", (0, (1, 1.2)), (0, (5, 1.5, 1, 1.5, 1, 1.5))]
# Markers shrink along the series so that a later one drawn on an earlier one leaves it visible.
_SIZES = [8.5, 7.5, 6.5, 5.5, 4.5]


def series_style(i: int) -> dict[str, Any]:
    """Matplotlib keyword arguments of the i-th series (distinct colour, marker and line style)."""
    return {
        "color": _COLORS[i % len(_COLORS)],
        "marker": _MARKERS[i % len(_MARKERS)],
        "ls": _LINESTYLES[i % len(_LINESTYLES)],
        "ms": _SIZES[i % len(_SIZES)],
        "mfc": "none" if i % 2 else _COLORS[i % len(_COLORS)],
        "lw": 1.4,
    }


@dataclass
class Series:
    label: str
    xs: list[Any]
    ys: list[float]
    style: dict[str, Any] | None = None


def has_data(ys: Sequence[float]) -> bool:
    return any(y is not None and not (isinstance(y, float) and math.isnan(y)) for y in ys)


def same_as_notes(series: Sequence[Series]) -> list[str]:
    """Each series' label, with ``(= <earlier label>)`` when its points equal an earlier one's:
    coinciding lines otherwise hide each other."""
    labels = []
    for i, s in enumerate(series):
        twin = next(
            (
                o.label
                for o in series[:i]
                if list(o.xs) == list(s.xs) and _close(o.ys, s.ys) and has_data(s.ys)
            ),
            None,
        )
        labels.append(f"{s.label}  (= {twin.split('  (')[0]})" if twin else s.label)
    return labels


def _close(a: Sequence[float], b: Sequence[float]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        xn, yn = _nan(x), _nan(y)
        if xn != yn or (not xn and not math.isclose(float(x), float(y), rel_tol=1e-9, abs_tol=1e-12)):
            return False
    return True


def _nan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def draw_lines(ax: Any, series: Sequence[Series]) -> None:
    """One line per series over a numeric x axis."""
    for i, (s, label) in enumerate(zip(series, same_as_notes(series))):
        ax.plot(s.xs, s.ys, label=label, **(s.style or series_style(i)))


def draw_grouped_bars(ax: Any, categories: Sequence[Any], series: Sequence[Series]) -> None:
    """Grouped bars over a categorical x axis (a line between categories would mean nothing)."""
    n = max(len(series), 1)
    width = 0.8 / n
    for i, (s, label) in enumerate(zip(series, same_as_notes(series))):
        style = s.style or series_style(i)
        pos = {c: k for k, c in enumerate(categories)}
        xs = [pos[x] - 0.4 + width * (i + 0.5) for x in s.xs]
        ys = [float("nan") if _nan(y) else y for y in s.ys]
        bars = ax.bar(
            xs, ys, width=width * 0.92, color=style["color"], label=label, edgecolor="white", lw=0.5
        )
        if len(series) * len(categories) <= 24:
            ax.bar_label(bars, labels=[f"{y:.3g}" if not _nan(y) else "" for y in ys], fontsize=7, padding=1)
    ax.set_xticks(range(len(categories)))
    ax.set_xticklabels(
        [str(c) for c in categories],
        rotation=30 if len(categories) > 4 else 0,
        ha="right" if len(categories) > 4 else "center",
    )


def fraction_axis(ax: Any, ys: Sequence[float]) -> None:
    """A y axis from 0 to 1 for flat fractions, so that a constant series reads as its value, not as noise."""
    vals = [float(y) for y in ys if not _nan(y)]
    # only when (nearly) flat: a wider spread keeps the autoscaled axis, which shows the differences
    if vals and min(vals) >= 0 and max(vals) <= 1 and max(vals) - min(vals) < 0.05:
        ax.set_ylim(-0.02, 1.02)


def legend_below(fig: Any, axes: Sequence[Any], ncol: int = 2) -> None:
    """One legend for the figure, under the panels (beside them it would squeeze narrow axes)."""
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(
            handles,
            labels,
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            ncol=ncol,
            fontsize=8,
            frameon=False,
        )
