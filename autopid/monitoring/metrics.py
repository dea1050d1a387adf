"""The metrics, defined once. Names are prefixed ``autopid_``; labels follow what a
panel or an alert groups by (experiment, species, period, model family, job)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.process_collector import ProcessCollector

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)

STUDY = ("experiment", "species", "period", "model")
TRIAL = (*STUDY, "trial")

# --- search (Ray Tune, updated on the driver by a Tune callback) ----------------------
TRIALS_STARTED = Counter("autopid_trials_started", "Search trials started", STUDY, registry=REGISTRY)
TRIALS_COMPLETED = Counter("autopid_trials_completed", "Search trials that ran every epoch", STUDY,
                           registry=REGISTRY)
TRIALS_STOPPED_EARLY = Counter("autopid_trials_stopped_early",
                               "Search trials stopped before the last epoch (ASHA or patience)", STUDY,
                               registry=REGISTRY)
TRIALS_FAILED = Counter("autopid_trials_failed", "Search trials that raised", STUDY, registry=REGISTRY)
TRIALS_RUNNING = Gauge("autopid_trials_running", "Search trials running now", STUDY, registry=REGISTRY)
BEST_OBJECTIVE = Gauge("autopid_study_best_objective", "Best objective reported so far in a study", STUDY,
                       registry=REGISTRY)

# --- training (reported by Ray Train workers each epoch, forwarded through Tune) -------
EPOCH_DURATION = Histogram("autopid_epoch_duration_seconds", "Training time of one epoch", STUDY,
                           buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600), registry=REGISTRY)
EVENTS_PER_SECOND = Gauge("autopid_training_events_per_second", "Training events per second in the last epoch",
                          TRIAL, registry=REGISTRY)
VALIDATION_AUC = Gauge("autopid_validation_auc", "Validation ROC AUC on MC after the last epoch", TRIAL,
                       registry=REGISTRY)
DOMAIN_ACCURACY = Gauge("autopid_domain_accuracy",
                        "Accuracy of a Data-vs-MC classifier on the model's features (0.5: indistinguishable)",
                        TRIAL, registry=REGISTRY)
ADVERSARIAL_LAMBDA = Gauge("autopid_adversarial_lambda", "Gradient-reversal lambda at the end of the last epoch",
                           TRIAL, registry=REGISTRY)

# --- preprocessing (Dask) --------------------------------------------------------------
PREPROCESS_EVENTS = Counter("autopid_preprocess_events", "Entries read by preprocessing", ("experiment", "dataset"),
                            registry=REGISTRY)
PREPROCESS_RATE = Gauge("autopid_preprocess_events_per_second", "Entries per second of the last preprocessing",
                        ("experiment", "dataset"), registry=REGISTRY)
CACHE_HITS = Counter("autopid_preprocess_cache_hits", "Preprocessing requests answered from the cache",
                     ("experiment", "dataset"), registry=REGISTRY)
CACHE_MISSES = Counter("autopid_preprocess_cache_misses", "Preprocessing requests that had to read ROOT files",
                       ("experiment", "dataset"), registry=REGISTRY)

# --- retraining scheduler ---------------------------------------------------------------
# not "job": Prometheus sets that label itself on every scraped series
JOB = ("retrain_job", "experiment", "species")
PERIODS_DISCOVERED = Gauge("autopid_scheduler_periods_discovered", "Complete periods seen by a job", JOB,
                           registry=REGISTRY)
PERIODS_PENDING = Gauge("autopid_scheduler_periods_pending", "Complete periods not yet handled by a job", JOB,
                        registry=REGISTRY)
RUNS = Gauge("autopid_scheduler_runs", "Retraining runs by status", (*JOB, "status"), registry=REGISTRY)
LAST_SUCCESS = Gauge("autopid_scheduler_last_success_timestamp_seconds",
                     "Unix time of the job's last successful run (promoted or rejected)", JOB, registry=REGISTRY)
LAST_PROMOTION = Gauge("autopid_scheduler_last_promotion_timestamp_seconds",
                       "Unix time of the job's last promotion", JOB, registry=REGISTRY)
PROMOTIONS = Counter("autopid_scheduler_promotions", "Candidates published by the promotion gate", JOB,
                     registry=REGISTRY)
REJECTIONS = Counter("autopid_scheduler_rejections", "Candidates rejected by the promotion gate", JOB,
                     registry=REGISTRY)
RUN_FAILURES = Counter("autopid_scheduler_run_failures", "Failed retraining attempts", JOB, registry=REGISTRY)

# --- registry and inference -------------------------------------------------------------
REGISTRY_VERSIONS = Gauge("autopid_registry_versions", "Published model versions", ("experiment", "species", "state"),
                          registry=REGISTRY)
INFERENCE_LATENCY = Histogram("autopid_inference_latency_seconds", "ONNX Runtime time of one inference batch",
                              ("experiment", "species", "model"),
                              buckets=(1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1, 5), registry=REGISTRY)
INFERENCE_TRACKS = Counter("autopid_inference_tracks", "Tracks scored", ("experiment", "species", "model"),
                           registry=REGISTRY)


def metric_names() -> list[str]:
    """Names of autopid's own metric families (as exposed, counters with ``_total``)."""
    names = set()
    for family in REGISTRY.collect():
        if family.name.startswith("autopid_"):
            names.add(family.name + ("_total" if family.type == "counter" else ""))
    return sorted(names)


def record_registry(registry: object) -> None:
    """Set ``autopid_registry_versions`` from a :class:`autopid.publish.Registry`."""
    counts: dict[tuple[str, str, str], int] = {}
    for v in registry.versions():  # type: ignore[attr-defined]
        key = (v.id.experiment, v.id.species, "revoked" if v.revoked else "active")
        counts[key] = counts.get(key, 0) + 1
    for (exp, species, state), n in counts.items():
        REGISTRY_VERSIONS.labels(exp, species, state).set(n)
