"""What one search trial costs beyond its training, next to the plain ways of running
the same trials, measured side by side in one run on one local Ray:

- autopid: ``run_search`` on a small FSE space (1 epoch, 2,000 rows), one trial at a time;
- Ray Tune with a trivial function trainable (Tune's own cost per trial);
- an Optuna loop calling ``autopid.train.fit.fit`` in this process (no Ray at all);
- autopid with trials of 2 Ray Train workers (the path for several workers or GPUs), next
  to Ray Train's own cost: a Tune trial that runs a 2-worker ``TorchTrainer`` whose
  workers report once and do nothing else.

    python benchmarks/search_overhead.py [--trials 6]

Other scripts import :func:`measure`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROWS, EPOCHS = 2000, 1


def _data(root: Path) -> Path:
    from autopid.simulate import ALICE, AliceSimConfig, simulate_period
    from autopid.testing import dataset_for, write_dataset_yaml

    if not (root / "alice" / "LHC26a" / "period.json").exists():
        simulate_period(ALICE, AliceSimConfig(), root / "alice", "LHC26a", runs=2, events_per_run=4000, seed=3)
    return write_dataset_yaml(dataset_for("alice", root / "alice", chunk_size=4000), root / "alice.yaml")


def _space(root: Path, dataset: Path, trials: int, workers: int = 1, **extra: Any) -> Path:
    space = {
        "name": f"bench-w{workers}",
        "base": {"dataset": str(dataset), "species": "proton", "model": {"family": "fse", "params": {}},
                 "training": {"epochs": EPOCHS, "batch_size": 128, "max_train_rows": ROWS, "max_eval_rows": 1000,
                              "early_stopping_patience": None},
                 "scaling": {"num_workers": workers}, "cache_dir": str(root / "cache")},
        "studies": [{"species": "proton", "period": "LHC26a"}],
        "params": {"training.lr": {"type": "loguniform", "low": 1e-4, "high": 3e-3},
                   "model.params.dropout": {"type": "uniform", "low": 0.0, "high": 0.2}},
        "budget": {"num_samples": trials, "max_concurrent": 1},
        "scheduler": {"type": "none"},
        **extra,
    }
    path = root / f"space-w{workers}-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def autopid_trial_seconds(root: Path, dataset: Path, trials: int, workers: int = 1) -> dict[str, float]:
    """Wall time per trial of a whole study (Tune scheduling and trial start-up included),
    and that minus the trial's training time."""
    import pandas as pd

    from autopid.search.runner import run_search

    out = root / f"search-w{workers}-{time.monotonic_ns()}"
    _, (summary,) = run_search(_space(root, dataset, trials, workers), out_dir=out)
    rows = pd.read_csv(out / "studies" / summary["study"] / "trials.csv")
    per_trial = summary["wall_seconds"] / trials
    return {"trial_s": per_trial, "train_s": float(rows["train_seconds"].mean()),
            "overhead_s": per_trial - float(rows["train_seconds"].mean())}


def tune_trivial_seconds(trials: int) -> float:
    """Ray Tune's own cost per trial: a function that reports one result."""
    from ray import tune

    def trivial(config: dict[str, Any]) -> None:
        tune.report({"score": config["x"]})

    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        tune.Tuner(trivial, param_space={"x": tune.uniform(0, 1)},
                   tune_config=tune.TuneConfig(num_samples=trials, max_concurrent_trials=1, metric="score",
                                               mode="max"),
                   run_config=tune.RunConfig(storage_path=d, verbose=0)).fit()
        return (time.perf_counter() - t0) / trials


def ray_train_trivial_seconds(trials: int, workers: int = 2) -> float:
    """Ray Train's own cost per trial: a Tune trial (no resources of its own, as autopid's
    multi-worker trials) launching a ``TorchTrainer`` whose workers report once."""
    from ray import train, tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    def loop(config: dict[str, Any]) -> None:
        train.report({"score": 1.0})

    def trial(config: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as d:
            TorchTrainer(loop, scaling_config=train.ScalingConfig(num_workers=workers),
                         run_config=train.RunConfig(storage_path=d, name="trivial", callbacks=[TuneReportCallback()],
                                                    logging_config=train.LoggingConfig(log_level="WARNING"))).fit()

    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        tune.Tuner(tune.with_resources(trial, {"cpu": 0, "memory": 1024}), param_space={"x": tune.uniform(0, 1)},
                   tune_config=tune.TuneConfig(num_samples=trials, max_concurrent_trials=1, metric="score",
                                               mode="max"),
                   run_config=tune.RunConfig(storage_path=d, verbose=0)).fit()
        return (time.perf_counter() - t0) / trials


def optuna_inprocess_seconds(dataset: Path, root: Path, trials: int) -> float:
    """An Optuna loop calling ``fit`` in this process: the floor for a trial's cost."""
    import optuna
    import torch

    from autopid.data import PreprocessedDataset
    from autopid.train.config import TrainConfig
    from autopid.train.fit import fit
    from autopid.train.run import prepare_data

    base = yaml.safe_load(_space(root, dataset, trials).read_text())["base"]
    base["period"] = "LHC26a"
    ds = PreprocessedDataset(prepare_data(TrainConfig.model_validate(base)).path)
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: optuna.Trial) -> float:
        cfg = TrainConfig.model_validate({**base, "training": {
            **base["training"], "lr": trial.suggest_float("lr", 1e-4, 3e-3, log=True)},
            "model": {"family": "fse", "params": {"dropout": trial.suggest_float("dropout", 0.0, 0.2)}}})
        _, state = fit(cfg, ds)
        return state.best_objective

    study = optuna.create_study(direction="maximize")
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    return (time.perf_counter() - t0) / trials


def measure(trials: int = 6, root: Path | None = None, multi_worker: bool = True) -> dict[str, float]:
    from autopid import ray_local

    root = Path(root or tempfile.mkdtemp(prefix="autopid-bench-search-"))
    dataset = _data(root)
    ray_local.start_or_attach(num_cpus=None, log_to_driver=False)
    try:
        one = autopid_trial_seconds(root, dataset, trials)
        trivial = tune_trivial_seconds(trials)
        res = {"trial_s": one["trial_s"], "trial_train_s": one["train_s"], "trial_overhead_s": one["overhead_s"],
               "tune_trivial_trial_s": trivial}
        if multi_worker:
            n = max(2, trials // 3)
            many = autopid_trial_seconds(root, dataset, n, workers=2)
            res.update(trial_2workers_s=many["trial_s"], trial_overhead_2workers_s=many["overhead_s"],
                       ray_train_trivial_2workers_trial_s=ray_train_trivial_seconds(n))
    finally:
        ray_local.shutdown()
    res["optuna_inprocess_trial_s"] = optuna_inprocess_seconds(dataset, root, trials)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    res = measure(args.trials)
    print(f"{'one trial (1 epoch, 2,000 rows)':<44}{'seconds':>10}")
    for key, label in (("trial_s", "autopid search, 1 worker, per trial"),
                       ("trial_train_s", "  of which training"),
                       ("trial_overhead_s", "  overhead (trial minus training)"),
                       ("tune_trivial_trial_s", "Ray Tune, trivial function, per trial"),
                       ("optuna_inprocess_trial_s", "Optuna loop calling fit() in-process"),
                       ("trial_2workers_s", "autopid search, 2 Ray Train workers"),
                       ("trial_overhead_2workers_s", "  overhead (trial minus training)"),
                       ("ray_train_trivial_2workers_trial_s", "Ray Train, 2 workers reporting once")):
        if key in res:
            print(f"{label:<44}{res[key]:>10.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
