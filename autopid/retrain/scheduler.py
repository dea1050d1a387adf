"""The long-running scheduler: every job on its schedule (cron in UTC, or an interval).

Each job runs once at start, then at its next cron time / after its interval. A run
waiting for a retry makes the scheduler wake at its ``next_attempt_at`` too. SIGTERM
(or SIGINT) sets the stop flag: the current step finishes, the run is released for
another scheduler, and the loop ends. During a search (which can take hours) SIGTERM is
passed on to the search as SIGINT, whose own handler stops it gracefully (it resumes
next time), so that the scheduler stops within a few seconds.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import signal
import threading
import time
from collections.abc import Iterator
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


_HANDLER: Any = None


def install_stop_handlers(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set ``stop``; call from the main thread, before Ray starts."""
    global _HANDLER
    import os
    import sys

    from autopid.retrain.period_pass import SEARCHING

    # ray.init() in this process would otherwise install Ray's C++ failure-signal handler,
    # which takes SIGTERM over from Python and aborts the process (core dump, no release)
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    if "ray" in sys.modules:
        _log.debug("ray was imported before the stop handlers: SIGTERM may abort while Ray runs")

    def handler(signum: int, _frame: Any) -> None:
        _log.warning("signal %d: stopping after the current step", signum)
        stop.set()
        if signum == signal.SIGTERM and SEARCHING.is_set():
            # the search installs its own graceful SIGINT handler while it runs
            os.kill(os.getpid(), signal.SIGINT)

    _HANDLER = handler
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


@contextlib.contextmanager
def keep_stop_handlers() -> Iterator[None]:
    """Around a search: ``ray.init()`` replaces the SIGTERM handler of the main thread with
    one that exits at once (``sys.exit(15)``: no release, a run left to its lease); while
    the stop handlers are installed, Ray's replacement is skipped, and they are installed
    again afterwards."""
    if _HANDLER is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    patched = None
    try:
        import ray._private.utils as ray_utils

        if callable(getattr(ray_utils, "set_sigterm_handler", None)):
            patched = ray_utils, ray_utils.set_sigterm_handler
            ray_utils.set_sigterm_handler = lambda _handler: None  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - Ray is a dependency
        pass
    try:
        yield
    finally:
        if patched is not None:
            patched[0].set_sigterm_handler = patched[1]  # type: ignore[attr-defined]
        restore_stop_handlers()


def restore_stop_handlers() -> None:
    """Install the stop handlers again (after a search: Ray or the search may have replaced
    them); a no-op outside the main thread or when none were installed."""
    if _HANDLER is None or threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _HANDLER)


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
