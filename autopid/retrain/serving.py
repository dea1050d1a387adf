"""What the registry says: the model now serving, a run's own publication, warm-start
configurations of the serving model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from autopid._logging import get_logger
from autopid.publish.registry import ModelVersion, Registry

_log = get_logger(__name__)

RETRAIN_KEY = "retrain"  # the metadata section a retraining run adds to what it publishes
PROMOTED, KEPT = "promoted", "kept"  # retrain.outcome: a new model, or the serving model's validity extended


def publish_key(job: str, period: str) -> str:
    """The registry's ``once_key`` of (job, period): one registry entry per period, ever."""
    return f"retrain:{job}:{period}"


def outcome(version: ModelVersion) -> str:
    """``promoted`` or ``kept`` (a validity extension after a rejection)."""
    info = version.metadata.get(RETRAIN_KEY) or {}
    return str(info.get("outcome") or (KEPT if version.is_extension else PROMOTED))


def serving_version(registry: Registry, experiment: str, species: str) -> ModelVersion | None:
    """The model now serving: the newest non-revoked version of (experiment, species).

    A new period's runs are not covered by any version yet, so "serving" is the model a
    person would extend to them: the latest accepted one."""
    live = [v for v in registry.versions(experiment, species) if v.revoked is None]
    return max(live, key=lambda v: v.id.version) if live else None


def find_publication(registry: Registry, experiment: str, species: str, job: str, period: str) -> ModelVersion | None:
    """The version a run of (job, period) already published, if any (revoked ones too:
    a revoked publication must not be published again behind a person's back): a new
    model, or a validity extension of the serving model."""
    key = publish_key(job, period)
    for v in registry.versions(experiment, species):
        if v.metadata.get("publish_key") == key:
            return v
    for v in registry.versions(experiment, species):  # published before publish keys existed
        info = v.metadata.get(RETRAIN_KEY) or {}
        if info.get("job") == job and info.get("period") == period:
            return v
    return None


def serving_configs(version: ModelVersion, keys: list[str]) -> list[dict[str, Any]]:
    """Warm-start configurations of ``version``: the best ones its retraining search
    recorded, else the values of ``keys`` in the training config it was published from."""
    info = version.metadata.get(RETRAIN_KEY) or {}
    points = info.get("search_points")
    if isinstance(points, list) and points:
        return [p for p in points if isinstance(p, dict)]
    source = (version.metadata.get("config") or {}).get("source")
    if source and Path(str(source)).is_file():
        from autopid.retrain.space import params_of

        try:
            cfg = yaml.safe_load(Path(str(source)).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            _log.warning("warm start: cannot read %s (%s)", source, exc)
            return []
        return [params_of(cfg, keys)] if isinstance(cfg, dict) else []
    _log.info("warm start: %s records no search configuration and its config %s is gone", version.id, source)
    return []
