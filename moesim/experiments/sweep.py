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
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from moesim.data import shipped_scenario
from moesim.errors import MoesimInputError, fail
from moesim.experiments.cache import RunCache
from moesim.experiments.overrides import check_key
from moesim.host import usable_cores
from moesim.io import atomic_write_json, json_finite
from moesim.metrics.table import (  # noqa: F401  (the table's helpers, re-exported for callers)
    PARAM_PREFIX,
    build_table,
    read_table,
    record_row,
    resolve_metric,
    write_table,
)
from moesim.yamlio import loads, scalar


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
                src = shipped_scenario(scenario) or src  # a shipped scenario by name
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
        """What a worker needs to run point ``index``; paths absolute (resolved from ``cwd``), so a
        worker in any directory (a Ray node) writes where the sweep's caller meant."""
        return {
            "index": index,
            "scenario": self.scenario,
            "base": self.base,
            "overrides": self.points[index],
            "cwd": self.cwd,
            "run_dir": str(Path(self.cwd, run_dir)) if run_dir is not None else None,
            "baselines": str(Path(self.cwd, baselines)) if baselines is not None else None,
        }


# -- one point (runs in a worker process; plain dicts in and out so any backend can carry it) --
def _one_line(exc: BaseException) -> str:
    if isinstance(exc, MoesimInputError):
        return " ".join(str(exc).split())
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    msg = " ".join(str(exc).split()) or "no message"
    return f"{type(exc).__name__}: {msg}{where}"


# The worker process's cache: the points it runs share loaded traces, replay groups and baselines.
_WORKER_CACHE: RunCache | None = None


def worker_cache() -> RunCache:
    global _WORKER_CACHE
    if _WORKER_CACHE is None:
        _WORKER_CACHE = RunCache()
    return _WORKER_CACHE


def run_point(task: dict[str, Any], cache: RunCache | None = None) -> dict[str, Any]:
    """Run one point (with ``cache``, default: this worker process's); never raises (an error is
    returned as the point's record)."""
    from moesim.experiments.overrides import resolve_scenario
    from moesim.experiments.pipeline import run_scenario

    t0 = time.perf_counter()
    record: dict[str, Any] = {"index": task["index"], "overrides": task["overrides"]}
    try:
        sc = resolve_scenario(task["scenario"], task["base"], task["overrides"])
        sc.cwd = task.get("cwd")  # relative paths in overrides resolve as where the sweep started
        baselines = Path(task["baselines"]) if task.get("baselines") else None
        result = run_scenario(sc, cache or worker_cache(), baselines=baselines)
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


def input_identity(plan: SweepPlan) -> dict[str, Any]:
    """What the sweep's results depend on besides the plan: the scenario file's bytes, the base
    scenario as resolved, and the sha256 of every file any point reads (trace, profile, model
    config, fitting trace, predictor files). ``--resume`` refuses when any of it changed."""
    from moesim.experiments.overrides import resolve_scenario
    from moesim.outputs import path_digest, scenario_inputs

    ident: dict[str, Any] = {"scenario_sha256": None, "base_scenario": None, "files": {}}
    if plan.scenario is not None:
        ident["scenario_sha256"] = path_digest(Path(plan.scenario))
    cwd = os.getcwd()
    try:
        os.chdir(plan.cwd)  # relative paths resolve as the workers will resolve them
        scenarios = []
        try:
            base = resolve_scenario(plan.scenario, plan.base, {})
            ident["base_scenario"] = json.loads(json.dumps(base.to_dict(), default=str))
            scenarios.append(base)
        except MoesimInputError as exc:
            ident["base_scenario"] = f"error: {exc}"
        # Only points that override a key naming files can read other files than the base.
        seen: set[str] = set()
        for point in plan.points:
            own = {k: v for k, v in point.items() if _names_files(k)}
            key = json.dumps(own, sort_keys=True, default=str)
            if not own or key in seen:
                continue
            seen.add(key)
            try:
                scenarios.append(resolve_scenario(plan.scenario, plan.base, own))
            except MoesimInputError:
                continue  # the point records its own error
        files: dict[str, str] = {}
        for sc in scenarios:
            for path in scenario_inputs(sc):
                key = str(path.resolve())
                if key not in files:
                    files[key] = path_digest(path)
        ident["files"] = dict(sorted(files.items()))
    finally:
        os.chdir(cwd)
    return ident


FILE_KEYS = (
    "trace.path",
    "model.config",
    "hardware.profile",
    "predictor.fit_trace",
    "predictor.params",
    "cache.params",
)


def _names_files(key: str) -> bool:
    """Whether overriding ``key`` can change which files a run reads (scenario_inputs)."""
    return any(key == f or key.startswith(f + ".") or f.startswith(key + ".") for f in FILE_KEYS)


