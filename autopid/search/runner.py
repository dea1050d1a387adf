"""``autopid search``: Ray Tune with Optuna (TPE) and ASHA, one study per (species, period).

The Optuna study (``optuna.db``) is the record of the search; Tune runs the trials (see
:mod:`autopid.search.study`). One-worker trials train inside the Tune trial; trials with
several workers launch Ray Train (see :mod:`autopid.search.trial`). Layout::

    config.yaml, metadata.json   the space as run, versions, git revision
    search.json                  the studies and the Optuna storage URL
    optuna.db                    Optuna RDB storage (open it with optuna-dashboard)
    ray.log                      Ray's and Tune's logs (the console shows one line per trial event)
    .lock                        held while a search runs in this directory
    studies/<species>-<period>/
        trials/NNNN/             trial NNNN (Optuna number): record.json, state.pt, its best model
        tune/session-*/          one Tune experiment per run of the command
        trials.csv               every trial that started: status, best epoch and its metrics, parameters
        best_config.yaml         the best trial as a config `autopid train` accepts
        best_model.pt            the best trial's best epoch
        summary.json             written once the study's budget is spent
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autopid._logging import get_logger
from autopid.config import dump_yaml
from autopid.errors import AutopidError, ConfigError
from autopid.preprocess import PreprocessResult
from autopid.provenance import atomic_write_text, write_run_info
from autopid.search import records
from autopid.search.lock import DirectoryLock
from autopid.search.space import SearchSpace, Study, load_search_space, validate_against_data
from autopid.train.config import TrainConfig

_log = get_logger(__name__)
SPACE_FILE = "config.yaml"  # written by write_run_info: the space as run


class SearchIncomplete(AutopidError):
    """The search stopped before its budget was spent (Ctrl-C, or a stall); it resumes."""

    def __init__(self, message: str, search_dir: Path, summaries: list[dict[str, Any]], signum: int | None) -> None:
        super().__init__(message)
        self.search_dir = search_dir
        self.summaries = summaries
        self.exit_code = 128 + signum if signum else 1  # 130 after Ctrl-C, 143 after SIGTERM


def study_name(space: SearchSpace, study: Study) -> str:
    period = "all" if study.period == "*" else study.period
    return f"{study.species}-{period}"


def _prepare_demo_data(space: SearchSpace) -> None:
    demo = space.demo_data
    if demo is None:
        return
    from autopid.simulate import EXPERIMENTS, read_period_manifest, simulate_period

    exp = EXPERIMENTS[demo.experiment]
    for period in demo.periods:
        if read_period_manifest(Path(demo.out) / period) is None:
            _log.info("simulating %s period %s into %s (first use)", demo.experiment, period, demo.out)
            simulate_period(exp, exp.config_type(), demo.out, period, runs=demo.runs,
                            events_per_run=demo.events_per_run, seed=demo.seed)


def _max_concurrent(resources: dict[str, float], cfg: TrainConfig) -> int:
    """Trials that fit at once in what the cluster reports (a GPU fraction per worker
    lets several small trials share one GPU)."""
    s = cfg.scaling
    fits = int(resources.get("CPU", 1.0) // (s.num_workers * s.cpus_per_worker))
    if s.use_gpu:
        fits = min(fits, int(resources.get("GPU", 0.0) // (s.num_workers * s.gpus_per_worker)))
        if fits < 1:
            raise AutopidError(f"the trials ask for {s.num_workers} x {s.gpus_per_worker} GPU but the Ray "
                               f"cluster has {resources.get('GPU', 0.0):g}")
    return max(1, fits)


def _trial_resources(cfg: TrainConfig) -> dict[str, float]:
    s = cfg.scaling
    if s.num_workers == 1:  # trains inside the trial: the trial holds the worker's resources
        return {"cpu": s.cpus_per_worker, **({"gpu": s.gpus_per_worker} if s.use_gpu else {})}
    return {"cpu": 0, "memory": 1024}  # only drives its Ray Train workers


def _metrics_callback(base: TrainConfig, study: Study, manifest: dict[str, Any], metric: str, mode: str) -> Any:
    from autopid.monitoring.tune_callback import MetricsCallback

    labels = {"experiment": str(manifest.get("experiment") or "other"), "species": study.species,
              "period": study.period, "model": base.model.family}
    return MetricsCallback(labels, base.training.epochs, metric, mode)


@dataclass
class _StudyRun:
    space: SearchSpace
    study: Study
    sdir: Path
    storage: str
    prep: PreprocessResult

    @property
    def name(self) -> str:
        return study_name(self.space, self.study)

    @property
    def trials_root(self) -> Path:
        return self.sdir / "trials"

    optuna_name: str


def _session_state(sdir: Path) -> dict[str, Any]:
    try:
        return json.loads((sdir / "state.json").read_text())
    except (OSError, ValueError):
        return {"elapsed_s": 0.0, "sessions": 0}


def _summary(run: _StudyRun, ostudy: Any, state: str, concurrent: int, wall: float) -> dict[str, Any]:
    space = run.space
    metric, mode = space.objective.metric, space.objective.mode
    rows = records.trial_rows(ostudy, run.trials_root)
    records.write_trials_csv(rows, run.sdir / "trials.csv")
    c = records.counts(rows)
    best = records.best_row(rows, metric, mode)
    out: dict[str, Any] = {
        "study": run.name, "species": run.study.species, "period": run.study.period,
        "optuna_study": run.optuna_name, "state": state, "budget": space.budget.num_samples,
        "trials": len(rows), **c, "metric": metric, "mode": mode,
        "wall_seconds": wall, "max_concurrent_trials": concurrent, "cache": str(run.prep.path),
    }
    overhead = [r["seconds"] - r["train_seconds"] for r in rows
                if isinstance(r.get("seconds"), float) and isinstance(r.get("train_seconds"), float)
                and r["status"] != "failed"]
    out["mean_trial_overhead_s"] = sum(overhead) / len(overhead) if overhead else None
    if best is None:
        out.update(best_trial=None, best_model=None, best_config=None)
        return out
    params = records.trial_params(ostudy, best["trial"])
    out.update(best_trial=best["trial"], best_epoch=best["best_epoch"],
               best_metrics={k: best.get(records.metric_column(k)) for k in records.KEY_METRICS},
               best_params=params)
    out[f"best_{metric}"] = best[records.metric_column(metric)]
    if state == "finished":
        cfg = space.train_config(run.study, params).model_copy(update={"period": run.study.period})
        atomic_write_text(run.sdir / "best_config.yaml", dump_yaml(cfg))
        record = records.read_record(records.trial_dir(run.trials_root, best["trial"])) or {}
        src = records.trial_dir(run.trials_root, best["trial"]) / str(record.get("model"))
        if record.get("model") and src.is_file():
            tmp = run.sdir / ".best_model.pt.tmp"
            shutil.copyfile(src, tmp)
            tmp.replace(run.sdir / "best_model.pt")
            out["best_model"] = str(run.sdir / "best_model.pt")
        else:
            out["best_model"] = None
        out["best_config"] = str(run.sdir / "best_config.yaml")
    return out


def _run_study(run: _StudyRun, *, warm_start: list[dict[str, Any]] | None, own_ray: bool,
               ) -> dict[str, Any]:
    import ray
    from ray import tune

    from autopid import ray_local
    from autopid.search.console import Console
    from autopid.search.shared_data import InMemoryDataset
    from autopid.search.study import (
        RecordingASHA,
        StudySearcher,
        encode_params,
        finished_count,
        open_study,
        settle_stale,
    )
    from autopid.search.trial import run_trial
    from autopid.search.watchdog import StallWatch, graceful_signals, remove_leftover_placement_groups

    space, sdir = run.space, run.sdir
    summary_file = sdir / "summary.json"
    if summary_file.is_file():
        _log.info("study %s finished before; keeping its results", run.name)
        return json.loads(summary_file.read_text())
    sdir.mkdir(parents=True, exist_ok=True)
    metric, mode = space.objective.metric, space.objective.mode
    direction = "maximize" if mode == "max" else "minimize"
    ostudy = open_study(run.storage, run.optuna_name, space.seed, direction, space.sampler,
                        space.budget.num_samples)
    fresh = not ostudy.get_trials(deepcopy=False)
    rerun = settle_stale(ostudy, run.trials_root, metric)
    if fresh and warm_start:
        for point in warm_start:  # evaluated first (Optuna's enqueue_trial)
            ostudy.enqueue_trial(encode_params(point, space.params), skip_if_exists=True)
    base = space.train_config(run.study, {}).model_copy(update={"period": run.study.period})
    budget = space.budget
    session = _session_state(sdir)
    done = finished_count(ostudy)
    time_left = None if budget.time_budget_s is None else budget.time_budget_s - session["elapsed_s"]
    concurrent = budget.max_concurrent or _max_concurrent(ray.cluster_resources(), base)
    if done >= budget.num_samples or (time_left is not None and time_left <= 0 and not rerun):
        summary = _summary(run, ostudy, "finished", concurrent, session["elapsed_s"])
        atomic_write_text(summary_file, json.dumps(summary, indent=2) + "\n")
        return summary
    if rerun or done:
        _log.info("study %s: %d of %d trials done; %d cut short continue from their checkpoints", run.name,
                  done, budget.num_samples, len(rerun))
    ds = InMemoryDataset(run.prep.path)
    ctx = {"space": space.model_dump(mode="json"), "study": run.study.model_dump(mode="json"),
           "cache_path": str(run.prep.path), "trials_dir": str(run.trials_root.resolve())}
    trainable = tune.with_resources(tune.with_parameters(run_trial, context=ctx, dataset=ds),
                                    _trial_resources(base))
    stopped_by_asha: set[str] = set()
    tune_trials: dict[str, Any] = {}
    watch = StallWatch(budget.stall_timeout_s)
    console = Console(run.name, budget.num_samples, done, base.training.epochs, watch, tune_trials)
    metrics_cb = _metrics_callback(base, run.study, run.prep.manifest, metric, mode)
    t0 = time.monotonic()

    def on_outcome(number: int, status: str, record: dict[str, Any]) -> None:
        console.outcome(number, status, record)
        metrics_cb.outcome(status)
        records.write_trials_csv(records.trial_rows(ostudy, run.trials_root), sdir / "trials.csv")

    searcher = StudySearcher(
        ostudy, space.params, metric=metric, mode=mode, budget_left=budget.num_samples - done, rerun=rerun,
        trials_root=run.trials_root, stopped_by_asha=stopped_by_asha, on_outcome=on_outcome,
        deadline=None if time_left is None else t0 + time_left, tune_trials=tune_trials)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    tuner = tune.Tuner(
        trainable,
        param_space={},
        tune_config=tune.TuneConfig(
            metric=metric, mode=mode, search_alg=searcher,
            scheduler=RecordingASHA(stopped_by_asha, time_attr="epoch", max_t=base.training.epochs,
                                    grace_period=space.scheduler.grace_period,
                                    reduction_factor=space.scheduler.reduction_factor)
            if space.scheduler.type == "asha" else None,
            # a reused trial process keeps torch and the data loaded (one-worker trials train in it)
            num_samples=budget.num_samples - done, max_concurrent_trials=concurrent,
            reuse_actors=base.scaling.num_workers == 1,
            time_budget_s=time_left),
        run_config=tune.RunConfig(name=f"session-{stamp}", storage_path=str((sdir / "tune").resolve()),
                                  verbose=0, stop=watch, failure_config=tune.FailureConfig(max_failures=1),
                                  callbacks=[console, metrics_cb]),
    )
    try:
        with graceful_signals(watch):
            tuner.fit()
    finally:
        console.close()
        session["elapsed_s"] += time.monotonic() - t0
        session["sessions"] += 1
        atomic_write_text(sdir / "state.json", json.dumps(session) + "\n")
        removed = remove_leftover_placement_groups(own_ray or ray_local.temp_dir() is not None)
        if removed:
            _log.info("removed %d placement group(s) left behind by ended trials", removed)
    ostudy = open_study(run.storage, run.optuna_name, space.seed, direction, space.sampler,
                        space.budget.num_samples)
    done = finished_count(ostudy)
    time_up = time_left is not None and session["elapsed_s"] >= budget.time_budget_s
    finished = (done >= budget.num_samples or time_up) and not searcher.unsettled and not watch.reason \
        and not watch.interrupted
    if finished:
        state = "finished"
    elif watch.interrupted:
        state = "interrupted"
    else:
        state = "stalled" if watch.reason else "incomplete"
    summary = _summary(run, ostudy, state, concurrent, session["elapsed_s"])
    if watch.interrupted:
        summary["signal"] = int(getattr(signal, watch.interrupted))
    if watch.reason:
        summary["stall"] = watch.reason
    elif state == "incomplete":
        summary["stall"] = (f"Ray Tune ended with {done} of {budget.num_samples} trials done and no trial "
                            f"running; see {run.sdir.parent.parent / 'ray.log'}")
    if finished:
        atomic_write_text(summary_file, json.dumps(summary, indent=2) + "\n")
    return summary


def _optuna_study(search_dir: Path, space: SearchSpace, study: Study, storage: str) -> str:
    """The Optuna study of ``study`` in this search: the one recorded in ``search.json``, or a
    new one claimed now (see :func:`autopid.search.study.claim_study`) and recorded. A
    search directory from before 2026-11-30 records none: its studies keep the name
    ``<space>-<species>-<period>``."""
    from autopid.search.study import claim_study

    path = search_dir / "search.json"
    state = json.loads(path.read_text())
    default = f"{space.name}-{study_name(space, study)}"
    if "optuna_studies" not in state:
        return default
    names = state["optuna_studies"]
    key = study_name(space, study)
    if key not in names:
        direction = "maximize" if space.objective.mode == "max" else "minimize"
        names[key] = claim_study(storage, default, direction, owner=str(search_dir.resolve()))
        if names[key] != default:
            _log.warning("the Optuna storage %s already holds a study %r (another search); this search's "
                         "study is %r", storage, default, names[key])
        atomic_write_text(path, json.dumps(state, indent=2) + "\n")
    return str(names[key])


def _config_type(directory: Path) -> str | None:
    """What wrote ``directory/config.yaml``: metadata.json says, or (killed between the two
    writes) the YAML's own keys."""
    try:
        return str(json.loads((directory / "metadata.json").read_text()).get("config_type"))
    except (OSError, ValueError, AttributeError):
        pass
    import yaml

    try:
        raw = yaml.safe_load((directory / SPACE_FILE).read_text())
    except (OSError, yaml.YAMLError):
        return None
    return "SearchSpace" if isinstance(raw, dict) and {"studies", "params"} <= set(raw) else None


