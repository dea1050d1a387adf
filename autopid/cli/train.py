"""``autopid train``: one model, one run directory, on Ray Train."""

from __future__ import annotations

import argparse
import os
from typing import Any

from autopid.cli._args import positive_int


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("train", parents=[common], help="train one model on Ray Train (one run directory)",
                       description="Train one model from a training YAML on Ray Train workers. "
                       "Re-running with the same --out resumes from the last checkpoint.")
    p.add_argument("--config", required=True, metavar="YAML",
                   help="training YAML, e.g. a search's best_config.yaml (required)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="run directory; an existing one is resumed (default: runs/train-<family>-<species>-<time>)")
    p.add_argument("--num-workers", type=positive_int, default=None, metavar="N",
                   help="Ray Train workers (default: the config's scaling.num_workers)")
    p.add_argument("--use-gpu", action="store_true",
                   help="train on GPUs, one per worker unless scaling.gpus_per_worker says less (default: the "
                   "config's scaling.use_gpu)")
    p.add_argument("--epochs", type=positive_int, default=None, metavar="N",
                   help="maximum epochs (default: the config's training.epochs)")
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                   help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--scheduler", default=os.environ.get("DASK_SCHEDULER_ADDRESS"), metavar="ADDRESS",
                   help="Dask distributed scheduler for preprocessing (default: $DASK_SCHEDULER_ADDRESS, else local "
                   "threads)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autopid.config import load_yaml_config
    from autopid.train.config import TrainConfig
    from autopid.train.run import train

    cfg = load_yaml_config(args.config, TrainConfig)
    scaling = cfg.scaling.model_copy(update={k: v for k, v in {
        "num_workers": args.num_workers, "use_gpu": args.use_gpu or None}.items() if v is not None})
    training = cfg.training if args.epochs is None else cfg.training.model_copy(update={"epochs": args.epochs})
    cfg = TrainConfig.model_validate({**cfg.model_dump(), "scaling": scaling.model_dump(),
                                      "training": training.model_dump()})
    summary = train(cfg, run_dir=args.out, address=args.address, scheduler=args.scheduler)
    m = summary["best_metrics"]
    stopped = (f", stopped early (max {summary['epochs_max']})"
               if summary.get("epochs_max") and summary["epochs_run"] < summary["epochs_max"] else "")
    print(f"best epoch {summary['best_epoch']} of {summary['epochs_run']} run{stopped}: val AUC {m['val_auc']:.4f}, "
          f"domain accuracy {m['domain_accuracy']:.3f}, objective {m['objective']:.4f}")
    print(f"model: {summary['model']}")
    print(f"run directory: {summary['run_dir']} ({summary['seconds']:.0f} s)")
    return 0
