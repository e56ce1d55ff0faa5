"""``moesim validate published``: simulate every mapped catalog case and compare with what was published.

Steps: select cases (``--subset``, ``--cases``) -> import the real routing trace of each case's model
from the shared folder once -> map each case to scenario values (``mapping.py``) -> simulate
(out-of-the-box: roofline + the source's runtime preset) -> fit one per-token overhead per platform,
leave-one-out over the platform's other rows (``errors.py``) -> the calibrated column -> summary.

The simulator is a parameter (``Simulator``: scenario values -> mean TPOT in ms) so the arithmetic is
tested with a fake one; the default runs the one run pipeline (``experiments.pipeline``).
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moesim.errors import fail
from moesim.validation.catalog import PublishedCase, PublishedSource, load_catalog
from moesim.validation.errors import (
    Row,
    abs_stats,
    err_pct,
    mean_gap,
    platform_overheads,
    secant_overhead,
)
from moesim.validation.mapping import MappedScenario, map_case, schema_keys

FORMAT = "moesim-validation-published"


@dataclass(frozen=True)
class Simulated:
    """What a simulator reports of one case: mean TPOT (ms) and, if it knows, misses per token."""

    tpot_ms: float
    misses_per_token: float | None = None


# Scenario values -> the simulated decode (a bare float is a mean TPOT in ms).
Simulator = Callable[[dict[str, Any]], "float | Simulated"]


def _simulated(x: float | Simulated) -> Simulated:
    return x if isinstance(x, Simulated) else Simulated(float(x))


# A few cases over three platforms, each with a same-platform partner for the leave-one-out fit.
CI_CASES = (
    "mixtral-offloading/t2/full/2bit/3060",
    "mixtral-offloading/t2/full/3bit/3060",
    "mixtral-offloading/t2/no-prefetch/2bit/t4",
    "mixtral-offloading/t2/no-cache/2bit/t4",
)
CI_MAX_SEQUENCES = 1
# The real routing traces per catalog model, under the shared folder: (folder, files, importer).
TRACES = {
    "mixtral-8x7b": (
        "external-traces/Mario928__speculative-moe",
        ("humaneval_2_routing.jsonl", "gsm8k_2_routing.jsonl"),
        "mixtral-jsonl",
    ),
}
# Where a fitted per-token overhead goes when the schema has the key (preferred first): a per-layer
# overhead sits inside the layers, where it can hide copies, as a runtime's framework time does.
TRACE_PLACEHOLDER = "<the model's real trace: provenance.traces>"
OVERHEAD_KEYS = ("runtime.layer_overhead_us", "runtime.token_overhead_us")
CALIBRATION_METHOD = (
    "one per-token overhead per platform (GPU), fitted leave-one-out: each case's overhead is fitted "
    "on the other mapped cases of its platform in this run, never on its own row. Where the scenario "
    "schema has runtime.layer_overhead_us (else runtime.token_overhead_us) the overhead is simulated "
    "(spread evenly over the layers) and fitted by one secant step so the fit rows' mean simulated "
    "TPOT meets their mean published TPOT; otherwise it is the mean (published - simulated) of the "
    "fit rows, added to the simulated TPOT"
)


@dataclass
class Options:
    subset: str = "all"  # all | ci
    case_ids: list[str] = field(default_factory=list)  # only these (after the subset)
    shared: Path | None = None  # the shared folder (default: ../shared of the working directory)
    trace: Path | None = None  # a .moetrace to use instead of the shared one (one model only)
    max_sequences: int | None = None  # replay only the first N sequences (ci: CI_MAX_SEQUENCES)
    command: str = ""  # as typed, for the provenance


def default_shared() -> Path:
    """``$MOESIM_SHARED``, else ``../shared`` of the working directory, else of the source checkout."""
    env = os.environ.get("MOESIM_SHARED")
    if env:
        return Path(env)
    here = Path.cwd().parent / "shared"
    checkout = Path(__file__).resolve().parents[3] / "shared"
    return here if here.is_dir() or not checkout.is_dir() else checkout


def select(cases: Sequence[PublishedCase], opts: Options) -> list[PublishedCase]:
    if opts.subset not in ("all", "ci"):
        fail(f"--subset {opts.subset!r}: choose all or ci")
    chosen = [c for c in cases if c.mapped and (opts.subset == "all" or c.id in CI_CASES)]
    if opts.case_ids:  # exactly these cases, whatever the subset
        known = {c.id: c for c in cases}
        for cid in opts.case_ids:
            if cid not in known:
                fail(f"--cases {cid!r}: no such catalog case (the ids are in docs/validation.md)")
            if not known[cid].mapped:
                fail(f"--cases {cid!r}: not mapped ({known[cid].unmapped_reason})")
        chosen = [known[cid] for cid in dict.fromkeys(opts.case_ids)]
    if not chosen:
        fail("no mapped catalog case selected; check --subset and --cases")
    return chosen


def trace_sources(model: str, opts: Options) -> list[Path]:
    """The files of ``model``'s real trace; one line naming the fix when they are absent."""
    if model not in TRACES:
        fail(f"catalog model {model!r}: no real routing trace is known for it; give --trace PATH")
    folder, files, _ = TRACES[model]
    root = (opts.shared or default_shared()) / folder
    paths = [root / f for f in files]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        fail(
            f"{missing[0]}: the real {model} routing trace is not there; pass --shared DIR (the folder "
            "holding external-traces/) or --trace PATH (a .moetrace of that model)"
        )
    return paths


