"""The search space of one retraining pass: the job's space, narrowed to one period.

The space file's base is kept (it is the starting configuration), with the job's
dataset, species, cache and overrides put on top; one study (species, period); the
job's budget. The result is written into the pass's work directory, so that the search
there is a normal ``autopid search`` directory (resumable, readable with the usual tools).
"""

from __future__ import annotations

import copy
import math
import zlib
from typing import TYPE_CHECKING, Any

from autopid.errors import ConfigError
from autopid.search.space import Choice, IntRange, LogUniform, SearchSpace, Uniform, _set

if TYPE_CHECKING:
    from autopid.retrain.job import RetrainJob


def job_space(job: RetrainJob, space: SearchSpace, period: str) -> SearchSpace:
    """``space`` for one period of ``job`` (validated: a bad override is a ConfigError)."""
    base = copy.deepcopy(space.base)
    base["dataset"] = job.dataset
    base["species"] = job.species
    if job.cache_dir is not None:
        base["cache_dir"] = job.cache_dir
    for key, value in job.search.overrides.items():
        _set(base, key, value)
    budget = space.budget.model_copy(update={"num_samples": job.search.trials,
                                             "time_budget_s": job.search.time_budget_s})
    # a seed per period: with the space's one seed, every period's sampler would draw the same
    # random configurations again, repeating the serving model's (already enqueued) ones
    seed = (space.seed + zlib.crc32(period.encode())) % 2**31
    data = {**space.model_dump(mode="json"), "name": job.name, "base": base, "budget": budget.model_dump(),
            "studies": [{"species": job.species, "period": period}], "demo_data": None, "seed": seed}
    try:
        out = SearchSpace.model_validate(data)
        out.train_config(out.studies[0], {})
    except Exception as exc:  # pydantic names the bad field
        msg = " ".join(line.strip() for line in str(exc).splitlines()[:3])
        raise ConfigError(f"not a valid training config after the job's overrides ({msg})") from exc
    return out


def _fits(dist: Any, value: Any) -> bool:
    if isinstance(dist, Choice):
        return value in dist.choices
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(float(value)):
        return False
    if isinstance(dist, IntRange) and float(value) != int(value):
        return False
    if isinstance(dist, (Uniform, LogUniform, IntRange)):
        return dist.low <= value <= dist.high
    return False


def _lookup(cfg: dict[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def warm_points(space: SearchSpace, configs: list[dict[str, Any]], base_config: dict[str, Any]) -> list[dict[str, Any]]:
    """Complete warm-start points for ``space``: each config gives a value per parameter
    (dotted keys); a missing key is taken from ``base_config`` (a training config as a
    dict). Points with a value outside the space are dropped (the space changed), as
    Ray's OptunaSearch wants every point to set every parameter within its range."""
    out: list[dict[str, Any]] = []
    for cfg in configs:
        point: dict[str, Any] = {}
        for key, dist in space.params.items():
            value = cfg.get(key, _lookup(base_config, key))
            if isinstance(dist, IntRange) and isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(dist, Choice):  # the choice itself (32, not 32.0 read back from a CSV)
                value = next((c for c in dist.choices if c == value), value)
            if not _fits(dist, value):
                point = {}
                break
            point[key] = value
        if point and point not in out:
            out.append(point)
    return out


def params_of(train_config: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """The values of ``keys`` (dotted) in a training config dict (absent ones left out)."""
    return {k: v for k in keys if (v := _lookup(train_config, k)) is not None}
