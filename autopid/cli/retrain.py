"""``autopid retrain``: one job, one pass over its new periods (``--once``) or on its schedule."""

from __future__ import annotations

import argparse
import os
from typing import Any


def state_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", default=None, metavar="URL",
                   help="state database SQLAlchemy URL, e.g. postgresql+psycopg://user:pw@host/db (default: the "
                   "job files' state.url, else sqlite:///<work_dir>/state.db)")
    p.add_argument("--work-dir", default=None, metavar="DIR",
                   help="searches and exports (default: the job files' state.work_dir, else retrain/)")


def with_overrides(job: Any, args: argparse.Namespace) -> Any:
    update = {}
    if args.state is not None:
        update["url"] = args.state
    if args.work_dir is not None:
        update["work_dir"] = args.work_dir
    return job.model_copy(update={"state": job.state.model_copy(update=update)}) if update else job


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("retrain", parents=[common], help="retrain and publish models for new data-taking periods",
                       description="Detect complete new periods of a job, search (warm-started) on Ray, compare the "
                       "candidate with the serving model on the new period's held-out data, publish or reject, and "
                       "record it in the state database.")
    p.add_argument("--job", required=True, metavar="YAML", help="job file, e.g. jobs/ams_phosphorus.yaml (required)")
    p.add_argument("--once", action="store_true", help="one pass: handle every new period, then exit "
                   "(default: off, the job runs on its schedule like `autopid scheduler run`)")
    state_options(p)
    p.add_argument("--address", default=None,
                   help="Ray cluster address for the searches (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--pushgateway", default=os.environ.get("AUTOPID_PUSHGATEWAY"), metavar="HOST:PORT",
                   help="push the metrics of this pass to a Prometheus Pushgateway at the end "
                   "(default: $AUTOPID_PUSHGATEWAY, else none)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autopid.retrain.job import load_job
    from autopid.retrain.report import decision_table
    from autopid.retrain.runner import retrain_once
    from autopid.retrain.scheduler import install_stop_handlers, run_scheduler
    from autopid.retrain.state import FAILED, PENDING, StateStore

    if args.address:
        os.environ["RAY_ADDRESS"] = args.address  # read by autopid.train.ray_train.init_ray
    job = with_overrides(load_job(args.job), args)
    store = StateStore(job.state_url())
    if args.once:
        import threading

        stop = threading.Event()
        install_stop_handlers(stop)
        results = retrain_once(job, store, stop=stop)
        from autopid.retrain.metrics import record_pass

        record_pass(job, store, results)
    else:
        results = run_scheduler([job])
    handled = {r.period for r in results}
    rows = [r for r in store.all_runs(job.name) if r.period in handled]
    print(f"job {job.name}: {len(results)} period(s) handled in this pass")
    if rows:
        print(decision_table(rows))
    if args.pushgateway:
        from autopid.monitoring import push

        push(args.pushgateway, job="autopid_retrain", grouping={"retrain_job": job.name})
    # a failed attempt (retried later, or given up) is a failed command: a CronJob shows it
    return 1 if any(r.status in (FAILED, PENDING) for r in results) else 0