def _sha256(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        if p.is_dir():
            for q in sorted(p.rglob("*")):
                if q.is_file():
                    h.update(q.read_bytes())
        else:
            h.update(p.read_bytes())
    return h.hexdigest()


def prepare_traces(models: set[str], opts: Options, tmp: Path) -> dict[str, dict[str, Any]]:
    """model -> {path, sources, sha256}: the shared trace imported into ``tmp`` (or ``--trace``)."""
    from moesim.traces.importers import import_trace
    from moesim.traces.native import save_trace

    out: dict[str, dict[str, Any]] = {}
    for model in sorted(models):
        if opts.trace is not None:
            if len(models) > 1:
                fail("--trace: the selected cases use more than one model; select one model's cases")
            if not opts.trace.exists():
                fail(f"--trace {opts.trace}: no such trace; give a .moetrace folder")
            out[model] = {
                "path": str(opts.trace),
                "sources": [str(opts.trace)],
                "sha256": _sha256([opts.trace]),
            }
            continue
        paths = trace_sources(model, opts)
        trace = import_trace(TRACES[model][2], paths)
        dest = tmp / f"{model}.moetrace"
        save_trace(trace, dest, validate=False)  # import_trace validated it
        out[model] = {
            "path": str(dest),
            "sources": [f"{TRACES[model][0]}/{p.name}" for p in paths],
            "sha256": _sha256(paths),
        }
    return out


def pipeline_simulator() -> Simulator:
    """The real simulator: the scenario values through the one run pipeline; mean TPOT (ms)."""
    from moesim.experiments.cache import RunCache
    from moesim.experiments.pipeline import run_scenario
    from moesim.experiments.scenario import load_scenario

    cache = RunCache()

    def simulate(values: dict[str, Any]) -> Simulated:
        sc = load_scenario(None, values=values)
        s = run_scenario(sc, cache).summary
        counts = s["counts"]
        return Simulated(float(s["latency"]["tpot_ms"]["mean"]), counts["misses"] / max(1, counts["tokens"]))

    return simulate


def _git_commit() -> str:
    repo = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def provenance(opts: Options, traces: dict[str, dict[str, Any]], known: frozenset[str]) -> dict[str, Any]:
    from moesim import __version__

    return {
        "command": opts.command,
        "moesim_version": __version__,
        "commit": _git_commit(),
        "machine": f"{platform.node()} ({platform.system()} {platform.machine()}, {os.cpu_count()} CPUs)",
        "python": platform.python_version(),
        "traces": {m: {"sources": t["sources"], "sha256": t["sha256"]} for m, t in traces.items()},
        "fidelity_keys_in_schema": sorted(
            k for k in known if k.startswith("runtime.") or k in _FIDELITY_KEYS
        ),
    }


_FIDELITY_KEYS = {
    "model.expert_dtype",
    "model.dense_dtype",
    "hardware.pcie_gen",
    "hardware.pcie_lanes",
    "hardware.host_memory",
    "hardware.memory_gb",
    "miss.writeback",
}


def overhead_key(known: frozenset[str]) -> str | None:
    return next((k for k in OVERHEAD_KEYS if k in known), None)


def with_overhead(values: dict[str, Any], key: str, overhead_ms: float) -> dict[str, Any]:
    """``values`` with a per-token overhead of ``overhead_ms`` under ``key`` (per layer: spread over
    the model's layers)."""
    us = overhead_ms * 1000.0
    if key == "runtime.layer_overhead_us":
        from moesim.models import get_model

        us /= get_model(str(values["model.name"])).num_layers
    return {**values, key: round(us, 3)}


@dataclass
class CaseRun:
    case: PublishedCase
    mapped: MappedScenario
    simulated_ms: float
    misses_per_token: float | None = None


def _case_record(r: CaseRun, loo: float | None, calibrated_ms: float | None, how: str) -> dict[str, Any]:
    c, pub = r.case, r.case.published.tpot_ms
    return {
        "id": c.id,
        "source": c.source,
        "table": c.table,
        "row": c.row,
        "column": c.column,
        "platform": c.setup.gpu,
        "expert_bits": c.setup.expert_bits,
        "published": {"value": c.published.value, "unit": c.published.unit, "tpot_ms": round(pub, 4)},
        "preset": r.mapped.preset,
        "out_of_the_box": {
            "tpot_ms": round(r.simulated_ms, 4),
            "err_pct": round(err_pct(r.simulated_ms, pub), 4),
        },
        "calibrated": {
            "token_overhead_ms": loo,
            "how": how,
            "tpot_ms": None if calibrated_ms is None else round(calibrated_ms, 4),
            "err_pct": None if calibrated_ms is None else round(err_pct(calibrated_ms, pub), 4),
        },
        # the imported trace lives in a temporary folder: name what it is, not where it was
        "misses_per_token": None if r.misses_per_token is None else round(r.misses_per_token, 4),
        "scenario": {**r.mapped.values, "trace.path": TRACE_PLACEHOLDER},
        "fallbacks": r.mapped.fallbacks,
        "dropped_keys": sorted(r.mapped.dropped),
    }


class _Calibrator:
    """Fits a platform overhead on some rows and applies it to a held-out case (module doc, step 5)."""

    def __init__(self, runs: list[CaseRun], simulate: Simulator, known: frozenset[str]) -> None:
        self.runs = runs
        self.rows = {r.case.id: _row(r) for r in runs}
        self.by_id = {r.case.id: r for r in runs}
        self.simulate = simulate
        self.key = overhead_key(known)
        self.memo: dict[tuple[str, float], float] = {}

    def simulate_at(self, row: Row, ms: float) -> float:
        assert self.key is not None
        k = (row.case_id, round(ms, 6))
        if k not in self.memo:
            values = with_overhead(self.by_id[row.case_id].mapped.values, self.key, ms)
            self.memo[k] = _simulated(self.simulate(values)).tpot_ms
        return self.memo[k]

    def apply(self, r: CaseRun, fit: list[Row]) -> tuple[float, float, str]:
        """(overhead ms, calibrated TPOT ms, how) for ``r`` from the rows ``fit`` (never ``r``)."""
        assert fit and all(f.case_id != r.case.id for f in fit)
        if self.key is None:
            ms = mean_gap(fit)
            how = (
                "the fit rows' mean gap, added to the simulated TPOT (no runtime overhead key in this build)"
            )
            return ms, r.simulated_ms + ms, how
        ms = secant_overhead(fit, self.simulate_at)
        if ms < 0:
            how = f"negative fit: added to the simulated TPOT ({self.key} takes no negative value)"
            return ms, r.simulated_ms + ms, how
        return ms, self.simulate_at(self.rows[r.case.id], ms), f"simulated with {self.key}"

    def leave_one_out(self) -> list[dict[str, Any]]:
        records = []
        for r in self.runs:
            fit = [o for o in self.rows.values() if o.platform == r.case.setup.gpu and o.case_id != r.case.id]
            if not fit:
                records.append(_case_record(r, None, None, "no other row of this platform selected"))
                continue
            ms, tpot, how = self.apply(r, fit)
            records.append(_case_record(r, round(ms, 6), tpot, how))
        return records

    def bitwidth_split(self) -> dict[str, Any]:
        """A stricter hold-out: per platform, fit on the rows of its narrowest expert width and test on
        the wider ones (e.g. fit on 2-bit, test on 3-bit: other copy sizes than the fit saw)."""
        cases: list[dict[str, Any]] = []
        for r in self.runs:
            bits = [o.case.setup.expert_bits for o in self.runs if o.case.setup.gpu == r.case.setup.gpu]
            known_bits = [b for b in bits if b is not None]
            if (
                r.case.setup.expert_bits is None
                or not known_bits
                or r.case.setup.expert_bits == min(known_bits)
            ):
                continue
            low = min(known_bits)
            fit = [
                _row(o)
                for o in self.runs
                if o.case.setup.gpu == r.case.setup.gpu and o.case.setup.expert_bits == low
            ]
            ms, tpot, _ = self.apply(r, fit)
            pub = r.case.published.tpot_ms
            cases.append(
                {
                    "id": r.case.id,
                    "fit_on_expert_bits": low,
                    "token_overhead_ms": round(ms, 6),
                    "tpot_ms": round(tpot, 4),
                    "err_pct": round(err_pct(tpot, pub), 4),
                }
            )
        return {"cases": cases, **abs_stats([c["err_pct"] for c in cases])}


def _row(r: CaseRun) -> Row:
    return Row(r.case.id, r.case.setup.gpu, r.case.published.tpot_ms, r.simulated_ms)


def validate_published(
    opts: Options,
    simulate: Simulator | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    catalog: tuple[dict[str, PublishedSource], list[PublishedCase]] | None = None,
) -> dict[str, Any]:
    """The summary document of the selected cases (see docs/validation.md for its fields)."""
    sources, cases = catalog if catalog is not None else load_catalog()
    chosen = select(cases, opts)
    known = schema_keys()
    simulate = simulate or pipeline_simulator()
    max_seq = (
        opts.max_sequences
        if opts.max_sequences is not None
        else (CI_MAX_SEQUENCES if opts.subset == "ci" else None)
    )
    with tempfile.TemporaryDirectory(prefix="moesim-validate-") as tmp:
        traces = prepare_traces({str(c.scenario.get("model.name")) for c in chosen}, opts, Path(tmp))
        runs = []
        for i, c in enumerate(chosen):
            if progress:
                progress(i, len(chosen), c.id)
            t = traces[str(c.scenario.get("model.name"))]
            mapped = map_case(c, sources[c.source], known, t["path"])
            if max_seq is not None:
                mapped.values["trace.max_sequences"] = max_seq
            sim = _simulated(simulate(mapped.values))
            runs.append(CaseRun(c, mapped, sim.tpot_ms, sim.misses_per_token))
        cal = _Calibrator(runs, simulate, known)
        records = cal.leave_one_out()
        split = cal.bitwidth_split()
    if progress:
        progress(len(chosen), len(chosen), "done")
    return _summary(opts, records, split, runs, cases, known, traces, max_seq)


def copy_time_check(runs: list[CaseRun]) -> list[dict[str, Any]]:
    """An independent check of the copy path: for two cases on one platform and expert width that
    differ only in how many experts they miss (no prefetch in either), the published TPOT gap over
    the gap in simulated misses per token is the time one miss costs the real system; the same for
    the simulated TPOT gives moesim's. Their ratio says how far moesim's copy cost is off."""
    out = []
    plain = [
        r for r in runs if r.case.scenario.get("predictor.name", "none") == "none" and r.misses_per_token
    ]
    for i, a in enumerate(plain):
        for b in plain[i + 1 :]:
            same = (a.case.setup.gpu, a.case.setup.expert_bits) == (
                b.case.setup.gpu,
                b.case.setup.expert_bits,
            )
            assert a.misses_per_token is not None and b.misses_per_token is not None
            dm = a.misses_per_token - b.misses_per_token
            if not same or abs(dm) < 1.0:
                continue
            pub = (a.case.published.tpot_ms - b.case.published.tpot_ms) / dm
            sim = (a.simulated_ms - b.simulated_ms) / dm
            out.append(
                {
                    "platform": a.case.setup.gpu,
                    "expert_bits": a.case.setup.expert_bits,
                    "cases": [a.case.id, b.case.id],
                    "delta_misses_per_token": round(dm, 4),
                    "published_ms_per_miss": round(pub, 4),
                    "simulated_ms_per_miss": round(sim, 4),
                    "ratio": round(pub / sim, 4) if sim > 0 else None,
                }
            )
    return out


def _summary(opts, records, split, runs, cases, known, traces, max_seq) -> dict[str, Any]:
    oob = abs_stats([r["out_of_the_box"]["err_pct"] for r in records])
    cal = abs_stats([r["calibrated"]["err_pct"] for r in records])
    rows = [_row(r) for r in runs]
    return {
        "format": FORMAT,
        "version": 1,
        "subset": opts.subset,
        "max_sequences": max_seq,
        "median_abs_err_pct": {
            "out_of_the_box": oob["median_abs_err_pct"],
            "calibrated": cal["median_abs_err_pct"],
        },
        "p90_abs_err_pct": {"out_of_the_box": oob["p90_abs_err_pct"], "calibrated": cal["p90_abs_err_pct"]},
        "max_abs_err_pct": {"out_of_the_box": oob["max_abs_err_pct"], "calibrated": cal["max_abs_err_pct"]},
        "n_cases": {"out_of_the_box": oob["n"], "calibrated": cal["n"]},
        "calibration": {
            "method": CALIBRATION_METHOD,
            "fit_on_all_rows_per_platform": platform_overheads(rows),
            "bitwidth_split": split,
        },
        "cases": records,
        "copy_time_check": copy_time_check(runs),
        "unmapped": [{"id": c.id, "reason": c.unmapped_reason} for c in cases if not c.mapped],
        "provenance": provenance(opts, traces, known),
    }
