"""``moesim trace export`` on a generated OLMoE-shaped trace (L=16, E=64, k=8).

    python benchmarks/bench_export.py [--tokens 1000000] [--format libcachesim|parquet] [--out FILE]

Builds the trace in memory (uniform routing, 1,000-token sequences), exports it once and prints the
wall time, the file size and the process's peak RSS before and after the export (run one format per
process: the peak is process-wide).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from moesim.traces.export import export
from moesim.traces.trace import Trace, TraceMeta

L, E, K = 16, 64, 8


def build(tokens: int, seed: int = 0) -> Trace:
    rng = np.random.default_rng(seed)
    ex = np.empty((tokens, L, K), np.int16)
    for a in range(0, tokens, 20_000):
        r = rng.random((min(20_000, tokens - a), L, E), dtype=np.float32)
        ex[a : a + len(r)] = np.argpartition(r, K, axis=2)[:, :, :K]  # k distinct experts
    off = np.append(np.arange(0, tokens, 1000, dtype=np.int64), tokens)
    return Trace(TraceMeta("olmoe-1b-7b", L, E, K, domains=("g",)), ex, off, np.zeros(len(off) - 1, np.int16))


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--format", choices=("libcachesim", "parquet"), default="libcachesim")
    ap.add_argument("--out", type=Path, default=None, help="default: a temporary file, removed after")
    args = ap.parse_args()
    trace = build(args.tokens)
    before = peak_mib()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / f"trace.{args.format}"
        t0 = time.perf_counter()
        info = export(trace, args.format, out)
        secs = time.perf_counter() - t0
        size = out.stat().st_size
    print(
        f"{args.format}: {args.tokens:,} tokens, {info.records:,} records, {size / 1e6:,.0f} MB in {secs:.1f} s; "
        f"peak RSS {before:,.0f} MiB after building the trace, {peak_mib():,.0f} MiB after the export"
    )


if __name__ == "__main__":
    main()
