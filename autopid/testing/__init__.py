"""Helpers for tests of autopid and of code built on it: tiny simulated datasets."""

from __future__ import annotations

from pathlib import Path

import yaml

from autopid.config.dataset import DatasetConfig, builtin_dataset_path, load_dataset_config


def dataset_for(name: str, data_root: str | Path, **overrides: object) -> DatasetConfig:
    """The built-in dataset ``name`` (alice, ams) pointed at simulated files under ``data_root``."""
    raw = yaml.safe_load(builtin_dataset_path(name).read_text())
    root = Path(data_root)
    for src in raw["sources"]:
        src["files"] = [str(root / "{period}" / src["domain"] / "*.root")]
    raw.update(overrides)
    return DatasetConfig.model_validate(raw)


def write_dataset_yaml(cfg: DatasetConfig, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    assert load_dataset_config(path) == cfg
    return path
