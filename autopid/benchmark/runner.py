"""``autopid benchmark``: every method of every dataset with the same splits and seeds.

One job per (dataset, species, seed, method) runs in a pool of worker processes (one torch
thread each); each job trains its method, picks its working point on MC validation and
scores the common test rows. The main process aggregates the seeds into records and
writes ``benchmark.json`` (the methods of the issue), ``extra.json`` (the second-track
veto alone), ``benchmark.md`` and ``plots/*.png``.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from autopid._logging import get_logger
from autopid.benchmark.cases import Case, Preset
from autopid.benchmark.records import (
    EXTRA_METHODS,
    Measurement,
    aggregate,
    validate_records,
    write_records,
)
from autopid.errors import AutopidError

_log = get_logger(__name__)

# relative cost, for scheduling the long jobs first
_COST = {"fse": 10.0, "mda": 6.0, "mda_no_adaptation": 4.0, "mlp_imputation": 2.0, "xgboost": 2.0,
         "nsigma": 0.5, "cut": 0.5, "second_track_veto": 0.5}


def methods_for(case: Case) -> list[str]:
    """The methods of a dataset: its model family (FSE, or MDA with and without domain
    adaptation), its experiment's classic selection (n-sigma for ALICE-like tracks, the
    classic AMS selection and the veto alone for AMS-like nuclei: chosen by the roles the
    dataset maps), XGBoost and the MLP with imputation."""
    cfg = case.dataset
    roles = set(cfg.roles) if hasattr(cfg, "roles") else set()
    out = ["fse"] if cfg.family == "fse" else ["mda", "mda_no_adaptation"]
    alice_like = cfg.experiment == "alice" or {"momentum", "tpc_signal"} <= roles
    ams_like = cfg.experiment == "ams" or {"l1_charge", "inner_charge"} <= roles
    if alice_like:
        out.append("nsigma")
    if ams_like:
        out.append("cut")
    out += ["xgboost", "mlp_imputation"]
    if ams_like:
        out.append("second_track_veto")
    return out


@dataclass(frozen=True)
class Job:
    cache: str
    experiment: str
    species: str
    seed: int
    method: str
    preset: Preset
    threads: int = 1


@dataclass
class JobResult:
    job: Job
    measurements: list[Measurement] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None
    error: str | None = None


def run_job(job: Job) -> JobResult:
    """Train, score and measure one method (in a worker process)."""
    import numpy as np
    import torch

    from autopid.benchmark import methods as M
    from autopid.benchmark.measure import bins_for, measure
    from autopid.data import PreprocessedDataset

    threads_before = torch.get_num_threads()
    torch.set_num_threads(job.threads)
    t0, c0 = time.perf_counter(), time.process_time()
    res = JobResult(job)
    try:
        ds = PreprocessedDataset(job.cache)
        family = ds.manifest.get("family", "fse")
        test = M.load_test(ds, job.species, job.preset.max_test_rows)
        spec = M.training_spec(family, job.preset, job.seed, job.threads)
        torch.manual_seed(job.seed)
        np.random.seed(job.seed)
        if job.method == "mda" and not (ds.manifest["splits"]["train"].get("data") or {}).get("rows"):
            raise M.MissingInput("domain adaptation needs Data rows in the train split; the dataset has none")
        if job.method in ("fse", "mda"):
            scored = M.train_model(ds, job.species, family, spec, test)
        elif job.method == "mda_no_adaptation":
            spec = M.no_adaptation(spec)
            scored = M.train_model(ds, job.species, family, spec, test)
        elif job.method in ("xgboost", "mlp_imputation"):
            scored = M.train_learned(ds, job.species, job.method, spec, test, job.preset.baseline_trials, job.seed,
                                     job.preset.mlp_epochs)
        else:
            scored = M.train_classic(ds, job.species, job.method, spec, test)
        res.info = dict(scored.info, threshold=scored.threshold)
        res.measurements = measure(job.experiment, job.species, job.method, job.seed, test, scored,
                                   bins_for(job.experiment, test), domain_accuracy_seed=job.seed)
        res.info["kinematic"] = test.kinematic_name
        res.info["test_rows"] = {d: len(test.y[d]) for d in test.domains()}
    except M.MissingInput as exc:
        res.skipped = str(exc)
    except Exception as exc:  # reported in the summary; the other jobs go on
        res.error = f"{type(exc).__name__}: {exc}"
        res.info["traceback"] = traceback.format_exc()
    finally:
        torch.set_num_threads(threads_before)  # in-process runs leave the caller's setting alone
    res.seconds = time.perf_counter() - t0
    res.cpu_seconds = time.process_time() - c0
    return res


@dataclass
class BenchmarkResult:
    out: Path
    records: list[dict[str, Any]]
    extra: list[dict[str, Any]]
    jobs: list[JobResult]
    wall_seconds: float
    cpu_seconds: float
    header: dict[str, Any]

    @property
    def failures(self) -> list[JobResult]:
        return [j for j in self.jobs if j.error]


def _init_worker() -> None:
    import warnings

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    warnings.filterwarnings("ignore")


def run_jobs(jobs: Sequence[Job], workers: int, progress: Callable[[JobResult, int, int], None] | None = None
             ) -> list[JobResult]:
    order = sorted(jobs, key=lambda j: -_COST.get(j.method, 1.0))
    results: list[JobResult] = []
    if workers <= 1:
        for j in order:
            results.append(run_job(j))
            if progress:
                progress(results[-1], len(results), len(order))
        return results
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker) as pool:
        pending: set[Future[JobResult]] = {pool.submit(run_job, j) for j in order}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                results.append(f.result())
                if progress:
                    progress(results[-1], len(results), len(order))
    return results


def default_workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, n)


def run_benchmark(cases: Sequence[Case], out: str | Path, *, preset: Preset, seeds: int | None = None,
                  workers: int | None = None, cache_dir: str | Path | None = None, command: str | None = None,
                  plots: bool = True, progress: Callable[[JobResult, int, int], None] | None = None,
                  simulation_seconds: dict[str, float] | None = None) -> BenchmarkResult:
    """Preprocess ``cases``, run every method of each with ``seeds`` seeds and write
    ``out/benchmark.json``, ``out/extra.json``, ``out/benchmark.md`` and ``out/plots``."""
    from autopid.benchmark import plots as P
    from autopid.benchmark import tables
    from autopid.preprocess import preprocess

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = preset.seeds if seeds is None else seeds
    if seeds < 1:
        raise AutopidError("--seeds must be at least 1")
    workers = default_workers() if workers is None else workers
    t0, c0 = time.perf_counter(), time.process_time()
    load0 = os.getloadavg()
    cache_root = Path(cache_dir) if cache_dir is not None else out / "cache"
    jobs: list[Job] = []
    datasets: list[dict[str, Any]] = []
    caches: dict[str, str] = {}
    for case in cases:
        tp = time.perf_counter()
        res = preprocess(case.dataset, cache_root=cache_root)
        caches[case.dataset.name] = str(res.path)
        rows = {s: {d: (e or {}).get("rows") for d, e in res.manifest["splits"][s].items()}
                for s in res.manifest["splits"]}
        datasets.append({"experiment": case.experiment, "name": case.dataset.name, "origin": case.origin,
                         "species": list(case.species), "cache": str(res.path), "rows": rows,
                         "kinematic": res.manifest.get("kinematic"), "family": case.dataset.family,
                         "methods": methods_for(case), "preprocess_seconds": time.perf_counter() - tp,
                         "cache_hit": res.cache_hit})
        for species in case.species:
            for seed in range(seeds):
                for method in methods_for(case):
                    jobs.append(Job(str(res.path), case.experiment, species, seed, method, preset))
    _log.info("%d jobs (%d datasets, %d seeds) on %d workers", len(jobs), len(cases), seeds, workers)
    results = run_jobs(jobs, workers, progress)
    measurements = [m for r in results for m in r.measurements]
    main_ms = [m for m in measurements if m.method not in EXTRA_METHODS]
    extra_ms = [m for m in measurements if m.method in EXTRA_METHODS]
    order = {(c.experiment, s): i for i, (c, s) in enumerate((c, s) for c in cases for s in c.species)}
    records = _sorted(aggregate(main_ms, seeds), order)
    extra = _sorted(aggregate(extra_ms, seeds) + _limits(cases, caches, preset), order)
    validate_records(records, seeds=seeds)
    validate_records(extra, seeds=seeds, extra=True)
    write_records(out / "benchmark.json", records)
    write_records(out / "extra.json", extra)
    _write_jobs(out / "jobs.json", results)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0 + sum(r.cpu_seconds for r in results)
    header = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "preset": preset,
        "seeds": seeds,
        "workers": workers,
        "host": f"{platform.node()} ({default_workers()} CPUs available)",
        "load_before": load0,
        "load_after": os.getloadavg(),
        "datasets": datasets,
        "simulation_seconds": simulation_seconds or {},
    }
    result = BenchmarkResult(out, records, extra, results, wall, cpu, header)
    figures: list[Path] = []
    if plots:
        figures = P.write_plots(out / "plots", records)
    result.wall_seconds = time.perf_counter() - t0
    result.cpu_seconds = time.process_time() - c0 + sum(r.cpu_seconds for r in results)
    (out / "benchmark.md").write_text(tables.markdown(result, figures))
    return result


def _limits(cases: Sequence[Case], caches: dict[str, str], preset: Preset) -> list[dict[str, Any]]:
    """The irreducible limit of each case with fragmentation truth, on the test rows every
    method is scored on (hidden truth for Data: evaluation only)."""
    from autopid.benchmark import methods as M
    from autopid.benchmark.records import irreducible_limit
    from autopid.data import PreprocessedDataset

    out = []
    for case in cases:
        path = caches.get(case.dataset.name)
        if path is None:
            continue
        ds = PreprocessedDataset(path)
        for species in case.species:
            test = M.load_test(ds, species, preset.max_test_rows)
            for d in test.domains():
                frag = test.frag.get(d)
                if frag is None:
                    continue
                value = irreducible_limit(test.y[d], frag)
                out.append({"experiment": case.experiment, "species": species, "charge": None,
                            "method": "irreducible_limit", "domain": d, "metric": "rejection_at_90",
                            "value": value, "std": None, "bin": None})
    return out



def _write_jobs(path: Path, results: Sequence[JobResult]) -> None:
    """What each job did (working point, tuning, best epoch, time, errors with their
    traceback): for checking a number of benchmark.json."""
    import json

    rows = [{"experiment": r.job.experiment, "species": r.job.species, "seed": r.job.seed, "method": r.job.method,
             "cache": r.job.cache, "seconds": round(r.seconds, 2), "cpu_seconds": round(r.cpu_seconds, 2),
             "skipped": r.skipped, "error": r.error, "info": r.info} for r in results]
    path.write_text(json.dumps(rows, indent=1, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


_ORDER = {"mc": 0, "data": 1}


def _sorted(records: list[dict[str, Any]], order: dict[tuple[str, str], int]) -> list[dict[str, Any]]:
    from autopid.benchmark.records import METHODS, METRICS

    methods = {m: i for i, m in enumerate((*METHODS, *EXTRA_METHODS))}
    metrics = {m: i for i, m in enumerate(METRICS)}

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        b = r["bin"]
        bkey = (0, 0.0, "") if b is None else ((2, 0.0, b) if b.startswith("frag:") else (1, float(b[1:].split(",")[0]), ""))
        return (order.get((r["experiment"], r["species"]), 99), r["experiment"], r["species"], methods.get(r["method"], 99), _ORDER[r["domain"]],
                metrics.get(r["metric"], 99), 0 if r["charge"] is None else (1 if r["charge"] > 0 else 2), bkey)

    return sorted(records, key=key)
