"""Scheduled auto-retraining: job files, new-period detection, champion/challenger
evaluation, publication, and crash-safe state with leases.

    from autopid.retrain import load_job, StateStore, retrain_once
    job = load_job("jobs/ams_phosphorus.yaml")
    retrain_once(job, StateStore(job.state_url()))
"""

from __future__ import annotations

from autopid.retrain.job import RetrainJob, load_job, load_jobs
from autopid.retrain.periods import Period, scan_periods
from autopid.retrain.runner import retrain_once
from autopid.retrain.scheduler import run_scheduler
from autopid.retrain.state import StateStore

__all__ = ["Period", "RetrainJob", "StateStore", "load_job", "load_jobs", "retrain_once", "run_scheduler",
           "scan_periods"]