def _changed_inputs(old: Any, new: dict[str, Any]) -> str | None:
    """A short account of what differs between two input identities, or None if they agree."""
    if not isinstance(old, dict):
        return "sweep.json records no input identity (written by an older moesim)"
    if old.get("scenario_sha256") != new["scenario_sha256"]:
        return "the scenario file was edited"
    if old.get("base_scenario") != new["base_scenario"]:
        return "the scenario resolves differently (a default or an included file changed)"
    old_files = old.get("files") or {}
    for path in sorted(set(old_files) | set(new["files"])):
        if old_files.get(path) != new["files"].get(path):
            what = "no longer read" if path not in new["files"] else "changed"
            return f"input {path} {what}" if path in old_files else f"input {path} is new"
    return None


IGNORED_ENTRIES = (".moesim-result", ".lock")


def _prepare_dir(
    out: Path, plan: SweepPlan, resume: bool, force: bool, inputs: dict[str, Any] | None = None
) -> None:
    manifest = plan.manifest()
    manifest["inputs"] = inputs if inputs is not None else input_identity(plan)
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
        elif old is not None and {k: old.get(k) for k in manifest if k != "inputs"} != json_finite(
            {k: v for k, v in manifest.items() if k != "inputs"}
        ):
            fail(
                f"{out}: holds a different sweep (scenario, --set or --grid differ); "
                "use the same arguments to resume, --force to start over, or another --out"
            )
        elif old is not None and (why := _changed_inputs(old.get("inputs"), manifest["inputs"])):
            fail(
                f"{out}: cannot resume: {why} since the sweep began, so its finished points would "
                "mix with new ones; --force to start over, or choose another --out"
            )
    elif any(e.name not in IGNORED_ENTRIES for e in out.iterdir()) and not (force or resume):
        fail(f"{out}: exists and is not empty; choose another --out or add --force")
    atomic_write_json(mpath, manifest)


class _DirLock:
    """An exclusive lock on DIR/.lock for the sweep's duration: a second writer is refused."""

    def __init__(self, out: Path) -> None:
        self.path = out / ".lock"
        self.fd: int | None = None

    def __enter__(self) -> _DirLock:
        try:
            import fcntl
        except ImportError:  # not on a POSIX system: no lock
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            fail(
                f"{self.path.parent}: another sweep is writing here now; wait for it, or choose another --out"
            )
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the lock; the file stays (removing it would race)
            self.fd = None


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
    kind: str = "sweep",
) -> SweepOutcome:
    """Run every unfinished point of ``plan`` into ``out`` and assemble the table. ``out`` is
    claimed first (moesim/outputs.py: never a directory moesim did not write, never an input) and
    locked while the sweep runs."""
    from moesim.outputs import claim_output, dir_kind

    if backend not in ("local", "ray"):
        fail(f"--backend {backend!r}: choose local or ray")
    if jobs is not None and jobs < 1:
        fail(f"-j {jobs}: give at least 1 worker")
    if backend == "ray":
        from moesim.optional import require

        require("ray", "--backend ray; or use --backend local")  # before anything is written
    out = Path(out)
    t0 = time.perf_counter()
    inputs = input_identity(plan)
    claim = claim_output(out, kind, force=force, inputs=[plan.scenario, *inputs["files"]])
    other_kind = claim.replaces and dir_kind(out) != kind  # --force over another kind of result
    with _DirLock(claim.open_dir(clear=other_kind)):
        _prepare_dir(out, plan, resume, force, inputs)
        return _run_prepared(
            plan, out, backend, jobs, resume, keep_runs, ray_address, progress, table_every_s, t0
        )


def _run_prepared(
    plan: SweepPlan,
    out: Path,
    backend: str,
    jobs: int | None,
    resume: bool,
    keep_runs: bool,
    ray_address: str | None,
    progress: Progress | None,
    table_every_s: float,
    t0: float,
) -> SweepOutcome:
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
    last_write = write_s = 0.0

    def on_record(rec: dict[str, Any]) -> None:
        nonlocal failed_now, last_write, write_s
        for r in [rec] + [shared_record(rec, j, plan, shared[j][1]) for j in followers.get(rec["index"], ())]:
            i = r["index"]
            atomic_write_json(point_path(out, i), {k: r[k] for k in sorted(r)})
            records[i] = json.loads(point_path(out, i).read_text(encoding="utf-8"))
            if r["status"] != "ok":
                failed_now += 1
        if progress is not None:
            progress(len(records) - len(finished), failed_now, len(todo))
        # Stream the table as points land, throttled: rewriting it per point is quadratic. A table
        # that takes long to write waits 20x its last writing time, so the rewrites (in the parent,
        # beside the workers) keep within ~5% of the sweep's CPU.
        now = time.perf_counter()
        if now - last_write >= max(table_every_s, 20 * write_s):
            write_table(out, build_table(list(records.values()), plan.keys))
            last_write = time.perf_counter()
            write_s = last_write - now

    if tasks and backend == "local" and _may_run_fast(plan):
        # Compile the fast executor's kernels once here, before the workers start: each worker then
        # loads them from numba's on-disk cache instead of compiling its own. Once they are in the
        # cache the parent leaves them alone (loading them costs ~1.5 s and it runs none).
        from moesim.engine.fast.jit import kernels_cached, warm_kernels

        if not kernels_cached():
            warm_kernels()
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


