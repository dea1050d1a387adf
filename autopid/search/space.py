"""Search spaces in YAML: distributions, fixed values, and what they apply to.

A parameter's key is the dotted path of the training-config field it sets, e.g.
``model.params.gnn_hidden``, ``training.lambda_max`` or ``training.background_mix.sulfur``.
The space is validated before Ray starts: every key must name a real field.
"""

from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from autopid.config._loader import StrictModel, load_yaml_config
from autopid.errors import ConfigError
from autopid.models.check import check_model_params
from autopid.train.config import TrainConfig


class Uniform(StrictModel):
    type: Literal["uniform"]
    low: float
    high: float

    @model_validator(mode="after")
    def _order(self) -> Uniform:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) > high ({self.high})")
        return self


class LogUniform(StrictModel):
    type: Literal["loguniform"]
    low: float = Field(gt=0)
    high: float = Field(gt=0)

    @model_validator(mode="after")
    def _order(self) -> LogUniform:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) > high ({self.high})")
        return self


class IntRange(StrictModel):
    type: Literal["int"]
    low: int
    high: int
    step: int = Field(default=1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _order(self) -> IntRange:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) > high ({self.high})")
        if self.log and self.low < 1:
            raise ValueError(f"log: true needs low >= 1 (got {self.low})")
        return self


class Choice(StrictModel):
    type: Literal["categorical"]
    choices: list[Any] = Field(min_length=1)


Distribution = Annotated[Uniform | LogUniform | IntRange | Choice, Field(discriminator="type")]


class Study(StrictModel):
    species: str
    period: str = Field(default="*", description="run period; replaces {period} in the dataset's file patterns")


class DemoData(StrictModel):
    """Simulated data written on first use when the dataset's files do not exist yet."""

    experiment: Literal["alice", "ams"]
    out: str
    periods: list[str] = Field(min_length=1)
    runs: int = Field(default=2, ge=1)
    events_per_run: int = Field(default=5000, ge=100)
    seed: int = 0


class Budget(StrictModel):
    num_samples: int = Field(default=8, ge=1, description="trials per study")
    max_concurrent: int | None = Field(default=None, ge=1, description="default: what the cluster's CPUs allow")
    time_budget_s: float | None = Field(default=None, gt=0, description="per study")
    stall_timeout_s: float = Field(
        default=300.0, gt=0, description="stop the search (resumable) when no trial starts, reports an epoch or "
        "ends for this long; set it above the longest epoch")


class Asha(StrictModel):
    type: Literal["asha", "none"] = Field(default="asha", description="none: every trial runs all its epochs")
    grace_period: int = Field(default=1, ge=1, description="epochs before a trial may be stopped")
    reduction_factor: float = Field(default=2.0, gt=1)


class Objective(StrictModel):
    metric: Literal["objective", "val_auc", "val_f1"] = "objective"
    mode: Literal["max", "min"] = "max"
    domain_penalty: float = Field(default=1.0, ge=0, description="objective = val_auc - penalty*|domain_acc - 0.5|")


