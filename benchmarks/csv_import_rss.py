"""Peak RSS of ``moesim trace import --format table`` on a generated ~129 MB CSV.

Usage: PYTHONPATH=$PWD python benchmarks/csv_import_rss.py [--rows-scale 1.0] [--keep DIR]

Writes a long-table CSV (sequence, token, layer, experts as a JSON array of 8 ids, weights as a
JSON array of 8 floats; 64 sequences x 1000 tokens x 16 layers = 1,024,000 rows), then imports it
in a child process and reports that child's peak RSS (``resource.getrusage(RUSAGE_CHILDREN)``).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_csv(path: Path, sequences: int, tokens: int, layers: int, E: int = 64, k: int = 8) -> None:
    rng = np.random.default_rng(0)
    with path.open("w", encoding="utf-8") as fh:
        fh.write("sequence,token,layer,experts,weights\n")
        for s in range(sequences):
            n = tokens * layers
            ex = np.argsort(rng.random((n, E)), axis=1)[:, :k]
            w = -np.sort(-rng.random((n, k)), axis=1)
            lines = []
            for i in range(n):
                t, layer = divmod(i, layers)
                e = ", ".join(map(str, ex[i]))
                ws = ", ".join(f"{x:.6f}" for x in w[i])
                lines.append(f's{s:03d},{t},{layer},"[{e}]","[{ws}]"\n')
            fh.write("".join(lines))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sequences", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=1000)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--experts", type=int, default=64)
    ap.add_argument("--top-k", type=int, default=8)
    ap.add_argument("--csv", type=Path, help="reuse this CSV instead of generating one")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        csv = args.csv or Path(tmp) / "big.csv"
        if args.csv is None:
            write_csv(csv, args.sequences, args.tokens, args.layers, args.experts, args.top_k)
        size = csv.stat().st_size
        out = Path(tmp) / "big.moetrace"
        t0 = time.perf_counter()
        env = dict(os.environ)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "moesim.cli.main",
                "trace",
                "import",
                "-f",
                "table",
                str(csv),
                "--out",
                str(out),
            ],
            env=env,
            cwd=tmp,  # the code imported is the one PYTHONPATH names, not the current directory's
            capture_output=True,
            text=True,
        )
        secs = time.perf_counter() - t0
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        shape = (
            f" ({args.sequences}x{args.tokens}x{args.layers} rows, top-{args.top_k} of {args.experts})"
            if args.csv is None
            else f" ({args.csv.name})"
        )
        print(f"csv: {size / 1e6:.1f} MB{shape}")
        print(f"import exit {proc.returncode} in {secs:.1f} s; peak RSS {peak_kib / 1024:.0f} MiB")
        if proc.returncode:
            print(proc.stderr[-2000:])
        return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
