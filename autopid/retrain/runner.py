"""One pass of a job: detect complete periods, claim each due one, run it, record it."""

from __future__ import annotations

import os
import threading
import traceback

from autopid._logging import get_logger
from autopid.retrain.job import RetrainJob
from autopid.retrain.lease import Heartbeat, Stopped
from autopid.retrain.owner import dead_here, new_owner
from autopid.retrain.period_pass import PassResult, clean_work_dir, run_period
from autopid.retrain.periods import scan_periods
from autopid.retrain.state import FAILED, LeaseLost, StateStore

_log = get_logger(__name__)


def _error_text(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" (at {last[0].filename.rsplit('/', 1)[-1]}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"[:2000]


def retrain_once(job: RetrainJob, store: StateStore, *, owner: str | None = None,
                 stop: threading.Event | None = None) -> list[PassResult]:
    """Handle every complete period of ``job`` that is due; returns what this call did.

    A period owned by another live scheduler, waiting for a retry, or finished is skipped."""
    from autopid.search.runner import SearchIncomplete

    owner = owner or new_owner()
    stop = stop or threading.Event()
    clean_work_dir(job)  # staging directories of killed exports
    periods, incomplete = scan_periods(job.periods)
    for name in incomplete:
        _log.info("%s: period %s is incomplete (no %s yet); ignored until it is", job.name, name,
                  job.periods.complete_marker)
    recorded = []
    for period in periods:
        try:
            if store.seen(job.name, period.name):
                _log.info("%s: new period %s (runs %s)", job.name, period.name, period.runs or "from the files")
            recorded.append(period)
        except Exception as exc:  # e.g. a name too long for the database: this period only
            _log.error("%s: period %s cannot be recorded in the state database: %s", job.name, period.name,
                       _error_text(exc))
    results: list[PassResult] = []
    for period in recorded:
        if stop.is_set():
            break
        row = store.claim(job.name, period.name, owner, job.lease.duration_s)
        if row is None:
            current = store.get(job.name, period.name)
            if current is not None and current.status == "running" and dead_here(current.owner):
                # the holder died on this machine: take the run over now, not when its lease ends
                row = store.claim(job.name, period.name, owner, job.lease.duration_s, dead_owner=current.owner)
            if row is None:
                if current is not None and current.status == "running":
                    _log.info("%s/%s: held by %s; skipped", job.name, period.name, current.owner)
                continue
        if row.attempts > job.retry.max_attempts:
            # the previous owners died mid-run (killed, out of memory) every time
            store.fail(job.name, period.name, owner, f"no attempt finished in {job.retry.max_attempts} tries "
                       f"(the last owner {row.owner} stopped renewing its lease)",
                       attempts=row.attempts, max_attempts=job.retry.max_attempts, delay_s=0)
            results.append(PassResult(job.name, period.name, FAILED, None, None))
            continue
        _log.info("%s/%s: attempt %d (%s)", job.name, period.name, row.attempts, owner)
        with Heartbeat(store, job.name, period.name, owner, job.lease.duration_s, job.lease.heartbeat, stop) as beat:
            try:
                results.append(run_period(job, period, store, row, owner, beat))
            except LeaseLost as exc:
                _log.error("%s", exc)
            except Stopped as exc:
                store.release(job.name, period.name, owner, str(exc))
                break
            except SearchIncomplete as exc:
                if exc.exit_code == 130 or stop.is_set():  # Ctrl-C or SIGTERM during the search: a clean stop
                    stop.set()
                    store.release(job.name, period.name, owner, f"stopping on request during the search ({exc}); "
                                  "the run is released and its search resumes next time")
                    break
                err = _error_text(exc)  # stalled: a failed attempt; the next one resumes the search
                _log.error("%s/%s: attempt %d failed: %s", job.name, period.name, row.attempts, err)
                status = store.fail(job.name, period.name, owner, err, attempts=row.attempts,
                                    max_attempts=job.retry.max_attempts, delay_s=job.retry.delay(row.attempts))
                results.append(PassResult(job.name, period.name, status, None, None))
            except Exception as exc:
                if beat.lost is not None:  # the failure may come from losing the run: write nothing
                    _log.error("%s", beat.lost)
                    continue
                err = _error_text(exc)
                _log.error("%s/%s: attempt %d failed: %s", job.name, period.name, row.attempts, err)
                _log.debug("traceback", exc_info=True)
                status = store.fail(job.name, period.name, owner, err, attempts=row.attempts,
                                    max_attempts=job.retry.max_attempts, delay_s=job.retry.delay(row.attempts))
                results.append(PassResult(job.name, period.name, status, None, None))
    return results
