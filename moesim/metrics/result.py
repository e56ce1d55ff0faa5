"""RunResult: one schema for both executors, and its files.

``summary.json`` holds only figures that follow from the inputs, so reruns are byte-identical;
wall-clock figures go to ``wallclock.json``. ``RunResult.read`` is the one reader of a run
directory (reports go through it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pandas as pd

from moesim.errors import fail
from moesim.io import atomic_dir, atomic_write_json, dumps_json
from moesim.metrics.frame_csv import write_frame_csv
from moesim.metrics.summary import Summary
from moesim.readers import (
    RUN_TABLE_COLUMNS,
    check_run_summary,
    check_table_columns,
    read_json_object,
    read_result_table,
)


def _read_table(run_dir: Path, name: str) -> pd.DataFrame | None:
    for ext in ("parquet", "csv"):
        path = run_dir / f"{name}.{ext}"
        if path.is_file():
            table = read_result_table(path)
            check_table_columns(table, path, RUN_TABLE_COLUMNS[name])
            return table
    return None


@dataclass
class RunResult:
    summary: Summary
    tokens: pd.DataFrame  # one row per decode step of a batch group
    layers: pd.DataFrame  # one row per MoE layer
    wallclock: dict[str, Any] = field(default_factory=dict)
    decisions: list[tuple] | None = None  # the policy core's decision log, when recorded
    extras: pd.DataFrame | None = None  # per useful prefetch: lead_ms, slack_ms (run_extras.parquet)
    timeline: list[dict] | None = None  # executor events when asked for (not written; see reports.timeline)

    def write(self, out_dir: str | Path) -> Path:
        """Write every file into ``out_dir`` at once (the directory is swapped in whole)."""
        out = Path(out_dir)

        def build(tmp: Path) -> None:
            (tmp / "summary.json").write_text(dumps_json(self.summary), encoding="utf-8")
            write_frame_csv(self.tokens, tmp / "tokens.csv")
            write_frame_csv(self.layers, tmp / "layers.csv")
            self.tokens.to_parquet(tmp / "tokens.parquet", index=False)
            self.layers.to_parquet(tmp / "layers.parquet", index=False)
            (tmp / "wallclock.json").write_text(dumps_json(self.wallclock), encoding="utf-8")
            if self.extras is not None:
                self.extras.to_parquet(tmp / "run_extras.parquet", index=False)

        atomic_dir(out, build)
        return out

    @classmethod
    def read(cls, run_dir: str | Path) -> RunResult:
        """The run written into ``run_dir`` by ``write`` (tables as .parquet, or .csv as a fallback;
        no decision log or timeline, which are never written)."""
        run_dir = Path(run_dir)
        spath = run_dir / "summary.json"
        if not spath.is_file():
            fail(
                f"{run_dir}: no summary.json; give a directory written by moesim run --out (or a sweep --out)"
            )
        doc = read_json_object(spath, "run summary", "re-create the result")
        check_run_summary(doc, spath)
        summary = cast(Summary, doc)
        tokens = _read_table(run_dir, "tokens")
        layers = _read_table(run_dir, "layers")
        if tokens is None or layers is None:
            fail(f"{run_dir}: tokens and layers tables (.parquet or .csv) are missing")
        wpath = run_dir / "wallclock.json"
        wallclock = read_json_object(wpath, "wall-clock figures") if wpath.is_file() else {}
        return cls(summary, tokens, layers, wallclock, extras=_read_table(run_dir, "run_extras"))


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_json(path, obj)
