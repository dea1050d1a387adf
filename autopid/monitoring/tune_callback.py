"""A Ray Tune callback that turns trial events and reported epoch metrics into
Prometheus metrics on the driver, where ``/metrics`` is served: Train workers report to
Tune, Tune hands every result to the driver's callbacks."""

from __future__ import annotations

import math
from typing import Any

from ray.tune import Callback

from autopid.monitoring import metrics as m


class MetricsCallback(Callback):
    def __init__(self, labels: dict[str, str], max_epochs: int, objective: str = "objective",
                 mode: str = "max") -> None:
        self.labels = {k: str(labels[k]) for k in m.STUDY}
        self.max_epochs = int(max_epochs)
        self.objective = objective
        self.mode = mode
        self._best: float | None = None

    def _study(self) -> tuple[str, ...]:
        return tuple(self.labels[k] for k in m.STUDY)

    def setup(self, **info: Any) -> None:
        # every series of the study exists from the start, at 0: rates and alerts need a baseline
        for counter in (m.TRIALS_STARTED, m.TRIALS_COMPLETED, m.TRIALS_STOPPED_EARLY, m.TRIALS_FAILED):
            counter.labels(*self._study())
        m.TRIALS_RUNNING.labels(*self._study())

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        m.TRIALS_STARTED.labels(*self._study()).inc()
        m.TRIALS_RUNNING.labels(*self._study()).inc()

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        study, tr = self._study(), (*self._study(), str(trial.trial_id))
        for gauge, key in ((m.VALIDATION_AUC, "val_auc"), (m.DOMAIN_ACCURACY, "domain_accuracy"),
                           (m.ADVERSARIAL_LAMBDA, "lambda_"), (m.EVENTS_PER_SECOND, "events_per_second")):
            value = _finite(result.get(key))
            if value is not None:
                gauge.labels(*tr).set(value)
        seconds = _finite(result.get("train_seconds"))
        if seconds is not None:
            m.EPOCH_DURATION.labels(*study).observe(seconds)
        value = _finite(result.get(self.objective))
        if value is not None and (self._best is None or (value > self._best if self.mode == "max"
                                                         else value < self._best)):
            self._best = value
            m.BEST_OBJECTIVE.labels(*study).set(value)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        m.TRIALS_RUNNING.labels(*self._study()).dec()

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        m.TRIALS_RUNNING.labels(*self._study()).dec()

    def outcome(self, status: str) -> None:
        """A trial's outcome as the search decided it (the same status as trials.csv);
        an interrupted trial is not counted: it continues on --resume."""
        counter = {"completed": m.TRIALS_COMPLETED, "stopped_early": m.TRIALS_STOPPED_EARLY,
                   "failed": m.TRIALS_FAILED}.get(status)
        if counter is not None:
            counter.labels(*self._study()).inc()


def _finite(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None
