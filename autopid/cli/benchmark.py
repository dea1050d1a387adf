"""``autopid benchmark``: train every method with the same splits and seeds; tables and plots."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from autopid.cli._args import positive_int


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "benchmark", parents=[common],
        help="train every method (models and baselines) with the same splits and seeds; Markdown, JSON, plots",
        description="Train every method of each dataset (FSE or MDA with and without domain adaptation, the "
        "classic selection, XGBoost, the MLP with imputation) with the same splits and seeds, evaluate them on "
        "the same test rows, and write OUT/benchmark.json (records {experiment, species, charge, method, "
        "domain, metric, value, std, bin}), OUT/extra.json (the second-track veto alone), OUT/benchmark.md "
        "and OUT/plots/*.png. Without --dataset, small ALICE-like (pion, kaon, proton) and AMS-like "
        "(phosphorus, sulfur) periods are simulated into OUT/data and used. Data metrics use the hidden "
        "truth of simulated Data, for evaluation only.")
    p.add_argument("--dataset", action="append", default=[], metavar="YAML",
                   help="dataset YAML or built-in name (repeatable); its 'targets' (else every species) are "
                   "benchmarked; the classic baselines find their branches through its 'roles'")
    p.add_argument("--period", default="*",
                   help="run period substituted for {period} in the datasets' file patterns (default: every period)")
    p.add_argument("--quick", action="store_true",
                   help="small samples and short training (about 10 minutes on 2 cores with the built-in data)")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # seconds: for tests
    p.add_argument("--seeds", type=positive_int, default=None,
                   help="training seeds per method; values are the mean and std over them "
                   "(default: 2 with --quick, 3 otherwise)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="worker processes, one torch thread each (default: the CPUs available)")
    p.add_argument("--cache-dir", default=None, help="preprocessing cache (default: OUT/cache)")
    p.add_argument("--data-dir", default=None,
                   help="where the built-in periods are simulated (default: OUT/data); reused when the same "
                   "simulation is there")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.set_defaults(func=run)


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run (for the Markdown header)."""
    parts = ["autopid", "benchmark"]
    for d in args.dataset:
        parts += ["--dataset", d]
    if args.dataset and args.period != "*":
        parts += ["--period", args.period]
    if args.tiny:
        parts.append("--tiny")
    elif args.quick:
        parts.append("--quick")
    for opt in ("seeds", "workers", "cache_dir", "data_dir"):
        value = getattr(args, opt)
        if value is not None:
            parts += [f"--{opt.replace('_', '-')}", str(value)]
    if args.no_plots:
        parts.append("--no-plots")
    parts += ["--out", args.out]
    return " ".join(shlex.quote(p) for p in parts)


def run(args: argparse.Namespace) -> int:
    from autopid.benchmark import (
        PRESETS,
        builtin_case_configs,
        cases_from_configs,
        run_benchmark,
        user_cases,
    )
    from autopid.benchmark.cases import simulate_builtin

    t0 = time.perf_counter()
    preset = PRESETS["tiny" if args.tiny else ("quick" if args.quick else "full")]
    out = Path(args.out)
    sim: dict[str, float] = {}
    if args.dataset:
        cases = user_cases(args.dataset, args.period)
    else:
        data_root = Path(args.data_dir) if args.data_dir else out / "data"
        sim = simulate_builtin(data_root, preset)
        cases = cases_from_configs(builtin_case_configs(data_root))
    command = _command(args)

    def progress(res: Any, done: int, total: int) -> None:
        j = res.job
        state = "skipped" if res.skipped else (f"FAILED: {res.error[:200]}" if res.error else "ok")
        print(f"[{done}/{total}] {j.experiment} {j.species} seed {j.seed} {j.method}: {state} "
              f"({res.seconds:.0f} s)", flush=True)

    result = run_benchmark(cases, out, preset=preset, seeds=args.seeds, workers=args.workers,
                           cache_dir=args.cache_dir, command=command, plots=not args.no_plots,
                           progress=None if args.quiet else progress, simulation_seconds=sim)
    print(f"{len(result.records)} records -> {out / 'benchmark.json'} ({len(result.extra)} in extra.json)")
    print(f"{out / 'benchmark.md'}; {time.perf_counter() - t0:.0f} s wall, {result.cpu_seconds:.0f} s CPU")
    for j in result.failures:
        print(f"autopid: warning: {j.job.method} failed on {j.job.experiment} {j.job.species} seed "
              f"{j.job.seed}: {j.error}", file=sys.stderr)
    return 1 if result.failures else 0
