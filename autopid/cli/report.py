"""``autopid report``: an HTML page with PNG plots for a run, search or retraining directory."""

from __future__ import annotations

import argparse
from typing import Any

from autopid.cli._args import positive_int


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("report", parents=[common], help="HTML report with plots of a run, search or retraining",
                       description="Evaluate the trained model(s) of a training run, search or retraining "
                       "directory against the baselines on the test split, and write an HTML page with PNG "
                       "plots: ROC curves, efficiency and purity against p or rigidity, score distributions, "
                       "the AMS L1 charge before and after the selection, MDA branch attention, and a search's "
                       "history and parameter importances. Plots of Data that use the hidden truth of "
                       "simulated Data are labelled 'hidden truth (evaluation only)'.")
    p.add_argument("directory", help="training run, search or retraining directory")
    p.add_argument("--out", default=None, help="HTML file to write (default: DIRECTORY/report/index.html); "
                   "the PNGs go next to it")
    p.add_argument("--max-rows", type=positive_int, default=50_000,
                   help="at most this many test rows per domain (MC, Data), and training rows for the baselines "
                   "(default: 50000)")
    p.add_argument("--no-learned-baselines", action="store_true",
                   help="compare with the standard cuts only (skip fitting XGBoost and the MLP)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autopid.report import make_report

    rep = make_report(args.directory, args.out, max_rows=args.max_rows,
                      learned_baselines=not args.no_learned_baselines)
    print(f"{len(rep.figures)} figures")
    print(rep.path)
    return 0