def _may_run_fast(plan: SweepPlan) -> bool:
    """Whether a point may take the fast executor: not when every point is pinned to sim."""
    base = [str(o).replace(" ", "") for o in plan.base]
    return "executor=sim" not in base or any("executor" in pt for pt in plan.points)


# -- backends --------------------------------------------------------------------------------------
def default_jobs() -> int:
    return usable_cores()


def _crash_record(task: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    return {
        "index": task["index"],
        "overrides": task["overrides"],
        "status": "error",
        "error": f"worker died: {_one_line(exc)}",
        "summary": None,
        "seconds": None,
    }


def _die_with_parent(parent: int) -> None:
    """Pool initializer: a worker ends when the sweep's process does (killed, crashed or done),
    instead of running on as an orphan."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the prctl took effect
        os._exit(1)
    if not sys.platform.startswith("linux"):
        import threading

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, daemon=True, name="moesim-parent-watch").start()


ISOLATE_AFTER = 2  # a point in flight when this many pools broke is run alone to find the culprit


def _run_local(
    tasks: list[dict[str, Any]],
    on_record: Callable[[dict], None],
    jobs: int | None,
    fn: Callable[[dict[str, Any]], dict[str, Any]] = run_point,
) -> None:
    jobs = min(jobs or default_jobs(), len(tasks))
    if jobs == 1:
        for task in tasks:  # in-process: no start-up cost, and debuggers/profilers see the run
            on_record(fn(task))
        return
    import multiprocessing

    # spawn, not fork: the parent may hold threads (progress bar, Ray) that fork would copy half-way.
    ctx = multiprocessing.get_context("spawn")
    queue = list(tasks)
    strikes: dict[int, int] = {}
    while queue:
        alone = [t for t in queue if strikes.get(t["index"], 0) >= ISOLATE_AFTER]
        queue = [t for t in queue if strikes.get(t["index"], 0) < ISOLATE_AFTER]
        for task in alone:
            _run_pool([task], on_record, 1, ctx, fn, strikes, crash_is_final=True)
        if queue:
            queue = _run_pool(queue, on_record, jobs, ctx, fn, strikes, crash_is_final=False)


def _run_pool(
    tasks: list[dict[str, Any]],
    on_record: Callable[[dict], None],
    jobs: int,
    ctx: Any,
    fn: Callable[[dict[str, Any]], dict[str, Any]],
    strikes: dict[int, int],
    crash_is_final: bool,
) -> list[dict[str, Any]]:
    """Run ``tasks`` on one pool of ``jobs`` workers, at most ``jobs`` in flight (so a worker's death
    implicates only the points then running). Returns the tasks left when a worker died: the caller
    runs them on a fresh pool, in parallel again; only points caught in repeated deaths run alone."""
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    pending = list(reversed(tasks))
    pool = ProcessPoolExecutor(
        max_workers=min(jobs, len(tasks)),
        mp_context=ctx,
        initializer=_die_with_parent,
        initargs=(os.getpid(),),
    )
    in_flight: dict[Any, dict[str, Any]] = {}
    try:
        while pending or in_flight:
            while pending and len(in_flight) < jobs:
                task = pending.pop()
                in_flight[pool.submit(fn, task)] = task
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            broken = False
            for fut in done:
                task = in_flight.pop(fut)
                try:
                    on_record(fut.result())
                except BrokenProcessPool as exc:
                    broken = True
                    strikes[task["index"]] = strikes.get(task["index"], 0) + 1
                    if crash_is_final:
                        on_record(_crash_record(task, exc))
                    else:
                        pending.append(task)
            if broken:
                for fut, task in in_flight.items():  # the pool is gone: these died with it
                    if fut.done() and not fut.cancelled() and fut.exception() is None:
                        on_record(fut.result())  # finished just before the death
                        continue
                    strikes[task["index"]] = strikes.get(task["index"], 0) + 1
                    pending.append(task)
                in_flight.clear()
                pool.shutdown(wait=True, cancel_futures=True)
                return sorted(pending, key=lambda t: t["index"])
    except BaseException:
        # Interrupted: points already recorded stay on disk for --resume; drop the queued ones.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return []


def _run_ray(
    tasks: list[dict[str, Any]], on_record: Callable[[dict], None], jobs: int | None, address: str | None
) -> None:
    from moesim.optional import require

    ray = require("ray", "--backend ray; or use --backend local")
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