def _input_hashes(prep: PreprocessResult) -> list[str]:
    return sorted(str(i["sha256"]) for i in prep.manifest.get("inputs") or [])


class InputsChanged(ConfigError):
    """The input files of a search changed since it began (see :func:`_check_same_inputs`)."""


def _check_same_inputs(search_dir: Path, inputs: dict[str, list[str]]) -> None:
    """Refuse to resume a search whose input files changed: its trials so far were
    trained and scored on the old data, and would be compared with new ones."""
    recorded = json.loads((search_dir / "search.json").read_text()).get("inputs")
    if recorded is None:
        return  # a search from before the inputs were recorded
    for name, hashes in inputs.items():
        if name in recorded and recorded[name] != hashes:
            raise InputsChanged(
                f"{search_dir}: the input files of study {name} changed since this search began "
                f"({len(recorded[name])} file(s) then, {len(hashes)} now, contents differ); its trials were "
                "trained on the old data and cannot be compared with new ones. Start a new search "
                "(another --out), or restore the files")


def _load_or_create(space_path: str | Path | None, resume_dir: str | Path | None, out_dir: str | Path | None,
                    species: str | None, period: str | None, storage: str | None,
                    ) -> tuple[Path, SearchSpace, list[Study], str | None, bool]:
    if resume_dir is not None:
        search_dir = Path(resume_dir)
        if not (search_dir / SPACE_FILE).is_file() or not (search_dir / "search.json").is_file():
            raise ConfigError(f"{search_dir}: not a search directory (no {SPACE_FILE} or search.json)")
        space = load_search_space(search_dir / SPACE_FILE)
        state = json.loads((search_dir / "search.json").read_text())
        return search_dir, space, [Study.model_validate(s) for s in state["studies"]], state["storage"], False
    if space_path is None:
        raise ConfigError("give --space or --resume")
    space = load_search_space(space_path)
    studies = [s for s in space.studies
               if (species is None or s.species == species) and (period is None or s.period == period)]
    if species is not None and period is not None and not studies:
        studies = [Study(species=species, period=period)]
    if not studies:
        raise ConfigError(f"{space_path}: no study matches species={species!r} period={period!r}")
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    search_dir = Path(out_dir) if out_dir is not None else Path("searches") / f"{space.name}-{stamp}"
    return search_dir, space, studies, storage, True


