"""What every run writes next to its outputs so a result can be reproduced."""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from autopid.config._loader import dump_yaml

_PACKAGES = (
    "autopid", "numpy", "torch", "torch-geometric", "ray", "optuna", "uproot", "awkward",
    "dask", "distributed", "pyarrow", "pandas", "onnx", "onnxruntime", "pydantic",
)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def _package_versions() -> tuple[tuple[str, str], ...]:
    # each lookup scans the installed distributions (up to 0.1 s in all); they do not
    # change while a process runs, so once per process is enough
    out = [("python", platform.python_version())]
    for name in _PACKAGES:
        try:
            out.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            continue
    return tuple(out)


def package_versions() -> dict[str, str]:
    return dict(_package_versions())


def git_revision(path: str | Path | None = None) -> str | None:
    """The git commit of the autopid source tree (``-dirty`` when modified), if any."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{rev}-dirty" if dirty else rev


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_metadata(
    inputs: Iterable[str | Path] | Mapping[str, str] = (), **extra: Any
) -> dict[str, Any]:
    """Provenance of a run; ``inputs`` are paths to hash, or already known hashes."""
    hashes = dict(inputs) if isinstance(inputs, Mapping) else {str(p): sha256_file(p) for p in inputs}
    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "git_revision": git_revision(),
        "versions": package_versions(),
        "inputs": hashes,
        **extra,
    }


def write_run_info(
    out_dir: str | Path,
    config: BaseModel,
    inputs: Iterable[str | Path] | Mapping[str, str] = (),
    **extra: Any,
) -> dict[str, Any]:
    """Write ``config.yaml`` (resolved) and ``metadata.json`` into ``out_dir``."""
    out_dir = Path(out_dir)
    meta = run_metadata(inputs, config_type=type(config).__name__, **extra)
    atomic_write_text(out_dir / "config.yaml", dump_yaml(config))
    atomic_write_text(out_dir / "metadata.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta
