"""Peak memory (RSS) of each moesim command on a generated million-token trace.

    python benchmarks/bench_memory.py [--tokens 1024000] [--run-tokens N] [--csv-tokens 260000]
                                      [--policies lru,belady,...] [--only synth,stats,...] [--dir DIR]

Generates an OLMoE-shaped trace (16 layers, E=64, k=8) with ``moesim trace synth`` into a temporary
directory, then runs each command in its own child process and reads that child's peak resident
set size (``os.wait4``'s rusage, the same figure as ``/usr/bin/time -v``). Commands:

- ``synth``: ``moesim trace synth`` of the ``--tokens`` trace (1000-token sequences);
- ``stats``: ``moesim trace stats`` with the hit-rate curves (LRU and Belady, default capacities);
- ``run:<policy>``: ``moesim run`` of the default scenario on the trace, one per cache policy
  (``--run-tokens`` uses a prefix-sized trace of its own: a simulated run of a million tokens takes
  tens of CPU-minutes on a small machine);
- ``compare``: ``moesim compare`` (predictor none, LRU, plus the default Belady and oracle bounds)
  on the run trace, one worker;
- ``import-csv``: ``moesim trace import --format table`` of a long CSV (one row per token and
  layer, ``--csv-tokens`` tokens) written by this script.

Prints a table (command, wall seconds, CPU seconds, the 1-minute load average when it ended, peak
RSS, within the 2 GB goal). Nothing is timed in tests.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LIMIT_MB = 2048
POLICIES = ("lru", "fifo", "lfu", "arc", "least-stale", "pin-hot", "prophet-tiered", "belady")


def moesim(*args: str) -> list[str]:
    return [sys.executable, "-m", "moesim.cli.main", *args]


def measure(cmd: list[str], log: Path) -> tuple[float, float, float, int]:
    """(wall seconds, CPU seconds, peak RSS in MiB, exit status) of ``cmd`` run as a child process
    (CPU: user + system of the child and the workers it waited for; wall time depends on the load)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    return time.perf_counter() - t0, cpu, usage.ru_maxrss / 1024.0, proc.returncode