def run_search(
    space_path: str | Path | None = None,
    *,
    resume_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    species: str | None = None,
    period: str | None = None,
    address: str | None = None,
    storage: str | None = None,
    scheduler_address: str | None = None,
    warm_start: list[dict[str, Any]] | None = None,
    verbose: bool = False,
    stall_timeout_s: float | None = None,
) -> tuple[Path, list[dict[str, Any]]]:
    """Run (or resume) a search; returns the search directory and one summary per study.

    Raises :class:`SearchIncomplete` (with the summaries so far) when the search stopped
    before its budget was spent: Ctrl-C, or no progress for ``budget.stall_timeout_s``.
    ``warm_start``: parameter values (keys of the space's ``params``) evaluated first in
    every new study, e.g. the best configurations of the model now serving.
    ``stall_timeout_s``: replaces the space's ``budget.stall_timeout_s`` for this session
    (a resumed search whose epochs outlast the recorded one)."""
    from autopid.train.run import prepare_data

    search_dir, space, studies, storage, new = _load_or_create(space_path, resume_dir, out_dir, species,
                                                               period, storage)
    if stall_timeout_s is not None:
        if stall_timeout_s <= 0:
            raise ConfigError(f"stall timeout must be above 0 s, got {stall_timeout_s:g}")
        budget = space.budget.model_copy(update={"stall_timeout_s": stall_timeout_s})
        space = space.model_copy(update={"budget": budget})
    created = new and not search_dir.exists()
    lock = DirectoryLock(search_dir, "search").acquire()
    set_up = False
    try:
        # search.json is written last, once the data are ready and fit the space: it marks a
        # directory that holds a search (a config.yaml alone is a setup cut short)
        if new and (search_dir / "search.json").exists():
            raise ConfigError(f"{search_dir}: already holds a search; continue it with --resume {search_dir}, "
                              "or give another --out")
        kind = _config_type(search_dir) if new and (search_dir / SPACE_FILE).exists() else "SearchSpace"
        if kind != "SearchSpace":
            raise ConfigError(f"{search_dir}: holds a {kind or 'config.yaml'} of something "
                              "else (a training run?), not a search; give another --out")
        _prepare_demo_data(space)
        preps = []
        for study in studies:
            base = space.train_config(study, {}).model_copy(update={"period": study.period})
            prep = prepare_data(base, scheduler_address)
            validate_against_data(space, study, prep.manifest, where=str(space_path or search_dir / SPACE_FILE))
            preps.append(prep)
        inputs = {study_name(space, s): _input_hashes(p) for s, p in zip(studies, preps, strict=True)}
        if new:
            storage = storage or f"sqlite:///{(search_dir / 'optuna.db').resolve()}"
            write_run_info(search_dir, space)
            atomic_write_text(search_dir / "search.json", json.dumps(
                {"storage": storage, "studies": [s.model_dump() for s in studies], "optuna_studies": {},
                 "inputs": inputs}, indent=2) + "\n")
        else:
            _check_same_inputs(search_dir, inputs)
        set_up = True
        assert storage is not None
        runs = [_StudyRun(space, study, search_dir / "studies" / study_name(space, study), storage, prep,
                          _optuna_study(search_dir, space, study, storage))
                for study, prep in zip(studies, preps, strict=True)]
        summaries = _run_all(runs, search_dir, address=address, warm_start=warm_start, verbose=verbose)
    finally:
        if created and not set_up:
            # a new search refused before it began (bad data, a space the data cannot serve):
            # leave nothing that a corrected rerun with the same --out would trip over; removed
            # under the lock, so that no other search can have claimed the directory meanwhile
            shutil.rmtree(search_dir, ignore_errors=True)
        lock.release()
    unfinished = [s for s in summaries if s["state"] != "finished"]
    if unfinished:
        stall = next((s["stall"] for s in unfinished if s.get("stall")), None)
        what = f"search {unfinished[0]['state']}: {stall}" if stall else "search interrupted"
        signum = next((s.get("signal") for s in unfinished if s.get("signal")), None)
        raise SearchIncomplete(f"{what}; nothing finished is lost: continue with "
                               f"autopid search --resume {search_dir}", search_dir, summaries, signum)
    return search_dir, summaries


