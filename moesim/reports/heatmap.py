"""Heatmaps of a sweep metric over two swept keys (one panel per combination of the other keys)."""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from moesim.errors import fail
from moesim.io import atomic_write_bytes
from moesim.metrics.table import PARAM_PREFIX, resolve_metric
from moesim.reports.html import png_bytes, pyplot

MAX_PANELS = 16


def _order(values: pd.Series) -> list:
    uniq = list(dict.fromkeys(values.tolist()))
    try:
        return sorted(uniq)
    except TypeError:
        return uniq  # mixed types: keep grid order


def _cell(v: float) -> str:
    if v != v:
        return ""
    a = abs(v)
    if a >= 1e9:
        return f"{v / 1e9:.3g}G"
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def heatmap_figure(table: pd.DataFrame, x: str, y: str, metric: str):
    """One figure: ``metric`` over swept keys ``x`` (columns) and ``y`` (rows)."""
    col = resolve_metric(table, metric)
    xc, yc = PARAM_PREFIX + x, PARAM_PREFIX + y
    for key, c in ((x, xc), (y, yc)):
        if c not in table.columns:
            swept = [c[len(PARAM_PREFIX) :] for c in table.columns if c.startswith(PARAM_PREFIX)]
            fail(f"heatmap axis {key!r}: not a swept key; swept: {', '.join(swept)}")
    ok = table[table["status"] == "ok"]
    others = [c for c in table.columns if c.startswith(PARAM_PREFIX) and c not in (xc, yc)]
    other_vals = [_order(ok[c]) for c in others]
    combos = list(itertools.product(*other_vals)) if others else [()]
    combos = combos[:MAX_PANELS]
    xs, ys = _order(ok[xc]), _order(ok[yc])
    n = len(combos)
    ncols = min(n, 4)
    nrows = math.ceil(n / ncols)
    plt = pyplot()
    # constrained layout keeps tick labels, panel titles, the suptitle and the colour bar apart
    label_w = 0.08 * max((len(str(v)) for v in ys), default=4)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=((0.7 * len(xs) + 1.0) * ncols + label_w + 2.5, (0.5 * len(ys) + 1.2) * nrows + 1.0),
        squeeze=False,
        sharey=True,
        layout="constrained",
    )
    # bytes read as GiB (raw byte counts would print as 2.44e+11)
    scale, unit = (2**30, " (GiB)") if "bytes" in col.rsplit(".", 1)[-1] else (1, "")
    vals = pd.to_numeric(ok[col], errors="coerce") / scale
    vmin, vmax = (float(np.nanmin(vals)), float(np.nanmax(vals))) if vals.notna().any() else (0.0, 1.0)
    im = None
    for k, combo in enumerate(combos):
        ax = axes[k // ncols][k % ncols]
        sub = ok
        for c, v in zip(others, combo):
            sub = sub[sub[c] == v]
        grid = np.full((len(ys), len(xs)), np.nan)
        for _, r in sub.iterrows():
            v = pd.to_numeric(pd.Series([r[col]]), errors="coerce").iloc[0]
            grid[ys.index(r[yc]), xs.index(r[xc])] = v / scale
        im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax, origin="lower")
        ax.set_xticks(range(len(xs)))
        ax.set_xticklabels([str(v) for v in xs], rotation=45 if len(xs) > 6 else 0, fontsize=8)
        ax.set_yticks(range(len(ys)))
        ax.set_yticklabels([str(v) for v in ys], fontsize=8)
        ax.set_xlabel(x)
        if k % ncols == 0:
            ax.set_ylabel(y)
        if others:
            ax.set_title(
                ", ".join(f"{c[len(PARAM_PREFIX) :]}={v}" for c, v in zip(others, combo)), fontsize=9
            )
        if len(xs) * len(ys) <= 144:
            mid = (vmin + vmax) / 2
            for i in range(len(ys)):
                for j in range(len(xs)):
                    color = "black" if grid[i, j] > mid else "white"
                    ax.text(j, i, _cell(grid[i, j]), ha="center", va="center", fontsize=7, color=color)
    for k in range(n, nrows * ncols):
        axes[k // ncols][k % ncols].axis("off")
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.85, label=col + unit)
    fig.suptitle(f"{col}{unit} over {x} x {y}", fontsize=11)
    return fig


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def write_heatmaps(table: pd.DataFrame, x: str, y: str, metrics: list[str], out_dir: Path) -> list[Path]:
    paths = []
    for metric in metrics:
        col = resolve_metric(table, metric)
        fig = heatmap_figure(table, x, y, metric)
        path = out_dir / f"heatmap_{safe_name(col)}.png"
        atomic_write_bytes(path, png_bytes(fig))
        paths.append(path)
    return paths
