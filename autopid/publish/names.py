"""Strict names for everything that becomes a path or a key in the model registry.

Experiment, species and period names are single path-safe tokens: letters, digits,
``_`` and ``-``, starting with a letter or digit. Nothing else (no ``/``, ``..``, dots,
spaces, ``~``) passes, so a name can never leave the registry root.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from autopid.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_VERSION_DIR = re.compile(r"^v(\d{4,9})$")
_MODEL_ID = re.compile(r"^([^/]+)/([^/]+)/v(\d{4,9})$")
_RUN_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def check_name(value: str, what: str) -> str:
    """``value`` if it is a safe registry name, else a :class:`ConfigError` naming ``what``."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise ConfigError(
            f"{what} {value!r}: use letters, digits, '_' and '-' only, starting with a letter or digit "
            "(at most 64 characters); path separators and '..' are not allowed"
        )
    return value


def version_dir(version: int) -> str:
    """``v0001`` for version 1."""
    if version < 1:
        raise ValueError(f"versions start at 1, got {version}")
    return f"v{version:04d}"


def parse_version_dir(name: str) -> int | None:
    """The version number of a directory name like ``v0007``, or None for anything else."""
    m = _VERSION_DIR.match(name)
    return int(m.group(1)) if m else None


@dataclass(frozen=True, order=True)
class ModelId:
    """``experiment/species/vNNNN``: one published version."""

    experiment: str
    species: str
    version: int

    def __str__(self) -> str:
        return f"{self.experiment}/{self.species}/{version_dir(self.version)}"


def parse_model_id(text: str) -> ModelId:
    """Parse ``alice/proton/v0001``; anything that could escape the registry is refused."""
    m = _MODEL_ID.match(text.strip()) if isinstance(text, str) else None
    if not m:
        raise ConfigError(f"model id {text!r}: expected EXPERIMENT/SPECIES/vNNNN, e.g. alice/proton/v0001")
    exp, species, version = m.groups()
    check_name(exp, "experiment")
    check_name(species, "species")
    if int(version) < 1:
        raise ConfigError(f"model id {text!r}: versions start at v0001")
    return ModelId(exp, species, int(version))


def parse_run_range(text: str) -> tuple[int, int]:
    """``"500100-500199"`` (or one run ``"500123"``) as ``(first, last)``."""
    m = _RUN_RANGE.match(text) if isinstance(text, str) else None
    if not m:
        raise ConfigError(f"run range {text!r}: expected FIRST-LAST (e.g. 567600-567699) or one run number")
    first = int(m.group(1))
    last = int(m.group(2)) if m.group(2) is not None else first
    if last < first:
        raise ConfigError(f"run range {text!r}: the last run is before the first")
    return first, last