def _run_all(runs: list[_StudyRun], search_dir: Path, *, address: str | None,
             warm_start: list[dict[str, Any]] | None, verbose: bool) -> list[dict[str, Any]]:
    from autopid import ray_local
    from autopid.search.console import route_ray_logs, strip_console_handlers, unroute
    from autopid.train.ray_train import init_ray

    import ray

    # shut down at the end only a local Ray that this call started
    own = address is None and not os.environ.get("RAY_ADDRESS") and not ray.is_initialized()
    handler = route_ray_logs(search_dir / "ray.log", verbose)
    try:
        init_ray(address, log_to_driver=verbose)
    except BaseException:
        unroute(handler)
        raise
    if not verbose:
        strip_console_handlers()
    summaries: list[dict[str, Any]] = []
    try:
        for run in runs:
            summary = _run_study(run, warm_start=warm_start, own_ray=own)
            summaries.append(summary)
            if summary["state"] != "finished":
                break  # Ctrl-C or a stall ends the whole search; the rest waits for --resume
    finally:
        unroute(handler)
        if own and ray_local.temp_dir() is not None:
            ray_local.shutdown()
    return summaries


def best_train_config(search_dir: str | Path, study: str) -> TrainConfig:
    from autopid.config import load_yaml_config

    return load_yaml_config(Path(search_dir) / "studies" / study / "best_config.yaml", TrainConfig)

