"""Typed, validated configuration loaded from YAML."""

from __future__ import annotations

from autopid.config._loader import StrictModel, dump_yaml, load_yaml_config, validate_config
from autopid.config.dataset import DatasetConfig, load_dataset_config

__all__ = [
    "DatasetConfig",
    "StrictModel",
    "dump_yaml",
    "load_dataset_config",
    "load_yaml_config",
    "validate_config",
]
