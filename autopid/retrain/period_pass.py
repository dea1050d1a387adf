"""One retraining pass for one period, restartable step by step.

Steps (each recorded in the state database as ``step``):

1. ``preprocessed``: the period's files through Dask into the cache (a re-run is a hit).
2. ``searched``: a Ray Tune search over the job's space, warm-started with the best
   configurations of the model now serving. The search directory is
   ``<work_dir>/<job>/<period>/search``: a run taken over after a crash resumes it
   (``run_search(resume_dir=...)``) or reuses it when it finished.
3. ``evaluated``: the candidate exported to ONNX (parity checked) and, with the serving
   model, evaluated on the SAME held-out rows of the new period; the promotion gate
   decides, and the decision is recorded with its numbers.
4. ``published``: a promoted candidate is published with the period's run range as
   validity and a ``retrain`` section (job, period, decision, search points, outcome
   ``promoted``) in its metadata; or ``extended``: the candidate was rejected and the
   serving model's validity is extended to the period's runs (a new registry entry with
   the serving model's files, ``model_of`` naming it, outcome ``kept``), so that every
   run of every complete period has a model.

Exactly once: the registry entry of a (job, period), promoted or extended, is published
with ``once_key = retrain:<job>:<period>``; the registry checks the key under its publish
lock, atomically with the rename, so a (job, period) is published once whatever the
timing. At the start of every attempt (and before publishing) the registry is searched
for it too: a run taken over after its owner died after publishing finds it and records
it instead of publishing again.

Nothing left behind: the candidate is exported into ``<work_dir>/<job>/<period>/
.candidate.staging-<pid>.<start>.<random>@<host>`` and renamed to ``candidate``; a
staging directory whose owner process is gone is removed at the start of the next pass.

Test hook (documented, for the crash tests only): ``AUTOPID_RETRAIN_TEST_PAUSE_AFTER=STEP``
makes the pass sleep ``AUTOPID_RETRAIN_TEST_PAUSE_S`` seconds (default 3600) after STEP,
with its lease still renewed, so that a test can kill the process at a known point.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from autopid._logging import get_logger
from autopid.config import dump_yaml
from autopid.errors import AutopidError, InputError
from autopid.publish.registry import AlreadyPublished, ModelVersion, Registry, make_owned_dir, remove_stale_dirs
from autopid.retrain.job import RetrainJob
from autopid.retrain.lease import Heartbeat
from autopid.retrain.periods import Period
from autopid.retrain.serving import (KEPT, PROMOTED, RETRAIN_KEY, find_publication, outcome, publish_key,
                                     serving_configs, serving_version)
from autopid.retrain.state import REJECTED, SUCCEEDED, RunRow, StateStore

_log = get_logger(__name__)

PAUSE_ENV = "AUTOPID_RETRAIN_TEST_PAUSE_AFTER"
PAUSE_S_ENV = "AUTOPID_RETRAIN_TEST_PAUSE_S"
CANDIDATE = "candidate"
CANDIDATE_STAGING = f".{CANDIDATE}.staging-"
SEARCHING = threading.Event()  # set while a search runs in this process (SIGTERM interrupts it: scheduler.py)


@dataclass
class PassResult:
    job: str
    period: str
    status: str
    published: str | None
    decision: dict[str, Any] | None
    timings: dict[str, float] = field(default_factory=dict)


def work_dir(job: RetrainJob, period: str) -> Path:
    return Path(job.state.work_dir) / job.name / period


def clean_work_dir(job: RetrainJob) -> list[Path]:
    """Remove the candidate staging directories of ``job`` whose owner process is gone
    (a killed export); returns them."""
    root = Path(job.state.work_dir) / job.name
    removed: list[Path] = []
    try:
        periods = [d for d in root.iterdir() if d.is_dir()] if root.is_dir() else []
    except OSError:
        return removed
    for d in periods:
        removed += remove_stale_dirs(d, (CANDIDATE_STAGING,))
    return removed


def _export_candidate(model: Path, ds: Any, wdir: Path) -> Path:
    """The candidate's ONNX export in ``wdir/candidate``, made in an owned staging
    directory and renamed into place (a killed export leaves only the staging directory,
    removed by the next pass). Reused when a previous attempt finished it."""
    from autopid.publish.onnx_export import write_export

    out = wdir / CANDIDATE
    if (out / "model.onnx").is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)  # a half-made one (an older autopid exported in place)
    # this pass holds the lease: a staging directory of another owner is a dead or fenced-off attempt
    for old in wdir.glob(f"{CANDIDATE_STAGING}*"):
        shutil.rmtree(old, ignore_errors=True)
    staging = make_owned_dir(wdir, CANDIDATE_STAGING)
    try:
        write_export(model, ds, staging)
        os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _pause(step: str, beat: Heartbeat) -> None:
    if os.environ.get(PAUSE_ENV) != step:
        return
    seconds = float(os.environ.get(PAUSE_S_ENV, "3600"))
    _log.warning("test hook %s=%s: pausing %.0f s", PAUSE_ENV, step, seconds)
    end = time.time() + seconds
    while time.time() < end:
        time.sleep(0.2)
        beat.check()


def _summary_metrics(m: dict[str, Any] | None) -> dict[str, Any] | None:
    if m is None:
        return None
    gap = m.get("gap") or {}  # truth-free: the Data efficiency is a template-fit estimate
    return {"mc_auc": (m.get("mc") or {}).get("auc"), "data_efficiency_estimate": gap.get("efficiency_data"),
            "data_efficiency_error": gap.get("efficiency_data_error"), "gap": gap.get("gap"),
            "gap_error": gap.get("gap_error"), "gap_not_estimable": None if gap.get("estimable", True) else gap.get("reason"),
            "mc_rows": (m.get("mc") or {}).get("n"), "data_rows": (m.get("data") or {}).get("n")}


def _search_points(study_dir: Path, summary: dict[str, Any], keys: list[str], top_k: int) -> list[dict[str, Any]]:
    """The best ``top_k`` configurations of a finished study (what a later warm start reads)."""
    import pandas as pd

    points = [dict(summary.get("best_params") or {})]
    try:
        trials = pd.read_csv(study_dir / "trials.csv")
    except (OSError, ValueError):
        return points[:top_k]
    metric = next((c for c in trials.columns if c.startswith("best_")), None)
    if metric is not None:
        trials = trials[trials["status"] != "failed"].sort_values(metric, ascending=False)
        for _, row in trials.iterrows():
            point = {}
            for k in keys:
                v = row.get(f"param.{k}")
                if isinstance(v, str) and v[:1] in "[{":
                    v = yaml.safe_load(v)  # a list choice written by pandas
                if v is not None and not (isinstance(v, float) and v != v):
                    point[k] = v.item() if hasattr(v, "item") else v
            if point and point not in points:
                points.append(point)
    return points[:top_k]


def _search(job: RetrainJob, period: str, wdir: Path, serving: ModelVersion | None) -> tuple[Path, dict[str, Any]]:
    from autopid.retrain.space import job_space, warm_points
    from autopid.search.runner import InputsChanged, run_search, study_name
    from autopid.search.space import load_search_space

    space = job_space(job, load_search_space(job.search.space), period)
    sdir = wdir / "search"
    study_dir = sdir / "studies" / study_name(space, space.studies[0])
    if (study_dir / "summary.json").is_file():
        _log.info("%s/%s: the search finished before (attempt before a takeover); reusing it", job.name, period)
        return study_dir, json.loads((study_dir / "summary.json").read_text())
    points: list[dict[str, Any]] = []
    if job.warm_start.enabled and serving is not None:
        base = space.train_config(space.studies[0], {}).model_dump(mode="json")
        points = warm_points(space, serving_configs(serving, list(space.params)), base)[: job.warm_start.top_k]
        model = f" (the model of {serving.model_of})" if serving.is_extension else ""
        _log.info("%s/%s: warm start from %s%s with %d configuration(s)", job.name, period, serving.id, model,
                  len(points))
    address = job.ray_address or os.environ.get("RAY_ADDRESS")
    if (sdir / "search.json").is_file() and not (sdir / "config.yaml").is_file():
        shutil.rmtree(sdir)  # killed while the search directory was being set up: start it again
    from autopid.retrain.scheduler import keep_stop_handlers

    SEARCHING.set()
    try:
        with keep_stop_handlers():
            summaries = None
            if (sdir / "search.json").is_file():
                try:
                    _, summaries = run_search(resume_dir=sdir, address=address,
                                              scheduler_address=job.dask_scheduler, warm_start=points or None)
                except InputsChanged as exc:
                    # the period's files were replaced after an attempt began: its trials are
                    # worthless for the new data, so the search starts again
                    _log.warning("%s/%s: %s; starting the search again", job.name, period, exc)
                    shutil.rmtree(sdir)
            if summaries is None:
                wdir.mkdir(parents=True, exist_ok=True)
                space_file = wdir / "space.yaml"
                space_file.write_text(dump_yaml(space), encoding="utf-8")
                _, summaries = run_search(space_file, out_dir=sdir, address=address,
                                          scheduler_address=job.dask_scheduler, warm_start=points or None)
    finally:
        SEARCHING.clear()
    summary = summaries[0]
    if not summary.get("best_model"):
        raise AutopidError(f"{study_dir}: the search kept no best model (see trials.csv)")
    summary["warm_start_points"] = points
    return study_dir, summary


def _validity_runs(job: RetrainJob, period: Period, ds: Any) -> tuple[int, int]:
    """The period's run range: its completion manifest's (``validity.source: manifest``,
    when it declares one), else the runs read from the period's files in the cache."""
    from autopid.publish.publisher import period_runs

    if job.validity.source == "manifest" and period.runs is not None:
        return period.runs
    return period_runs(ds, period.name)


