"""``autopid search``: Ray Tune with Optuna (TPE) and ASHA, one study per (species, period).

Each trial is a Tune function that launches a Ray Train ``TorchTrainer`` (Train V2: a
Tune trial launches the trainer). Layout of a search directory::

    config.yaml, metadata.json       the space as run, versions, git revision
    search.json                      the studies and the Optuna storage URL
    optuna.db                        Optuna RDB storage (open it with optuna-dashboard)
    studies/<species>-<period>/
        tune/                        Tune experiment (restored by --resume)
        train/train-<trial>/         Ray Train runs: checkpoints of every epoch
        trials.csv                   every trial's parameters, metrics and status
        best_config.yaml             the best trial as a config `autopid train` accepts
        best_model.pt                the best trial's best epoch
        summary.json
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd

from autopid._logging import get_logger
from autopid.config import dump_yaml
from autopid.errors import AutopidError, ConfigError
from autopid.provenance import atomic_write_text, write_run_info
from autopid.search.space import Choice, IntRange, LogUniform, SearchSpace, Study, Uniform, load_search_space
from autopid.train import artifacts
from autopid.train.config import TrainConfig

_log = get_logger(__name__)
SPACE_FILE = "config.yaml"  # written by write_run_info: the space as run


def study_name(space: SearchSpace, study: Study) -> str:
    period = "all" if study.period == "*" else study.period
    return f"{study.species}-{period}"


def _tune_space(space: SearchSpace) -> dict[str, Any]:
    from ray import tune

    out: dict[str, Any] = {}
    for key, d in space.params.items():
        if isinstance(d, Uniform):
            out[key] = tune.uniform(d.low, d.high)
        elif isinstance(d, LogUniform):
            out[key] = tune.loguniform(d.low, d.high)
        elif isinstance(d, IntRange):
            out[key] = (tune.lograndint if d.log else tune.randint)(d.low, d.high + 1)
            if d.step > 1:
                out[key] = tune.qrandint(d.low, d.high, d.step)
        elif isinstance(d, Choice):
            out[key] = tune.choice(d.choices)
    return out


def _trial(config: dict[str, Any], context: dict[str, Any]) -> None:
    """One trial: the sampled values on top of the space's base, trained on Ray Train."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from autopid.train.ray_train import make_trainer

    space = SearchSpace.model_validate(context["space"])
    study = Study.model_validate(context["study"])
    cfg = space.train_config(study, config)
    cfg = cfg.model_copy(update={"period": study.period})
    trial_id = tune.get_context().get_trial_id()
    trainer = make_trainer(cfg, context["cache_path"], storage_path=context["train_dir"], name=f"train-{trial_id}",
                           callbacks=[TuneReportCallback()], domain_penalty=space.objective.domain_penalty)
    trainer.fit()


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


def _checkpoint_scores(train_dir: Path) -> list[tuple[float, Path]]:
    out = []
    for ckpt in train_dir.glob("checkpoint_*"):
        state_file = ckpt / artifacts.CHECKPOINT_FILE
        if not state_file.is_file() or not (ckpt / artifacts.MODEL_FILE).is_file():
            continue
        history = artifacts.load_checkpoint(state_file)["state"]["history"]
        if history:
            out.append((float(history[-1]["objective"]), ckpt))
    return out


def _trial_table(results: Any, max_epochs: int, metric: str) -> pd.DataFrame:
    rows = []
    for r in results:
        m = r.metrics or {}
        df = r.metrics_dataframe
        epochs = int(m.get("epoch", 0) or 0)
        best = float(df[metric].max()) if df is not None and metric in df else float("nan")
        train_s = float(df["train_seconds"].sum()) if df is not None and "train_seconds" in df else float("nan")
        status = "failed" if r.error else ("completed" if epochs >= max_epochs else "stopped_early")
        if not r.error and epochs < max_epochs and df is not None and "epochs_without_improvement" in df:
            status = "stopped_early"
        row = {"trial_id": m.get("trial_id", r.path.rsplit("_", 1)[-1] if r.path else ""), "status": status,
               "epochs": epochs, f"best_{metric}": best, "time_total_s": float(m.get("time_total_s", float("nan"))),
               "train_seconds": train_s}
        row.update({f"param.{k}": v for k, v in (r.config or {}).items()})
        for key in ("val_auc", "val_f1", "domain_accuracy", "objective", "lambda_", "events_per_second"):
            if key in m:
                row[key] = m[key]
        if r.error:
            row["error"] = str(r.error).splitlines()[0][:200]
        rows.append(row)
    return pd.DataFrame(rows)


