"""Retraining job files (``jobs/*.yaml``): what to retrain, when, and how to decide.

A job names one (experiment, species, model family), where new periods appear, the
dataset mapping and search space to train with, the schedule, the search budget, the
warm start, the promotion policy, the registry, how validity is set, the state database
and the retry/lease settings. Relative paths are relative to the working directory, as
everywhere in autopid. Loaded with the safe YAML loader and validated strictly: an
unknown key or a wrong type is a :class:`~autopid.errors.ConfigError` naming the file and
the key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from autopid.config._loader import StrictModel, load_yaml_config
from autopid.errors import ConfigError
from autopid.publish.gate import DEFAULT_GUARDS, Guard

PERIOD_PLACEHOLDER = "{period}"


class PeriodSource(StrictModel):
    """Where new periods appear: one directory per period, its name in the path."""

    pattern: str = Field(description="directory of one period, with {period} in it, e.g. data/ams/{period}")
    name_regex: str = Field(default=r"[A-Za-z0-9][A-Za-z0-9_.-]*", description="period names to consider")
    complete_marker: str = Field(default="period.json",
                                 description="file written last into a period directory; until it exists the "
                                 "period is still being written and is ignored")
    after: str | None = Field(default=None, description="ignore periods that sort at or before this name")

    @model_validator(mode="after")
    def _placeholder(self) -> PeriodSource:
        if self.pattern.count(PERIOD_PLACEHOLDER) != 1:
            raise ValueError(f"pattern must contain {PERIOD_PLACEHOLDER} exactly once, got {self.pattern!r}")
        try:
            re.compile(self.name_regex)
        except re.error as exc:
            raise ValueError(f"name_regex {self.name_regex!r}: {exc}") from exc
        if "/" in self.complete_marker or not self.complete_marker:
            raise ValueError("complete_marker must be a file name inside the period directory")
        return self


class Schedule(StrictModel):
    """A cron expression (UTC) or a polling interval; exactly one."""

    cron: str | None = Field(default=None, description='e.g. "0 */6 * * *" (UTC)')
    every_s: float | None = Field(default=None, gt=0, description="poll every N seconds")

    @model_validator(mode="after")
    def _one(self) -> Schedule:
        if (self.cron is None) == (self.every_s is None):
            raise ValueError("give exactly one of cron or every_s")
        if self.cron is not None:
            from croniter import croniter

            if not croniter.is_valid(self.cron):
                raise ValueError(f"cron: {self.cron!r} is not a valid cron expression")
        return self


class SearchBudget(StrictModel):
    space: str = Field(description="search space YAML (search_spaces/*.yaml); its base is the starting config")
    trials: int = Field(default=4, ge=1, description="trials per period")
    time_budget_s: float | None = Field(default=None, gt=0, description="wall-time limit of the search per period")
    overrides: dict[str, Any] = Field(default_factory=dict,
                                      description="dotted training-config fields set on the space's base, "
                                      "e.g. training.epochs: 2")


class WarmStart(StrictModel):
    enabled: bool = True
    top_k: int = Field(default=2, ge=1, description="best configurations of the serving model's search to try first")


class GuardSpec(StrictModel):
    name: str
    path: str = Field(description="dotted path into the metrics, e.g. gap.gap, mc.binned.background_efficiency_90")
    higher_is_better: bool
    tolerance: float = Field(default=0.0, ge=0)
    relative_tolerance: float = Field(default=0.0, ge=0)
    absolute_value: bool = False
    error_path: str | None = Field(default=None, description="dotted path to the value's uncertainty, e.g. gap.gap_error")
    error_sigmas: float = Field(default=1.0, ge=0)
    explain_path: str | None = Field(default=None, description="dotted path to why the value is missing, e.g. gap.reason")
    required: bool = Field(default=False, description="a missing value blocks the promotion (else: reported NOT CHECKED)")
    binomial: Literal["background", "signal"] | None = Field(
        default=None, description="binned efficiencies: widen each bin's allowance to error_sigmas binomial errors "
        "of the difference on its background (or signal) rows")

    @model_validator(mode="after")
    def _truth_free(self) -> GuardSpec:
        self.guard()  # refuses a path into data_hidden_truth now, not after the search
        return self

    def guard(self) -> Guard:
        return Guard(self.name, self.path, self.higher_is_better, self.tolerance, self.relative_tolerance,
                     self.absolute_value, self.error_path, self.error_sigmas, self.explain_path, self.required,
                     self.binomial)


class Promotion(StrictModel):
    metric: str = Field(default="mc.auc", description="dotted path into the held-out metrics")
    higher_is_better: bool = True
    margin: float = Field(default=0.002, ge=0, description="the candidate must improve the metric by at least this")
    guards: list[GuardSpec] | Literal["default"] = Field(
        default="default", description='"default" (efficiency gap, binned background efficiency) or a list')
    max_eval_rows: int = Field(default=200_000, ge=100, description="held-out rows per domain for both models")

    @model_validator(mode="after")
    def _truth_free_metric(self) -> Promotion:
        from autopid.publish.gate import check_truth_free_path

        check_truth_free_path(self.metric, "promotion metric")
        return self

    def gate_guards(self) -> tuple[Guard, ...]:
        return DEFAULT_GUARDS if self.guards == "default" else tuple(g.guard() for g in self.guards)


class Validity(StrictModel):
    """The run range a published model is valid for."""

    source: Literal["manifest", "cache"] = Field(
        default="manifest", description="manifest: the runs in the period's completion manifest; cache: the runs "
        "read from the period's input files")


class Retry(StrictModel):
    max_attempts: int = Field(default=3, ge=1)
    backoff_s: float = Field(default=60.0, ge=0, description="wait before the 2nd attempt")
    backoff_factor: float = Field(default=2.0, ge=1)
    max_backoff_s: float = Field(default=3600.0, ge=0)

    def delay(self, failed_attempts: int) -> float:
        """Seconds to wait after ``failed_attempts`` failures (exponential, capped)."""
        return min(self.max_backoff_s, self.backoff_s * self.backoff_factor ** max(0, failed_attempts - 1))


class Lease(StrictModel):
    duration_s: float = Field(default=300.0, gt=0, description="a run whose owner stops renewing is taken over after this")
    heartbeat_s: float | None = Field(default=None, gt=0, description="renewal interval (default: duration / 3)")

    @property
    def heartbeat(self) -> float:
        return self.heartbeat_s if self.heartbeat_s is not None else self.duration_s / 3

    @model_validator(mode="after")
    def _shorter(self) -> Lease:
        if self.heartbeat_s is not None and self.heartbeat_s >= self.duration_s:
            raise ValueError("heartbeat_s must be shorter than duration_s")
        return self


class StateSpec(StrictModel):
    url: str | None = Field(default=None, description="SQLAlchemy URL (default: sqlite:///<work_dir>/state.db)")
    work_dir: str = Field(default="retrain", description="searches and exports, one directory per (job, period)")


class RetrainJob(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    experiment: Literal["alice", "ams", "other"]
    species: str
    family: Literal["fse", "mda"]
    periods: PeriodSource
    dataset: str = Field(description="dataset YAML or built-in name; its file patterns use {period}")
    cache_dir: str | None = Field(default=None, description="preprocessing cache root (default: $AUTOPID_CACHE_DIR)")
    schedule: Schedule
    search: SearchBudget
    warm_start: WarmStart = Field(default_factory=WarmStart)
    promotion: Promotion = Field(default_factory=Promotion)
    registry: str = Field(default="registry", description="registry root (local path)")
    validity: Validity = Field(default_factory=Validity)
    state: StateSpec = Field(default_factory=StateSpec)
    retry: Retry = Field(default_factory=Retry)
    lease: Lease = Field(default_factory=Lease)
    ray_address: str | None = Field(default=None, description="default: $RAY_ADDRESS, else a local Ray")
    dask_scheduler: str | None = Field(default=None, description="default: local threads")

    def state_url(self) -> str:
        return self.state.url or f"sqlite:///{(Path(self.state.work_dir) / 'state.db').resolve()}"


def load_job(path: str | Path) -> RetrainJob:
    """Load and check one job file: the schema, then the dataset and space it names."""
    from autopid.config import load_dataset_config
    from autopid.search.space import load_search_space

    job = load_yaml_config(path, RetrainJob)
    try:
        ds = load_dataset_config(job.dataset)
    except ConfigError as exc:
        raise ConfigError(f"{path}: dataset: {exc}") from exc
    if not any(PERIOD_PLACEHOLDER in f for s in ds.sources for f in s.files):
        raise ConfigError(f"{path}: dataset: {job.dataset!r} has no {PERIOD_PLACEHOLDER} in its file patterns, "
                          "so a new period cannot be selected")
    if job.experiment != ds.experiment:
        # the registry files versions under the dataset's experiment: both must agree, or a
        # run would not find its own publication
        raise ConfigError(f"{path}: experiment: {job.experiment!r}, but dataset {ds.name!r} is {ds.experiment!r}")
    if job.family != ds.family:
        raise ConfigError(f"{path}: family: {job.family!r}, but dataset {ds.name!r} is laid out for {ds.family!r}")
    if job.species not in ds.species:
        raise ConfigError(f"{path}: species: {job.species!r} is not defined by dataset {ds.name!r} "
                          f"(defined: {', '.join(sorted(ds.species))})")
    try:
        space = load_search_space(job.search.space)
    except ConfigError as exc:
        raise ConfigError(f"{path}: search.space: {exc}") from exc
    fam = space.base.get("model", {}).get("family")
    if fam != job.family:
        raise ConfigError(f"{path}: search.space: {job.search.space} trains {fam!r}, the job's family is {job.family!r}")
    from autopid.retrain.space import job_space

    try:
        job_space(job, space, "P0")
    except ConfigError as exc:
        raise ConfigError(f"{path}: search.overrides: {exc}") from exc
    return job


def load_jobs(directory: str | Path) -> list[tuple[Path, RetrainJob]]:
    """Every ``*.yaml`` job in ``directory`` (sorted); job names must be unique."""
    d = Path(directory)
    if not d.is_dir():
        raise ConfigError(f"{d}: not a directory of job files")
    out = [(p, load_job(p)) for p in sorted(d.glob("*.yaml"))]
    if not out:
        raise ConfigError(f"{d}: no job files (*.yaml)")
    seen: dict[str, Path] = {}
    for path, job in out:
        if job.name in seen:
            raise ConfigError(f"{path}: name: job {job.name!r} is also defined in {seen[job.name]}")
        seen[job.name] = path
    return out
