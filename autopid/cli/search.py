"""``autopid search``: hyperparameter search on Ray Tune + Optuna, resumable."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from autopid.cli._metrics import add_metrics_args, metrics_endpoint


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("search", parents=[common], help="hyperparameter search: Ray Tune + Optuna (TPE) + ASHA",
                       description="Search a YAML space, one study per (species, period). --resume continues a "
                       "search stopped by Ctrl-C, a crash or a stall: finished trials are kept, trials cut short "
                       "continue from their last epoch. One search at a time per directory. Exit status 1 when a study "
                       "ends without a model (every trial failed).")
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
    p.add_argument("--stall-timeout", type=float, default=None, metavar="S",
                   help="stop (resumable) when no trial progresses for S seconds; replaces the space's "
                   "budget.stall_timeout_s for this run, also with --resume (default: the space's)")
    add_metrics_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autopid.search.console import final_table
    from autopid.search.runner import SearchIncomplete, run_search

    with metrics_endpoint(args):
        try:
            search_dir, summaries = run_search(
                args.space, resume_dir=args.resume, out_dir=args.out, species=args.species, period=args.period,
                address=args.address, storage=args.storage, scheduler_address=args.scheduler,
                verbose=args.verbose > 0, stall_timeout_s=args.stall_timeout)
        except SearchIncomplete as exc:
            print(final_table(exc.summaries, exc.search_dir))
            raise
    print(final_table(summaries, search_dir))
    empty = [s for s in summaries if not s.get("best_model")]
    for s in empty:
        print(f"autopid: error: study {s['study']}: no trial produced a model ({s.get('failed', 0)} failed; "
              f"the reasons are in {search_dir}/studies/{s['study']}/trials.csv)", file=sys.stderr)
    return 1 if empty else 0