def run_period(job: RetrainJob, period: Period, store: StateStore, row: RunRow, owner: str, beat: Heartbeat) -> PassResult:
    """Run (or continue) the pass for ``period``; the caller holds the lease in ``beat``."""
    from autopid.config import load_dataset_config
    from autopid.data import PreprocessedDataset
    from autopid.preprocess import preprocess
    from autopid.publish.evaluation import jsonable
    from autopid.publish.gate import decide, evaluate_pair
    from autopid.publish.names import check_name
    from autopid.publish.publisher import publish_model

    name, p = job.name, period.name
    if period.error:
        raise InputError(period.error)
    check_name(p, "period")  # a registry name: refused now, not after the search
    registry = Registry(job.registry)
    timings: dict[str, float] = {}
    key = publish_key(name, p)

    def note(step: str, t0: float, message: str, **values: Any) -> None:
        timings[step] = round(time.perf_counter() - t0, 3)
        store.record(name, p, owner, step=step, timings=timings, **values)
        store.log(name, p, step, f"{message} ({timings[step]:.1f} s)", owner=owner, attempt=row.attempts)
        _pause(step, beat)
        beat.check()

    def adopt(version: ModelVersion) -> PassResult:
        info = version.metadata.get(RETRAIN_KEY) or {}
        decision = info.get("decision")
        kept = outcome(version) == KEPT
        if kept and isinstance(decision, dict):
            decision = {**decision, "validity_extension": str(version.id), "kept": version.model_of}
        status = REJECTED if kept else SUCCEEDED
        what = f"{version.id} ({'validity extension of ' + version.model_of if kept else 'promoted'})"
        store.finish(name, p, owner, status, decision=decision, published=None if kept else str(version.id),
                     timings=timings, step="extended" if kept else "published",
                     message=f"{what} was already published for this period (by {info.get('owner')}); "
                     "recorded, not published again")
        return PassResult(name, p, status, None if kept else str(version.id), decision, timings)

    done = find_publication(registry, job.experiment, job.species, name, p)
    if done is not None:
        return adopt(done)

    t0 = time.perf_counter()
    ds_cfg = load_dataset_config(job.dataset).with_period(p)
    prep = preprocess(ds_cfg, cache_root=job.cache_dir, scheduler=job.dask_scheduler)
    ds = PreprocessedDataset(prep.path)
    note("preprocessed", t0, f"{'cache hit' if prep.cache_hit else 'preprocessed'}: {prep.manifest['selected']} "
         f"events selected of {prep.manifest['entries']}")

    serving = serving_version(registry, job.experiment, job.species)
    wdir = work_dir(job, p)
    t0 = time.perf_counter()
    study_dir, summary = _search(job, p, wdir, serving)
    best = next((v for k, v in summary.items() if k.startswith("best_") and isinstance(v, float)), None)
    note("searched", t0, f"{summary['trials']} trial(s), {summary['failed']} failed; best objective "
         f"{best if best is None else round(best, 4)}; {len(summary.get('warm_start_points') or [])} warm-start "
         f"point(s)", candidate=str(study_dir))

    t0 = time.perf_counter()
    export_dir = _export_candidate(study_dir / "best_model.pt", ds, wdir)
    cand_m, serv_m = evaluate_pair(export_dir, serving, ds, job.species, max_rows=job.promotion.max_eval_rows)
    gate = decide(cand_m, serv_m, metric=job.promotion.metric, margin=job.promotion.margin,
                  higher_is_better=job.promotion.higher_is_better, guards=job.promotion.gate_guards())
    decision = jsonable({**gate.to_dict(), "serving_id": str(serving.id) if serving else None,
                         "candidate_metrics": _summary_metrics(cand_m), "serving_metrics": _summary_metrics(serv_m),
                         "evaluated_on": {"period": p, "cache": str(ds.path), "split": "test"}})
    note("evaluated", t0, gate.reason, decision=decision, serving=str(serving.id) if serving else None)

    t0 = time.perf_counter()
    done = find_publication(registry, job.experiment, job.species, name, p)
    if done is not None:
        return adopt(done)
    beat.check()  # publish only while holding the lease
    first, last = _validity_runs(job, period, ds)

    if not gate.promote:
        if serving is None:  # pragma: no cover - with nothing serving, the gate promotes
            raise AutopidError(f"{name}/{p}: the gate rejected the candidate with nothing serving")
        reason = (f"the candidate of {p} was rejected by the gate; the serving model {serving.model_of} is kept "
                  f"for runs {first}-{last}")
        extra = {RETRAIN_KEY: {"job": name, "period": p, "owner": owner, "attempt": row.attempts,
                               "outcome": KEPT, "decision": decision, "search": str(study_dir),
                               "search_points": (serving.metadata.get(RETRAIN_KEY) or {}).get("search_points") or [],
                               "rejected_search_points": _search_points(
                                   study_dir, summary, _space_keys(job), job.warm_start.top_k)}}
        try:
            version = registry.extend(serving, {"runs": [first, last], "periods": [p]}, reason=reason,
                                      extra_metadata=extra, once_key=key)
        except AlreadyPublished as exc:
            return adopt(exc.version)
        timings["extended"] = round(time.perf_counter() - t0, 3)
        decision = {**decision, "validity_extension": str(version.id), "kept": serving.model_of}
        store.log(name, p, "extended", f"{version.id}: the model of {serving.model_of} now also serves runs "
                  f"{first}-{last}", owner=owner, attempt=row.attempts)
        _pause("extended", beat)
        store.finish(name, p, owner, REJECTED, decision=decision, published=None, timings=timings, step="extended",
                     message=f"rejected: {gate.reason}; {version.id} extends {serving.model_of} to runs "
                     f"{first}-{last}")
        return PassResult(name, p, REJECTED, None, decision, timings)

    points = _search_points(study_dir, summary, _space_keys(job), job.warm_start.top_k)
    extra = {RETRAIN_KEY: {"job": name, "period": p, "owner": owner, "attempt": row.attempts, "outcome": PROMOTED,
                           "decision": decision, "search": str(study_dir), "search_points": points,
                           "warm_start_points": summary.get("warm_start_points") or []}}
    try:
        version = publish_model(study_dir, species=job.species, period=p, runs=(first, last),
                                registry=registry, cache=prep.path, max_eval_rows=job.promotion.max_eval_rows,
                                extra_metadata=extra, once_key=key)
    except AlreadyPublished as exc:
        return adopt(exc.version)
    timings["published"] = round(time.perf_counter() - t0, 3)
    store.log(name, p, "published", f"{version.id} (runs {version.runs[0]}-{version.runs[1]}; replaces "
              f"{version.metadata.get('replaces') or 'nothing'})", owner=owner, attempt=row.attempts)
    _pause("published", beat)
    store.finish(name, p, owner, SUCCEEDED, decision=decision, published=str(version.id), timings=timings,
                 step="published", message=f"promoted: {gate.reason}")
    return PassResult(name, p, SUCCEEDED, str(version.id), decision, timings)


def _space_keys(job: RetrainJob) -> list[str]:
    from autopid.search.space import load_search_space

    return list(load_search_space(job.search.space).params)
