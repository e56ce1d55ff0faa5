"""Sweeps: one scenario run at many points (a grid over any scenario keys, or an explicit list).

Layout of a sweep directory::

    DIR/sweep.json        the plan: scenario, base overrides, swept keys, every point's overrides
    DIR/points/00007.json one file per finished point (written atomically): its overrides, status,
                          one-line error or the run's full summary
    DIR/results.parquet   the table: one row per finished point, sorted by point index
    DIR/results.csv       the same table as CSV
    DIR/runs/00007/       the point's full run directory (only with keep_runs)
    DIR/baselines/        on-demand baselines the points share (``run.on_demand_misses``)

The table is assembled from the point files alone, never from in-memory results, so the same plan
gives the same bytes whichever backend ran it and in whatever order points finished; ``resume``
reruns only points without a successful point file. Each point runs in its own worker, and any
exception is caught there and recorded as that point's one-line error: one bad point never loses
the others.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from moesim.errors import MoesimInputError, fail
from moesim.experiments.overrides import check_key
from moesim.io import atomic_write_json, atomic_write_text, atomic_write_with, json_finite
from moesim.yamlio import loads, scalar

SECTION_ORDER = ("counts", "latency", "traffic", "prefetch", "cache", "provenance")
LEAD_COLUMNS = ("point", "status", "error")
PARAM_PREFIX = "param."


# -- the plan ------------------------------------------------------------------------------------
def parse_grid_arg(text: str) -> tuple[str, list[Any]]:
    """``KEY=V1,V2,...`` (each value read as YAML, like ``--set``), or ``KEY=[v1, {a: 1}, ...]``
    for values that contain commas."""
    if "=" not in text:
        fail(f"--grid {text!r}: expected KEY=V1,V2,..., e.g. --grid cache.capacity=128,256")
    key, _, rest = text.partition("=")
    key = key.strip()
    rest = rest.strip()
    if rest.startswith("["):
        try:
            values = loads(rest, f"--grid {key}")  # strict YAML, as for --set and scenario files
        except yaml.YAMLError as exc:
            fail(f"--grid {key}: {rest!r} is not a YAML list ({getattr(exc, 'problem', exc)})")
        if not isinstance(values, list):
            fail(f"--grid {key}: expected a list of values")
    else:
        parts = [p.strip() for p in rest.split(",")]
        if any(p == "" for p in parts):
            fail(f"--grid {key}: empty value in {rest!r}; give V1,V2,... with no empty entries")
        values = []
        for p in parts:
            values.append(scalar(p, f"--grid {key}"))
    if not values:
        fail(f"--grid {key}: give at least one value")
    return key, values


def parse_grid(texts: Sequence[str]) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for text in texts:
        key, values = parse_grid_arg(text)
        if key in grid:
            fail(f"--grid {key}: given twice; list all its values in one --grid")
        grid[key] = values
    return grid


def expand_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination, the last key varying fastest (the point index follows this order)."""
    keys = list(grid)
    for key in keys:
        if len(grid[key]) == 0:
            fail(f"--grid {key}: give at least one value")
    return [dict(zip(keys, combo)) for combo in itertools.product(*(list(grid[k]) for k in keys))]


