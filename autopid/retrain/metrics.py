"""Prometheus metrics of the retraining (defined in :mod:`autopid.monitoring.metrics`),
updated after every pass from the pass's results and the state database."""

from __future__ import annotations

from autopid._logging import get_logger
from autopid.retrain.job import RetrainJob
from autopid.retrain.period_pass import PassResult
from autopid.retrain.state import FAILED, PENDING, REJECTED, RUNNING, SUCCEEDED, StateStore

_log = get_logger(__name__)
STATUSES = (PENDING, RUNNING, SUCCEEDED, REJECTED, FAILED)


def record_pass(job: RetrainJob, store: StateStore, results: list[PassResult]) -> None:
    """Counters from what this pass did; gauges from the whole state of the job."""
    try:
        from autopid.monitoring import metrics as m
    except ImportError:  # pragma: no cover - monitoring is optional for the retraining itself
        return
    labels = (job.name, job.experiment, job.species)
    for r in results:
        if r.status == SUCCEEDED and r.published:
            m.PROMOTIONS.labels(*labels).inc()
        elif r.status == REJECTED:
            m.REJECTIONS.labels(*labels).inc()
        elif r.status in (PENDING, FAILED) and r.decision is None:
            m.RUN_FAILURES.labels(*labels).inc()
    rows = store.all_runs(job.name)
    for status in STATUSES:
        m.RUNS.labels(*labels, status).set(sum(1 for r in rows if r.status == status))
    m.PERIODS_DISCOVERED.labels(*labels).set(len(rows))
    m.PERIODS_PENDING.labels(*labels).set(sum(1 for r in rows if r.status in (PENDING, RUNNING)))
    done = [r.finished_at for r in rows if r.status in (SUCCEEDED, REJECTED) and r.finished_at]
    if done:
        m.LAST_SUCCESS.labels(*labels).set(max(done))
    promoted = [r.finished_at for r in rows if r.status == SUCCEEDED and r.published and r.finished_at]
    if promoted:
        m.LAST_PROMOTION.labels(*labels).set(max(promoted))
