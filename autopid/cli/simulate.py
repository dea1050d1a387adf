"""``autopid simulate alice|ams``: write simulated periods as ROOT files."""

from __future__ import annotations

import argparse
import time
from typing import Any

from autopid._logging import get_logger
from autopid.cli._args import non_negative_int

_log = get_logger(__name__)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "simulate",
        parents=[common],
        help="write simulated ALICE-like or AMS-like ROOT files (MC and Data) for one or more periods",
        description="Write one ROOT file per run for MC and for Data (hidden truth) of each period. "
        "A period is complete when OUT/PERIOD/period.json exists.",
    )
    p.add_argument("experiment", choices=["alice", "ams"])
    p.add_argument("--out", required=True, help="output directory (periods are written below it)")
    p.add_argument("--period", action="append", required=True,
                   help="period name; repeat for consecutive periods (e.g. --period P2026a --period P2026b)")
    p.add_argument("--runs", type=int, default=4, help="runs per period (default: 4)")
    p.add_argument("--events-per-run", type=int, default=50_000, help="entries per run and domain (default: 50000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--first-run", type=non_negative_int, default=None,
                   help="first run number of the first period (default: derived from the period name)")
    p.add_argument("--config", default=None, help="YAML overriding simulator parameters (see --dump-config)")
    p.add_argument("--dump-config", action="store_true", help="print the resolved simulator configuration and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autopid.config import dump_yaml, load_yaml_config
    from autopid.simulate import EXPERIMENTS, simulate_period

    exp = EXPERIMENTS[args.experiment]
    cfg = load_yaml_config(args.config, exp.config_type) if args.config else exp.config_type()
    if args.dump_config:
        print(dump_yaml(cfg), end="")
        return 0
    first = args.first_run
    for period in args.period:
        t0 = time.perf_counter()
        path = simulate_period(exp, cfg, args.out, period, runs=args.runs,
                               events_per_run=args.events_per_run, seed=args.seed, first_run=first)
        dt = time.perf_counter() - t0
        n = 2 * args.runs * args.events_per_run
        print(f"{period}: {n} entries (MC + Data) in {dt:.1f} s ({n / dt:,.0f}/s) -> {path}")
        if first is not None:
            first += args.runs
    return 0
