"""Helpers for tests of the retraining: tiny job files and search spaces on simulated data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from autopid.retrain.job import RetrainJob, load_job

TINY_MDA = {"token_channels": 16, "gnn_hidden": 16, "gnn_layers": 1, "cnn_channels": 4, "mlp_hidden": 16,
            "classifier_channels": 16}


def write_tiny_space(path: str | Path, *, lr: tuple[float, float] = (5e-4, 3e-3), trials: int = 1) -> Path:
    """An MDA space small enough for a test: one epoch, a few thousand rows, 1-2 params."""
    space = {
        "name": "tiny-mda",
        "base": {"dataset": "ams", "species": "phosphorus", "model": {"family": "mda", "params": dict(TINY_MDA)},
                 "training": {"epochs": 1, "batch_size": 128, "lr": 1e-3, "lambda_max": 0.3, "signal_fraction": 0.5,
                              "max_train_rows": 1500, "max_eval_rows": 600, "threads": 1},
                 "scaling": {"num_workers": 1, "cpus_per_worker": 1}},
        "studies": [{"species": "phosphorus", "period": "P0"}],
        "params": {"model.params.gnn_hidden": {"type": "categorical", "choices": [16, 32]},
                   "training.lr": {"type": "loguniform", "low": lr[0], "high": lr[1]}},
        "budget": {"num_samples": trials},
    }
    path = Path(path)
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def write_job(path: str | Path, *, data_root: str | Path, dataset: str | Path, space: str | Path, work: str | Path,
              name: str = "tiny-ams", **over: Any) -> Path:
    """A job file for the AMS-like phosphorus selection on data under ``data_root``."""
    work = Path(work)
    job: dict[str, Any] = {
        "name": name, "experiment": "ams", "species": "phosphorus", "family": "mda",
        "periods": {"pattern": f"{data_root}/{{period}}"},
        "dataset": str(dataset), "cache_dir": str(work / "cache"),
        "schedule": {"every_s": 3600},
        "search": {"space": str(space), "trials": 1},
        "promotion": {"metric": "mc.auc", "margin": 0.0, "max_eval_rows": 2000},
        "registry": str(work / "registry"),
        "state": {"work_dir": str(work / "state")},
        "retry": {"max_attempts": 3, "backoff_s": 0.3, "backoff_factor": 2.0},
        "lease": {"duration_s": 4.0, "heartbeat_s": 1.0},
    }
    for key, value in over.items():
        job[key] = value
    path = Path(path)
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def tiny_job(path: str | Path, **kwargs: Any) -> RetrainJob:
    return load_job(write_job(path, **kwargs))