def _run_study(space: SearchSpace, study: Study, search_dir: Path, storage_url: str, *,
               scheduler_address: str | None, resume: bool,
               warm_start: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    import optuna
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from autopid.train.run import prepare_data

    name = study_name(space, study)
    sdir = search_dir / "studies" / name
    summary_file = sdir / "summary.json"
    if summary_file.is_file():
        _log.info("study %s already finished; keeping its results", name)
        return json.loads(summary_file.read_text())
    sdir.mkdir(parents=True, exist_ok=True)
    base = space.train_config(study, {}).model_copy(update={"period": study.period})
    prep = prepare_data(base, scheduler_address)
    ctx = {"space": space.model_dump(mode="json"), "study": study.model_dump(mode="json"),
           "cache_path": str(prep.path), "train_dir": str((sdir / "train").resolve())}
    concurrent = space.budget.max_concurrent or _max_concurrent(ray.cluster_resources(), base)
    # the trial actor only drives its trainer: no CPU, so the workers can have them all
    trainable = tune.with_resources(tune.with_parameters(_trial, context=ctx), {"cpu": 0, "memory": 1024})
    tune_dir = (sdir / "tune").resolve()
    metric, mode = space.objective.metric, space.objective.mode
    epochs = base.training.epochs
    t0 = time.perf_counter()
    if resume and tune.Tuner.can_restore(str(tune_dir / "experiment")):
        _log.info("resuming study %s from %s", name, tune_dir)
        tuner = tune.Tuner.restore(str(tune_dir / "experiment"), trainable=trainable,
                                   resume_unfinished=True, resume_errored=True)
    else:
        searcher = OptunaSearch(
            sampler=optuna.samplers.TPESampler(seed=space.seed),
            storage=optuna.storages.RDBStorage(storage_url),
            study_name=f"{space.name}-{name}",
            # warm start: these configurations are tried first (Optuna enqueue_trial)
            points_to_evaluate=list(warm_start) if warm_start else None,
        )
        tuner = tune.Tuner(
            trainable,
            param_space=_tune_space(space),
            tune_config=tune.TuneConfig(
                metric=metric, mode=mode, search_alg=searcher,
                scheduler=ASHAScheduler(time_attr="epoch", max_t=epochs, grace_period=space.scheduler.grace_period,
                                        reduction_factor=space.scheduler.reduction_factor),
                num_samples=space.budget.num_samples, max_concurrent_trials=concurrent,
                time_budget_s=space.budget.time_budget_s),
            run_config=tune.RunConfig(name="experiment", storage_path=str(tune_dir), verbose=1,
                                      failure_config=tune.FailureConfig(max_failures=1),
                                      callbacks=[_metrics_callback(base, study, prep.manifest, metric, mode)]),
        )
    results = tuner.fit()
    wall = time.perf_counter() - t0
    table = _trial_table(results, epochs, metric)
    table.to_csv(sdir / "trials.csv", index=False)
    ok = table[table["status"] != "failed"]
    if ok.empty:
        raise AutopidError(f"study {name}: every trial failed; see {sdir / 'trials.csv'}")
    best_row = ok.sort_values(f"best_{metric}", ascending=(mode == "min")).iloc[0]
    best_values = {k[len("param."):]: _plain(v) for k, v in best_row.items()
                   if k.startswith("param.") and not _isnan(v)}
    best_cfg = space.train_config(study, best_values).model_copy(update={"period": study.period})
    atomic_write_text(sdir / "best_config.yaml", dump_yaml(best_cfg))
    scores = _checkpoint_scores(Path(ctx["train_dir"]) / f"train-{best_row['trial_id']}")
    if scores:
        best_ckpt = max(scores, key=lambda t: t[0])[1]
        shutil.copyfile(best_ckpt / artifacts.MODEL_FILE, sdir / ".best_model.pt.tmp")
        (sdir / ".best_model.pt.tmp").replace(sdir / "best_model.pt")
    overhead = (table["time_total_s"] - table["train_seconds"]).dropna()
    summary = {
        "study": name, "species": study.species, "period": study.period, "optuna_study": f"{space.name}-{name}",
        "best_trial": str(best_row["trial_id"]), f"best_{metric}": float(best_row[f"best_{metric}"]),
        "best_params": best_values, "trials": int(len(table)),
        "completed": int((table["status"] == "completed").sum()),
        "stopped_early": int((table["status"] == "stopped_early").sum()),
        "failed": int((table["status"] == "failed").sum()),
        "wall_seconds": wall, "mean_trial_overhead_s": float(overhead.mean()) if len(overhead) else None,
        "max_concurrent_trials": concurrent, "cache": str(prep.path),
        "best_config": str(sdir / "best_config.yaml"),
        "best_model": str(sdir / "best_model.pt") if scores else None,
    }
    atomic_write_text(summary_file, json.dumps(summary, indent=2) + "\n")
    return summary


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


def _metrics_callback(base: TrainConfig, study: Study, manifest: dict[str, Any], metric: str,
                      mode: str) -> Any:
    from autopid.monitoring.tune_callback import MetricsCallback

    labels = {"experiment": str(manifest.get("experiment") or "other"), "species": study.species,
              "period": study.period, "model": base.model.family}
    return MetricsCallback(labels, base.training.epochs, metric, mode)


def _isnan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


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
) -> tuple[Path, list[dict[str, Any]]]:
    """Run (or resume) a search; returns the search directory and one summary per study.

    ``warm_start``: parameter values (keys of the space's ``params``) evaluated first in
    every new study, e.g. the best configurations of the model now serving."""
    from autopid.train.ray_train import init_ray

    if resume_dir is not None:
        search_dir = Path(resume_dir)
        if not (search_dir / SPACE_FILE).is_file():
            raise ConfigError(f"{search_dir}: not a search directory (no {SPACE_FILE})")
        space = load_search_space(search_dir / SPACE_FILE)
        state = json.loads((search_dir / "search.json").read_text())
        storage = state["storage"]
        studies = [Study.model_validate(s) for s in state["studies"]]
    else:
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
        search_dir.mkdir(parents=True, exist_ok=True)
        storage = storage or f"sqlite:///{(search_dir / 'optuna.db').resolve()}"
        atomic_write_text(search_dir / "search.json", json.dumps(
            {"storage": storage, "studies": [s.model_dump() for s in studies]}, indent=2) + "\n")
        write_run_info(search_dir, space)
    _prepare_demo_data(space)
    init_ray(address)
    summaries = [
        _run_study(space, study, search_dir, storage, scheduler_address=scheduler_address,
                   resume=resume_dir is not None, warm_start=warm_start)
        for study in studies
    ]
    return search_dir, summaries


def best_train_config(search_dir: str | Path, study: str) -> TrainConfig:
    from autopid.config import load_yaml_config

    return load_yaml_config(Path(search_dir) / "studies" / study / "best_config.yaml", TrainConfig)