def synth_args(out: Path, tokens: int) -> list[str]:
    per_seq = min(1000, tokens)
    return moesim("trace", "synth", "--sequences", str(max(1, tokens // per_seq)), "--tokens", str(per_seq),
                  "--out", str(out))  # fmt: skip


def write_csv(trace_dir: Path, path: Path, tokens: int) -> None:
    """One row per (sequence, token, layer) with k expert columns, from the trace's first tokens.

    Runs in a child process (``--write-csv``): Linux reports a child's peak RSS as at least its
    parent's at fork, so this process must stay small for the figures of the commands it starts.
    """
    sys.path.insert(0, str(ROOT))
    from moesim.traces.native import load_trace

    trace = load_trace(trace_dir)
    n = min(tokens, trace.num_tokens)
    L, k = trace.meta.num_layers, trace.meta.top_k
    seq_of = np.searchsorted(np.asarray(trace.seq_offsets), np.arange(n), side="right") - 1
    pos = np.arange(n) - np.asarray(trace.seq_offsets)[seq_of]
    with open(path, "w") as fh:
        fh.write("sequence,token,layer," + ",".join(f"e{i}" for i in range(k)) + "\n")
        for start in range(0, n, 20_000):
            ex = np.asarray(trace.experts[start : min(n, start + 20_000)], dtype=np.int64)
            m = len(ex)
            rows = np.empty((m, L, 3 + k), np.int64)
            rows[:, :, 0] = seq_of[start : start + m, None]
            rows[:, :, 1] = pos[start : start + m, None]
            rows[:, :, 2] = np.arange(L)[None, :]
            rows[:, :, 3:] = ex
            np.savetxt(fh, rows.reshape(-1, 3 + k), fmt="%d", delimiter=",")


def plan(args: argparse.Namespace, work: Path) -> list[tuple[str, list[str]]]:
    big = work / "big.moetrace"
    run_trace = big if args.run_tokens >= args.tokens else work / "run.moetrace"
    steps: list[tuple[str, list[str]]] = []
    if not (args.reuse and big.exists()):
        steps.append(("synth", synth_args(big, args.tokens)))
    if run_trace != big and not (args.reuse and run_trace.exists()):
        steps.append(("synth (run trace)", synth_args(run_trace, args.run_tokens)))
    steps.append(("stats", moesim("trace", "stats", str(big), "--out", str(work / "stats"))))
    steps.append(("import-csv", moesim("trace", "import", "--format", "table", str(work / "routes.csv"),
                                       "--expert-cols", ",".join(f"e{i}" for i in range(8)), "--num-experts",
                                       "64", "--out", str(work / "csv.moetrace"), "--force")))  # fmt: skip
    for pol in args.policies:
        steps.append((f"run:{pol}", moesim("run", "--set", f"trace.path={run_trace}", "--set",
                                           f"cache.policy={pol}", "--out", str(work / f"run-{pol}"), "--quiet")))  # fmt: skip
    steps.append(("compare", moesim("compare", "--predictors", "none", "--caches", "lru", "--set",
                                    f"trace.path={run_trace}", "--out", str(work / "compare"), "-j", "1",
                                    "--quiet")))  # fmt: skip
    wanted = set(args.only) if args.only else None
    # the synth steps make the traces the others read: kept whatever --only says
    return [(name, cmd) for name, cmd in steps if wanted is None or name.split(":")[0] in wanted or name in wanted
            or name.startswith("synth")]  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=1_024_000, help="decode tokens of the generated trace")
    ap.add_argument(
        "--run-tokens", type=int, default=None, help="tokens of the trace runs use (default --tokens)"
    )
    ap.add_argument(
        "--csv-tokens", type=int, default=260_000, help="tokens written to the CSV (16 rows each)"
    )
    ap.add_argument("--policies", default=",".join(POLICIES), help="cache policies for run:<policy>")
    ap.add_argument("--only", default="", help="comma list of synth, stats, import-csv, run, compare")
    ap.add_argument("--dir", default=None, help="work directory (default: a temporary one, removed)")
    ap.add_argument("--reuse", action="store_true", help="keep traces already generated in --dir")
    ap.add_argument("--write-csv", nargs=3, metavar=("TRACE", "CSV", "TOKENS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.write_csv:
        write_csv(Path(args.write_csv[0]), Path(args.write_csv[1]), int(args.write_csv[2]))
        return 0
    args.run_tokens = args.run_tokens or args.tokens
    args.policies = [p for p in args.policies.split(",") if p]
    args.only = [o for o in args.only.split(",") if o]
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="moesim-mem-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for name, cmd in plan(args, work):
            if name == "import-csv":
                csv_args = [str(work / "big.moetrace"), str(work / "routes.csv"), str(args.csv_tokens)]
                subprocess.run([sys.executable, __file__, "--write-csv", *csv_args], check=True, cwd=ROOT)
                name = f"import-csv ({(work / 'routes.csv').stat().st_size / 2**20:.0f} MiB)"
            log = work / f"{name.split()[0].replace(':', '-')}.log"
            wall, cpu, rss, rc = measure(cmd, log)
            rows.append((name, wall, cpu, rss, rc, os.getloadavg()[0]))
            print(f"{name:<28} {wall:8.1f} s {cpu:8.1f} s CPU {rss:9.0f} MiB  rc={rc}", flush=True)
            if rc != 0:
                print(log.read_text()[-2000:], file=sys.stderr)
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\ntrace: {args.tokens:,} tokens (runs: {args.run_tokens:,}), 16 layers, E=64, k=8")
    print(f"{'command':<28} {'wall s':>8} {'CPU s':>8} {'load':>5} {'peak RSS MiB':>13}  under 2 GB")
    for name, wall, cpu, rss, rc, load in rows:
        ok = "yes" if rss < LIMIT_MB and rc == 0 else ("FAILED" if rc else "NO")
        print(f"{name:<28} {wall:8.1f} {cpu:8.1f} {load:5.1f} {rss:13.0f}  {ok}")
    return 0 if all(rss < LIMIT_MB and rc == 0 for _, _, _, rss, rc, _ in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
