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
4. ``published`` or rejected: a promoted candidate is published with the period's run
   range as validity and a ``retrain`` section (job, period, decision, search points)
   in its metadata.

Exactly once: before publishing (and at the start of every attempt) the registry is
searched for a version whose ``retrain`` section names this (job, period); a run taken
over after its owner died after publishing finds it and records it instead of
publishing again.

Test hook (documented, for the crash tests only): ``AUTOPID_RETRAIN_TEST_PAUSE_AFTER=STEP``
makes the pass sleep ``AUTOPID_RETRAIN_TEST_PAUSE_S`` seconds (default 3600) after STEP,
with its lease still renewed, so that a test can kill the process at a known point.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from autopid._logging import get_logger
from autopid.config import dump_yaml
from autopid.errors import AutopidError
from autopid.publish.registry import ModelVersion, Registry
from autopid.retrain.job import RetrainJob
from autopid.retrain.lease import Heartbeat
from autopid.retrain.periods import Period
from autopid.retrain.serving import RETRAIN_KEY, find_publication, serving_configs, serving_version
from autopid.retrain.state import REJECTED, SUCCEEDED, RunRow, StateStore

_log = get_logger(__name__)

PAUSE_ENV = "AUTOPID_RETRAIN_TEST_PAUSE_AFTER"
PAUSE_S_ENV = "AUTOPID_RETRAIN_TEST_PAUSE_S"


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
    return {"mc_auc": (m.get("mc") or {}).get("auc"), "data_auc": (m.get("data") or {}).get("auc"),
            "gap": (m.get("gap") or {}).get("gap"), "mc_rows": (m.get("mc") or {}).get("n"),
            "data_rows": (m.get("data") or {}).get("n")}


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
    from autopid.search.runner import run_search, study_name
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
        _log.info("%s/%s: warm start from %s with %d configuration(s)", job.name, period, serving.id, len(points))
    address = job.ray_address or os.environ.get("RAY_ADDRESS")
    if (sdir / "search.json").is_file() and not (sdir / "config.yaml").is_file():
        import shutil

        shutil.rmtree(sdir)  # killed while the search directory was being set up: start it again
    if (sdir / "search.json").is_file():
        _, summaries = run_search(resume_dir=sdir, address=address, scheduler_address=job.dask_scheduler,
                                  warm_start=points or None)
    else:
        wdir.mkdir(parents=True, exist_ok=True)
        space_file = wdir / "space.yaml"
        space_file.write_text(dump_yaml(space), encoding="utf-8")
        _, summaries = run_search(space_file, out_dir=sdir, address=address, scheduler_address=job.dask_scheduler,
                                  warm_start=points or None)
    summary = summaries[0]
    if not summary.get("best_model"):
        raise AutopidError(f"{study_dir}: the search kept no best model (see trials.csv)")
    summary["warm_start_points"] = points
    return study_dir, summary


def run_period(job: RetrainJob, period: Period, store: StateStore, row: RunRow, owner: str, beat: Heartbeat) -> PassResult:
    """Run (or continue) the pass for ``period``; the caller holds the lease in ``beat``."""
    from autopid.config import load_dataset_config
    from autopid.data import PreprocessedDataset
    from autopid.preprocess import preprocess
    from autopid.publish.evaluation import jsonable
    from autopid.publish.gate import decide, evaluate_pair
    from autopid.publish.onnx_export import export_model
    from autopid.publish.publisher import publish_model

    name, p = job.name, period.name
    registry = Registry(job.registry)
    timings: dict[str, float] = {}

    def note(step: str, t0: float, message: str, **values: Any) -> None:
        timings[step] = round(time.perf_counter() - t0, 3)
        store.record(name, p, owner, step=step, timings=timings, **values)
        store.log(name, p, step, f"{message} ({timings[step]:.1f} s)", owner=owner, attempt=row.attempts)
        _pause(step, beat)
        beat.check()

    def adopt(version: ModelVersion) -> PassResult:
        info = version.metadata.get(RETRAIN_KEY) or {}
        decision = info.get("decision")
        store.finish(name, p, owner, SUCCEEDED, decision=decision, published=str(version.id), timings=timings,
                     message=f"{version.id} was already published for this period (by {info.get('owner')}); "
                     "recorded, not published again")
        return PassResult(name, p, SUCCEEDED, str(version.id), decision, timings)

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
    export_dir = wdir / "candidate"
    if not (export_dir / "model.onnx").is_file():
        import shutil

        shutil.rmtree(export_dir, ignore_errors=True)  # a killed export (export_model never leaves one half-made)
        export_model(study_dir / "best_model.pt", ds, export_dir)
    cand_m, serv_m = evaluate_pair(export_dir, serving, ds, job.species, max_rows=job.promotion.max_eval_rows)
    gate = decide(cand_m, serv_m, metric=job.promotion.metric, margin=job.promotion.margin,
                  higher_is_better=job.promotion.higher_is_better, guards=job.promotion.gate_guards())
    decision = jsonable({**gate.to_dict(), "serving_id": str(serving.id) if serving else None,
                         "candidate_metrics": _summary_metrics(cand_m), "serving_metrics": _summary_metrics(serv_m),
                         "evaluated_on": {"period": p, "cache": str(ds.path), "split": "test"}})
    note("evaluated", t0, gate.reason, decision=decision, serving=str(serving.id) if serving else None)

    if not gate.promote:
        store.finish(name, p, owner, REJECTED, decision=decision, published=None, timings=timings,
                     message=f"rejected: {gate.reason}")
        return PassResult(name, p, REJECTED, None, decision, timings)

    t0 = time.perf_counter()
    done = find_publication(registry, job.experiment, job.species, name, p)
    if done is not None:
        return adopt(done)
    beat.check()  # publish only while holding the lease
    from autopid.search.space import load_search_space

    keys = list(load_search_space(job.search.space).params)
    points = _search_points(study_dir, summary, keys, job.warm_start.top_k)
    extra = {RETRAIN_KEY: {"job": name, "period": p, "owner": owner, "attempt": row.attempts, "decision": decision,
                           "search": str(study_dir), "search_points": points,
                           "warm_start_points": summary.get("warm_start_points") or []}}
    version = publish_model(study_dir, species=job.species, period=p,
                            runs=period.runs if job.validity.source == "manifest" else None,
                            registry=registry, cache=prep.path, max_eval_rows=job.promotion.max_eval_rows,
                            extra_metadata=extra)
    timings["published"] = round(time.perf_counter() - t0, 3)
    store.log(name, p, "published", f"{version.id} (runs {version.runs[0]}-{version.runs[1]}; replaces "
              f"{version.metadata.get('replaces') or 'nothing'})", owner=owner, attempt=row.attempts)
    _pause("published", beat)
    store.finish(name, p, owner, SUCCEEDED, decision=decision, published=str(version.id), timings=timings,
                 message=f"promoted: {gate.reason}")
    return PassResult(name, p, SUCCEEDED, str(version.id), decision, timings)
