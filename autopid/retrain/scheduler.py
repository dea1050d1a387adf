"""The long-running scheduler: every job on its schedule (cron in UTC, or an interval).

Each job runs once at start, then at its next cron time / after its interval. A run
waiting for a retry makes the scheduler wake at its ``next_attempt_at`` too. SIGTERM
(or SIGINT) sets the stop flag: the current step finishes, the run is released for
another scheduler, and the loop ends.
"""

from __future__ import annotations

import datetime as _dt
import signal
import threading
import time
from typing import Any

from autopid._logging import get_logger
from autopid.retrain.job import RetrainJob
from autopid.retrain.metrics import record_pass
from autopid.retrain.period_pass import PassResult
from autopid.retrain.runner import new_owner, retrain_once
from autopid.retrain.state import PENDING, RUNNING, StateStore

_log = get_logger(__name__)


def next_due(job: RetrainJob, after: float) -> float:
    """The job's next run time after ``after`` (UNIX seconds)."""
    if job.schedule.every_s is not None:
        return after + job.schedule.every_s
    from croniter import croniter

    start = _dt.datetime.fromtimestamp(after, _dt.timezone.utc)
    return float(croniter(str(job.schedule.cron), start).get_next(float))


def _retry_due(store: StateStore, job: RetrainJob) -> float | None:
    times = [r.next_attempt_at if r.status == PENDING else r.lease_expires_at
             for r in store.all_runs(job.name) if r.status in (PENDING, RUNNING)]
    times = [t for t in times if t is not None]
    return min(times) if times else None


def install_stop_handlers(stop: threading.Event) -> None:
    def handler(signum: int, _frame: Any) -> None:
        _log.warning("signal %d: stopping after the current step", signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def run_scheduler(jobs: list[RetrainJob], *, max_passes: int | None = None, until_idle: bool = False,
                  stop: threading.Event | None = None, poll_s: float = 1.0) -> list[PassResult]:
    """Run the jobs on their schedules until stopped, ``max_passes`` passes (of all due
    jobs) are done, or, with ``until_idle``, nothing is left to do or retry."""
    stop = stop or threading.Event()
    owner = new_owner()
    stores = {job.name: StateStore(job.state_url()) for job in jobs}
    due = {job.name: time.time() for job in jobs}
    done: list[PassResult] = []
    passes = 0
    _log.info("scheduler %s: %d job(s): %s", owner, len(jobs), ", ".join(j.name for j in jobs))
    while not stop.is_set():
        now = time.time()
        ran = False
        for job in jobs:
            store = stores[job.name]
            retry = _retry_due(store, job)
            if due[job.name] <= now or (retry is not None and retry <= now):
                ran = True
                results = retrain_once(job, store, owner=owner, stop=stop)
                record_pass(job, store, results)
                done += results
                due[job.name] = next_due(job, time.time()) if due[job.name] <= now else due[job.name]
        if ran:
            passes += 1
        if max_passes is not None and passes >= max_passes:
            break
        if until_idle and ran and all(_retry_due(stores[j.name], j) is None for j in jobs):
            break
        wake = min([*due.values(), *[t for j in jobs if (t := _retry_due(stores[j.name], j)) is not None]])
        stop.wait(max(0.05, min(poll_s, wake - time.time())))
    _log.info("scheduler %s: stopped after %d pass(es)", owner, passes)
    return done
