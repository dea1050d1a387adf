"""``autopid search``: hyperparameter search on Ray Tune + Optuna, resumable."""

from __future__ import annotations

import argparse
import os
from typing import Any

from autopid.cli._metrics import add_metrics_args, metrics_endpoint


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("search", parents=[common], help="hyperparameter search: Ray Tune + Optuna (TPE) + ASHA",
                       description="Search a YAML space, one study per (species, period), each trial a Ray Train "
                       "run. --resume continues a killed search without re-running finished trials.")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--space", help="search space YAML (see search_spaces/)")
    g.add_argument("--resume", metavar="DIR", help="continue the search in DIR")
    p.add_argument("--species", default=None, help="only this species (or a new study for it with --period)")
    p.add_argument("--period", default=None, help="only this run period")
    p.add_argument("--out", default=None, help="search directory (default: searches/<name>-<time>)")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: sqlite:///<dir>/optuna.db)")
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                   help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--scheduler", default=os.environ.get("DASK_SCHEDULER_ADDRESS"),
                   help="Dask distributed scheduler for preprocessing (default: local threads)")
    add_metrics_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autopid.search.runner import run_search

    with metrics_endpoint(args):
        search_dir, summaries = run_search(
            args.space, resume_dir=args.resume, out_dir=args.out, species=args.species, period=args.period,
            address=args.address, storage=args.storage, scheduler_address=args.scheduler)
    print(f"\nsearch directory: {search_dir}")
    print(f"{'study':<24}{'trials':>7}{'stopped':>9}{'failed':>8}{'best objective':>16}  best trial")
    for s in summaries:
        best = next(v for k, v in s.items() if k.startswith("best_") and isinstance(v, float))
        print(f"{s['study']:<24}{s['trials']:>7}{s['stopped_early']:>9}{s['failed']:>8}{best:>16.4f}  {s['best_trial']}")
    import pandas as pd

    for s in summaries:
        trials = pd.read_csv(os.path.join(os.path.dirname(s["best_config"]), "trials.csv"))
        metric = next(c for c in trials.columns if c.startswith("best_"))
        cols = [c for c in ("trial_id", "status", "epochs", metric, "val_auc", "domain_accuracy") if c in trials]
        params = [c for c in trials.columns if c.startswith("param.")]
        top = trials.sort_values(metric, ascending=False).head(5)[cols + params]
        top.columns = [c.removeprefix("param.").split(".")[-1] for c in top.columns]
        print(f"\nbest trials of {s['study']}:")
        print(top.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    for s in summaries:
        print(f"{s['study']}: best model {s['best_model']}; best config {s['best_config']} "
              f"(autopid train --config ...); all trials in {os.path.dirname(s['best_config'])}/trials.csv")
    return 0
