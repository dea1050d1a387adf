"""``autopid scheduler``: run every job on its schedule, or show what happened."""

from __future__ import annotations

import argparse
from typing import Any

from autopid.cli._metrics import add_metrics_args, metrics_endpoint
from autopid.cli.retrain import state_options, with_overrides


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("scheduler", parents=[common], help="auto-retraining: run jobs on their schedules, status",
                       description="Run the retraining jobs of a directory on their schedules (cron or interval), "
                       "or print the periods seen, runs, decisions and what serves now.")
    actions = p.add_subparsers(dest="scheduler_command", metavar="ACTION", parser_class=type(p))
    actions.required = True
    run_p = actions.add_parser("run", parents=[common], help="long-running: each job on its schedule",
                               description="SIGTERM stops it after the current step (the run is released).")
    run_p.add_argument("--jobs", default="jobs", metavar="DIR", help="directory of job files (default: jobs/)")
    run_p.add_argument("--max-passes", type=int, default=None, metavar="N",
                       help="stop after N passes (tests, cron-like use; default: run until stopped)")
    run_p.add_argument("--until-idle", action="store_true",
                       help="stop when no period is due, running elsewhere or waiting to retry (default: off)")
    state_options(run_p)
    add_metrics_args(run_p)  # Prometheus: autopid_scheduler_* (deploy/prometheus scrapes port 9465)
    run_p.set_defaults(func=run)
    st = actions.add_parser("status", parents=[common], help="periods seen, runs, decisions, what serves now",
                            description="Per job: the periods on disk, the runs and the gate's decisions, which "
                            "registry entry serves each period and why (promoted, or kept after a rejection), "
                            "and the registry lineage.")
    st.add_argument("--jobs", default="jobs", metavar="DIR", help="directory of job files (default: jobs/)")
    st.add_argument("--job", default=None, metavar="NAME", help="only this job (default: every job in --jobs)")
    state_options(st)
    st.set_defaults(func=status)
    rt = actions.add_parser("retry", parents=[common], help="make a failed period due again (after fixing its cause)")
    rt.add_argument("--jobs", default="jobs", metavar="DIR", help="directory of job files (default: jobs/)")
    rt.add_argument("--job", required=True, metavar="NAME", help="the job's name (its `name:`, required)")
    rt.add_argument("--period", required=True, help="the failed period, e.g. P2026b (required)")
    state_options(rt)
    rt.set_defaults(func=retry)


def _jobs(args: argparse.Namespace) -> list[Any]:
    from autopid.errors import ConfigError
    from autopid.retrain.job import load_jobs

    jobs = [with_overrides(job, args) for _, job in load_jobs(args.jobs)]
    if getattr(args, "job", None):
        jobs = [j for j in jobs if j.name == args.job]
        if not jobs:
            raise ConfigError(f"{args.jobs}: no job named {args.job!r}")
    return jobs


def run(args: argparse.Namespace) -> int:
    import threading

    from autopid.retrain.report import decision_table
    from autopid.retrain.scheduler import install_stop_handlers, run_scheduler
    from autopid.retrain.state import StateStore

    jobs = _jobs(args)
    stop = threading.Event()
    install_stop_handlers(stop)
    with metrics_endpoint(args):
        results = run_scheduler(jobs, max_passes=args.max_passes, until_idle=args.until_idle, stop=stop)
    for job in jobs:
        handled = {r.period for r in results if r.job == job.name}
        rows = [r for r in StateStore(job.state_url()).all_runs(job.name) if r.period in handled]
        if rows:
            print(f"job {job.name}:")
            print(decision_table(rows))
    return 0


def status(args: argparse.Namespace) -> int:
    from autopid.retrain.period_pass import clean_work_dir
    from autopid.retrain.report import status_report
    from autopid.retrain.state import StateStore

    jobs = _jobs(args)
    for job in jobs:
        clean_work_dir(job)  # staging directories of killed exports
    print(status_report(jobs, {j.name: StateStore(j.state_url()) for j in jobs}))
    return 0


def retry(args: argparse.Namespace) -> int:
    import getpass

    from autopid.errors import AutopidError
    from autopid.retrain.state import StateStore

    (job,) = _jobs(args)
    store = StateStore(job.state_url())
    if not store.reset(job.name, args.period, getpass.getuser()):
        row = store.get(job.name, args.period)
        raise AutopidError(f"{job.name}/{args.period}: not a failed run (status: {row.status if row else 'never seen'})")
    print(f"{job.name}/{args.period}: due again; the next pass of the job retries it")
    return 0