@dataclass
class SweepPlan:
    scenario: str | None  # absolute path of the scenario YAML, None = the built-in default
    base: list[str]  # --set texts applied to every point before its own overrides
    keys: list[str]  # the swept keys, in column order
    points: list[dict[str, Any]]  # per point: dotted key -> value
    cwd: str = field(default_factory=os.getcwd)  # relative paths in overrides resolve from here

    @classmethod
    def from_grid(
        cls, scenario: str | Path | None, grid: Mapping[str, Sequence[Any]], base: Sequence[str] = ()
    ) -> SweepPlan:
        return cls.from_points(scenario, expand_grid(grid), list(grid), base)

    @classmethod
    def from_points(
        cls,
        scenario: str | Path | None,
        points: Sequence[Mapping[str, Any]],
        keys: Sequence[str] | None = None,
        base: Sequence[str] = (),
    ) -> SweepPlan:
        if not points:
            fail("sweep: no points to run")
        if keys is None:
            keys = list(dict.fromkeys(k for p in points for k in p))
        for key in keys:
            check_key(key)
        for text in base:
            check_key(text.partition("=")[0].strip(), "--set")
        path: str | None = None
        if scenario is not None:
            src = Path(scenario).expanduser()
            if not src.is_file():
                fail(f"{scenario}: scenario file not found; give a path to a YAML scenario (see scenarios/)")
            path = str(src.resolve())
        # JSON round trip: the plan is compared with sweep.json on resume and sent to workers.
        pts = json.loads(json.dumps([dict(p) for p in points]))
        return cls(path, list(base), list(keys), pts)

    def manifest(self) -> dict[str, Any]:
        return {
            "format": "moesim-sweep/1",
            "scenario": self.scenario,
            "base_overrides": self.base,
            "keys": self.keys,
            "points": self.points,
        }

    def task(self, index: int, run_dir: Path | None, baselines: Path | None = None) -> dict[str, Any]:
        return {
            "index": index,
            "scenario": self.scenario,
            "base": self.base,
            "overrides": self.points[index],
            "cwd": self.cwd,
            "run_dir": str(run_dir) if run_dir is not None else None,
            "baselines": str(baselines) if baselines is not None else None,
        }


# -- one point (runs in a worker process; plain dicts in and out so any backend can carry it) --
def _one_line(exc: BaseException) -> str:
    if isinstance(exc, MoesimInputError):
        return " ".join(str(exc).split())
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    msg = " ".join(str(exc).split()) or "no message"
    return f"{type(exc).__name__}: {msg}{where}"


def run_point(task: dict[str, Any]) -> dict[str, Any]:
    """Run one point; never raises (an error is returned as the point's record)."""
    from moesim.experiments.overrides import resolve_scenario
    from moesim.experiments.run import run_scenario

    t0 = time.perf_counter()
    record: dict[str, Any] = {"index": task["index"], "overrides": task["overrides"]}
    try:
        if task.get("cwd") and os.path.isdir(task["cwd"]):
            os.chdir(task["cwd"])
        sc = resolve_scenario(task["scenario"], task["base"], task["overrides"])
        result = run_scenario(sc, baselines=Path(task["baselines"]) if task.get("baselines") else None)
        if task.get("run_dir"):
            result.write(task["run_dir"])
        record.update(status="ok", error=None, summary=result.summary)
    except Exception as exc:  # noqa: BLE001 - a point's failure is data, not a crash of the sweep
        record.update(status="error", error=_one_line(exc), summary=None)
    record["seconds"] = round(time.perf_counter() - t0, 3)
    return record


def shared_runs(plan: SweepPlan, indices: Sequence[int]) -> dict[int, tuple[int, dict[str, Any]]]:
    """Points whose run is another's: point -> (the first point with the same run, its own scenario).

    Two points share a run when their resolved scenarios are equal once the predictor section of a
    predictor that never predicts (``Predictor.predicts``) is cut to what still matters (its name
    and the training trace, which cache sizing may read). A point that does not resolve here runs
    on its own and records its error.
    """
    from moesim.experiments.overrides import resolve_scenario
    from moesim.policies.registries import PREDICTORS

    first: dict[str, int] = {}
    shared: dict[int, tuple[int, dict[str, Any]]] = {}
    for i in indices:
        try:
            sc = resolve_scenario(plan.scenario, plan.base, plan.points[i])
            own = sc.to_dict()
            run = dict(own)
            if not PREDICTORS.get(sc.predictor.name).predicts:
                run["predictor"] = {"name": sc.predictor.name, "fit_trace": sc.predictor.fit_trace}
            ident = json.dumps(run, sort_keys=True, default=str)
        except Exception:  # noqa: BLE001 - the worker reports it, as for any point
            continue
        if ident in first:
            shared[i] = (first[ident], own)
        else:
            first[ident] = i
    return shared