class SearchSpace(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    base: dict[str, Any] = Field(description="a training config (dataset, model, training, scaling) the trials start from")
    studies: list[Study] = Field(min_length=1)
    params: dict[str, Distribution] = Field(min_length=1)
    budget: Budget = Field(default_factory=Budget)
    scheduler: Asha = Field(default_factory=Asha)
    objective: Objective = Field(default_factory=Objective)
    sampler: Literal["tpe", "random"] = Field(default="tpe", description="Optuna sampler (random: a baseline)")
    seed: int = 0
    demo_data: DemoData | None = None

    def train_config(self, study: Study, values: dict[str, Any]) -> TrainConfig:
        """The training config of one trial: base, then the study, then the sampled values."""
        cfg = copy.deepcopy(self.base)
        cfg["species"] = study.species
        for key, value in values.items():
            _set(cfg, key, value)
        return TrainConfig.model_validate(cfg)


def _set(cfg: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = cfg
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def _examples(dist: Distribution) -> list[Any]:
    """Values that stand for the whole range: both ends (the highest one a step reaches),
    or every choice."""
    if isinstance(dist, Choice):
        return list(dist.choices)
    if isinstance(dist, IntRange):
        return [dist.low, dist.low + (dist.high - dist.low) // dist.step * dist.step]
    return [dist.low, dist.high]


_MAX_MODEL_COMBINATIONS = 256


def _check_model_value(space: SearchSpace, key: str, value: Any, where: str) -> None:
    """Refuse ``value`` of a model parameter only if it makes no model with any values of
    the other searched model parameters: 3 heads cannot split the base's 32 channels, but
    may split the 48 that another parameter of the space offers."""
    others = [k for k in space.params if k.startswith("model.params.") and k != key]
    combos = itertools.islice(itertools.product(*(_examples(space.params[k]) for k in others)),
                              _MAX_MODEL_COMBINATIONS)
    first: ConfigError | None = None
    for combo in itertools.chain([None], combos):
        values = {key: value, **({} if combo is None else dict(zip(others, combo, strict=True)))}
        try:
            cfg = space.train_config(space.studies[0], values)
        except Exception:  # noqa: BLE001 - another parameter's value the config refuses: reported for that one
            continue
        try:
            check_model_params(cfg.model.family, cfg.model.params, where=f"{where}: the value {value!r}")
            return
        except ConfigError as exc:
            first = first or exc
    if first is not None:
        raise first


_MODEL_PARAMS = {
    "fse": ("embed_channels", "num_heads", "ff_channels", "num_layers", "pool_channels",
            "classifier_channels", "dropout", "act", "pooling", "value_input", "norm_first"),
    "mda": ("branches", "token_channels", "gnn_hidden", "gnn_layers", "cnn_channels", "cnn_layers",
            "mlp_hidden", "mlp_layers", "fusion_heads", "classifier_channels", "dropout", "act"),
}


# the MDA branch each size parameter shapes: tuning it with the branch(es) off does nothing
_MDA_BRANCH_OF = {"gnn_hidden": ("gnn",), "gnn_layers": ("gnn",), "cnn_channels": ("cnn",), "cnn_layers": ("cnn",),
                  "mlp_hidden": ("rigidity", "tof"), "mlp_layers": ("rigidity", "tof")}
_MDA_BRANCHES = ("gnn", "cnn", "rigidity", "tof")


def _check_acts(space: SearchSpace, key: str, where: str) -> None:
    """Refuse a parameter that cannot change anything in this space."""
    base_params = space.base.get("model", {}).get("params") or {}
    family = space.base.get("model", {}).get("family")
    if key.startswith("scaling."):
        raise ConfigError(f"{where}: trial resources are fixed for a whole study; set scaling in base, not in params")
    if family == "mda" and key.startswith("model.params.") and "model.params.branches" not in space.params:
        name = key.split(".", 2)[2]
        on = set(base_params.get("branches") or _MDA_BRANCHES)
        needs = _MDA_BRANCH_OF.get(name)
        if needs and not on & set(needs):
            raise ConfigError(f"{where}: shapes the {'/'.join(needs)} branch, which base.model.params.branches "
                              f"switches off ({sorted(on)}); it cannot act")
    if key.startswith("training.background_mix."):
        name = key.split(".", 2)[2]
        for study in space.studies:
            if name == study.species:
                raise ConfigError(f"{where}: {name!r} is the signal species of study {study.species}-{study.period}")
    if key == "training.label_shift_weighting" and "training.lambda_max" not in space.params \
            and not (space.base.get("training") or {}).get("lambda_max"):
        raise ConfigError(f"{where}: label-shift weighting acts on the domain loss, which is off (lambda_max 0)")


def validate_against_data(space: SearchSpace, study: Study, manifest: dict[str, Any], *, where: str,
                          min_rows: int = 50, min_share: float = 0.005) -> None:
    """Refuse background-mix fractions of species that the MC training split (almost) lacks:
    the fraction would be tuned but could not change the sample."""
    counts: dict[str, int] = dict((manifest.get("species_counts") or {}).get("train") or {})
    background = sum(n for s, n in counts.items() if s != study.species)
    for key in space.params:
        if not key.startswith("training.background_mix."):
            continue
        name = key.split(".", 2)[2]
        n = int(counts.get(name, 0))
        if n < max(min_rows, min_share * background):
            raise ConfigError(
                f"{where}: params.{key}: the MC training split of study {study.species}-{study.period} has {n} "
                f"{name} row(s) among {background} background rows (needs at least "
                f"{max(min_rows, math.ceil(min_share * background))}); this fraction cannot act. "
                f"Remove it from the space")


def load_search_space(path: str | Path) -> SearchSpace:
    """Load and check a space: every parameter must set a real field of the training
    config and be able to act."""
    space = load_yaml_config(path, SearchSpace)
    family = space.base.get("model", {}).get("family")
    for key, dist in space.params.items():
        where = f"{path}: params.{key}"
        if key.startswith("model.params."):
            name = key.split(".", 2)[2]
            if family in _MODEL_PARAMS and name not in _MODEL_PARAMS[family]:
                raise ConfigError(f"{where}: unknown {family} model parameter {name!r}; "
                                  f"expected one of: {', '.join(_MODEL_PARAMS[family])}")
        _check_acts(space, key, where)
        for value in _examples(dist):
            try:
                space.train_config(space.studies[0], {key: value})
            except Exception as exc:  # pydantic reports the bad field
                msg = [m.strip() for m in str(exc).splitlines() if not m.strip().startswith("For further information")]
                raise ConfigError(f"{where}: the value {value!r} does not fit the training config "
                                  f"({' '.join(msg[:3])})") from exc
            if key.startswith("model.params."):
                _check_model_value(space, key, value, where)
    try:
        cfg = space.train_config(space.studies[0], {})
    except Exception as exc:
        raise ConfigError(f"{path}: base: not a valid training config: {exc}") from exc
    check_model_params(cfg.model.family, cfg.model.params, where=f"{path}: base")
    return space