def shared_record(
    rec: dict[str, Any], index: int, plan: SweepPlan, scenario: dict[str, Any]
) -> dict[str, Any]:
    """Point ``index``'s record from the run it shares with ``rec``'s point: the same results, with
    its own overrides and scenario in the provenance."""
    out = dict(rec, index=index, overrides=plan.points[index], same_run_as=rec["index"])
    if rec.get("summary"):
        summary = json.loads(json.dumps(rec["summary"]))
        summary["provenance"]["scenario"] = json.loads(json.dumps(scenario))
        out["summary"] = summary
    return out


# -- the table -------------------------------------------------------------------------------------
def _flatten(prefix: str, obj: Any, out: dict[str, Any]) -> None:
    if isinstance(obj, dict) and obj:
        for k in sorted(obj):
            _flatten(f"{prefix}.{k}" if prefix else str(k), obj[k], out)
    elif isinstance(obj, (dict, list, tuple)):
        out[prefix] = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    else:
        out[prefix] = obj


def _param_cell(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


def record_row(record: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    row: dict[str, Any] = {"point": record["index"], "status": record["status"], "error": record["error"]}
    for key in keys:
        row[PARAM_PREFIX + key] = _param_cell(record["overrides"].get(key))
    if record.get("summary"):
        _flatten("", record["summary"], row)
    return row


def _column_order(columns: Iterable[str], keys: Sequence[str]) -> list[str]:
    lead = list(LEAD_COLUMNS) + [PARAM_PREFIX + k for k in keys]
    rest = sorted(set(columns) - set(lead))

    def rank(c: str) -> tuple[int, str]:
        sec = c.split(".", 1)[0]
        return (SECTION_ORDER.index(sec) if sec in SECTION_ORDER else len(SECTION_ORDER), c)

    return lead + sorted(rest, key=rank)


def _uniform(series: pd.Series) -> pd.Series:
    # Parquet needs one type per column; a key swept over mixed types (e.g. 64 and "auto") becomes text.
    vals = series.dropna()
    kinds = {type(v) for v in vals}
    if len(kinds) <= 1 or kinds <= {int, float}:
        return series
    return series.map(lambda v: None if v is None or (isinstance(v, float) and v != v) else json.dumps(v))


def build_table(records: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> pd.DataFrame:
    rows = [record_row(r, keys) for r in sorted(records, key=lambda r: r["index"])]
    cols = _column_order({c for r in rows for c in r}, keys)
    df = pd.DataFrame(rows, columns=cols)
    for c in df.columns:
        if df[c].dtype == object:
            df[c] = _uniform(df[c])
    return df.reset_index(drop=True)


# -- the directory ---------------------------------------------------------------------------------
def point_path(out: Path, index: int) -> Path:
    return out / "points" / f"{index:05d}.json"


def load_records(out: Path, plan: SweepPlan) -> dict[int, dict[str, Any]]:
    """Finished point files that belong to this plan (same index and overrides)."""
    found: dict[int, dict[str, Any]] = {}
    pdir = out / "points"
    if not pdir.is_dir():
        return found
    for f in sorted(pdir.glob("*.json")):
        try:
            rec = json.loads(f.read_text(encoding="utf-8"))
            i = int(rec["index"])
        except (ValueError, KeyError, TypeError, OSError):
            continue  # a foreign or damaged file is not a finished point
        # on disk non-finite values are the strings "inf"/"-inf"/"nan" (moesim.io.json_finite)
        if 0 <= i < len(plan.points) and rec.get("overrides") == json_finite(plan.points[i]):
            found[i] = rec
    return found


def write_table(out: Path, df: pd.DataFrame) -> None:
    atomic_write_with(out / "results.parquet", lambda p: df.to_parquet(p, index=False))
    atomic_write_text(out / "results.csv", df.to_csv(index=False, lineterminator="\n"))


def read_table(out: str | Path) -> pd.DataFrame:
    return pd.read_parquet(Path(out) / "results.parquet")


@dataclass
class SweepOutcome:
    out: Path
    table: pd.DataFrame
    ran: int  # points finished now
    skipped: int  # points already finished (resume)
    failed: list[tuple[int, str]]  # (point, error) over the whole table
    seconds: float
    shared: int = 0  # of ``ran``, points that took another point's run (see shared_runs)

    @property
    def ok(self) -> bool:
        return not self.failed


def _prepare_dir(out: Path, plan: SweepPlan, resume: bool, force: bool) -> None:
    manifest = plan.manifest()
    mpath = out / "sweep.json"
    if mpath.is_file():
        try:
            old = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if force:
            shutil.rmtree(out / "points", ignore_errors=True)
            shutil.rmtree(out / "runs", ignore_errors=True)
            shutil.rmtree(out / "baselines", ignore_errors=True)
        elif not resume:
            fail(
                f"{out}: already holds a sweep; add --resume to finish it, --force to start over, "
                "or choose another --out"
            )
        elif old is not None and {k: old.get(k) for k in manifest} != json_finite(manifest):
            fail(
                f"{out}: holds a different sweep (scenario, --set or --grid differ); "
                "use the same arguments to resume, --force to start over, or another --out"
            )
    elif out.exists() and any(out.iterdir()) and not (force or resume):
        fail(f"{out}: exists and is not empty; choose another --out or add --force")
    atomic_write_json(mpath, manifest)


Progress = Callable[[int, int, int], None]  # (done, failed, total)


def run_sweep(
    plan: SweepPlan,
    out: str | Path,
    backend: str = "local",
    jobs: int | None = None,
    resume: bool = False,
    force: bool = False,
    keep_runs: bool = False,
    ray_address: str | None = None,
    progress: Progress | None = None,
    table_every_s: float = 2.0,
) -> SweepOutcome:
    """Run every unfinished point of ``plan`` into ``out`` and assemble the table."""
    if backend not in ("local", "ray"):
        fail(f"--backend {backend!r}: choose local or ray")
    if jobs is not None and jobs < 1:
        fail(f"-j {jobs}: give at least 1 worker")
    out = Path(out)
    t0 = time.perf_counter()
    _prepare_dir(out, plan, resume, force)
    done = load_records(out, plan) if resume else {}
    finished = {i for i, r in done.items() if r.get("status") == "ok"}
    records: dict[int, dict[str, Any]] = {i: done[i] for i in finished}
    todo = [i for i in range(len(plan.points)) if i not in finished]
    # Points that resolve to the same run (e.g. predictor "none" at several horizons) run once;
    # with keep_runs every point writes its own run directory, so every point runs.
    shared = {} if keep_runs else shared_runs(plan, todo)
    tasks = [
        plan.task(i, out / "runs" / f"{i:05d}" if keep_runs else None, out / "baselines")
        for i in todo
        if i not in shared
    ]
    followers: dict[int, list[int]] = {}
    for j, (lead, _) in shared.items():
        followers.setdefault(lead, []).append(j)
    failed_now = 0
    last_write = 0.0

    def on_record(rec: dict[str, Any]) -> None:
        nonlocal failed_now, last_write
        for r in [rec] + [shared_record(rec, j, plan, shared[j][1]) for j in followers.get(rec["index"], ())]:
            i = r["index"]
            atomic_write_json(point_path(out, i), {k: r[k] for k in sorted(r)})
            records[i] = json.loads(point_path(out, i).read_text(encoding="utf-8"))
            if r["status"] != "ok":
                failed_now += 1
        if progress is not None:
            progress(len(records) - len(finished), failed_now, len(todo))
        # Stream the table as points land, throttled: rewriting it per point is quadratic.
        now = time.perf_counter()
        if now - last_write >= table_every_s:
            write_table(out, build_table(list(records.values()), plan.keys))
            last_write = time.perf_counter()

    if tasks:
        if backend == "ray":
            _run_ray(tasks, on_record, jobs, ray_address)
        else:
            _run_local(tasks, on_record, jobs)
    # Assemble from the files on disk: byte-identical whatever the backend or completion order.
    records = load_records(out, plan)
    table = build_table(list(records.values()), plan.keys)
    write_table(out, table)
    failed = [(int(r["point"]), str(r["error"])) for r in table.to_dict("records") if r["status"] != "ok"]
    return SweepOutcome(out, table, len(todo), len(finished), failed, time.perf_counter() - t0, len(shared))


# -- backends --------------------------------------------------------------------------------------
def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _crash_record(task: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    return {
        "index": task["index"],
        "overrides": task["overrides"],
        "status": "error",
        "error": f"worker died: {_one_line(exc)}",
        "summary": None,
        "seconds": None,
    }


def _run_local(tasks: list[dict[str, Any]], on_record: Callable[[dict], None], jobs: int | None) -> None:
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    jobs = min(jobs or default_jobs(), len(tasks))
    if jobs == 1:
        for task in tasks:  # in-process: no start-up cost, and debuggers/profilers see the run
            on_record(run_point(task))
        return
    import multiprocessing

    # spawn, not fork: the parent may hold threads (progress bar, Ray) that fork would copy half-way.
    ctx = multiprocessing.get_context("spawn")
    pending = list(tasks)
    broken: list[dict[str, Any]] = []
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx)
    try:
        futures = {pool.submit(run_point, t): t for t in pending}
        for fut in as_completed(futures):
            try:
                on_record(fut.result())
            except BrokenProcessPool:
                broken.append(futures[fut])
    except BaseException:
        # Interrupted: points already recorded stay on disk for --resume; drop the queued ones.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    # A worker that died (a crash, not an exception) takes the pool's other in-flight points with
    # it; rerun those one per fresh single-worker pool so only the culprit is recorded as failed.
    for task in sorted(broken, key=lambda t: t["index"]):
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            try:
                on_record(pool.submit(run_point, task).result())
            except BrokenProcessPool as exc:
                on_record(_crash_record(task, exc))


def _run_ray(
    tasks: list[dict[str, Any]], on_record: Callable[[dict], None], jobs: int | None, address: str | None
) -> None:
    try:
        import ray
    except ImportError:
        fail(
            "--backend ray: the ray package is not installed; pip install 'ray[default]' (or use --backend local)"
        )
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address:
            kwargs["address"] = address
        else:
            kwargs["num_cpus"] = jobs or default_jobs()
        ray.init(**kwargs)
        started = True
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(run_point)
        refs = {remote.remote(t): t for t in tasks}
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            for ref in ready:
                task = refs.pop(ref)
                try:
                    rec = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a lost worker is that point's failure
                    rec = _crash_record(task, exc)
                on_record(rec)
    finally:
        if started:
            ray.shutdown()


# -- helpers for callers ---------------------------------------------------------------------------
def summary_line(outcome: SweepOutcome) -> str:
    n = len(outcome.table)
    ok = n - len(outcome.failed)
    parts = [f"{n} points: {ok} ok, {len(outcome.failed)} failed"]
    if outcome.skipped:
        parts.append(f"{outcome.skipped} already finished (resumed), {outcome.ran} run now")
    if outcome.shared:
        parts.append(f"{outcome.shared} shared another point's run")
    return "; ".join(parts) + f"; {outcome.seconds:.1f} s"


def resolve_metric(table: pd.DataFrame, name: str) -> str:
    """A column by its full name (``latency.tpot_ms.p99``) or a unique suffix (``tpot_ms.p99``)."""
    if name in table.columns:
        return name
    matches = [c for c in table.columns if c.endswith("." + name)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        fail(f"metric {name!r}: no such column; e.g. counts.hit_rate, latency.tpot_ms.p99, traffic.bytes_h2d")
    fail(f"metric {name!r}: ambiguous, matches {', '.join(matches)}")
    raise AssertionError  # unreachable
