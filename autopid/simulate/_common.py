"""The simulation driver shared by the ALICE-like and AMS-like generators.

A generator is a pure function ``generate(cfg, n, domain=..., rng=..., period_rng=...)``
returning the branches of ``n`` entries as NumPy arrays. The driver seeds it, writes one
ROOT file per run and domain, and marks the period complete by writing ``period.json``
last: a reader that sees ``period.json`` sees every file of the period, whole.

Layout::

    OUT/PERIOD/mc/run<RUN>.root      # reconstructed branches + MC truth
    OUT/PERIOD/data/run<RUN>.root    # same reconstructed branches + hidden_* truth
    OUT/PERIOD/config.yaml           # resolved simulator configuration
    OUT/PERIOD/metadata.json         # versions, git revision
    OUT/PERIOD/period.json           # completion marker and manifest (written last)
"""

from __future__ import annotations

import json
import os
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import uproot
from tqdm.auto import tqdm

from autopid._logging import get_logger, progress_enabled
from autopid.config._loader import StrictModel
from autopid.errors import ConfigError
from autopid.provenance import atomic_write_text, sha256_file, write_run_info

Domain = Literal["mc", "data"]
DOMAINS: tuple[Domain, ...] = ("mc", "data")
HIDDEN_PREFIX = "hidden_"
PERIOD_MANIFEST = "period.json"

_log = get_logger(__name__)
_PERIOD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PERIOD_PARTS = re.compile(r"^\D*(\d+)([a-z]*)$")

Generate = Callable[..., dict[str, np.ndarray]]


@dataclass(frozen=True)
class Experiment:
    """What the driver needs to know about one simulated experiment."""

    name: str
    tree: str
    config_type: type[StrictModel]
    generate: Generate
    run_base: int


def check_period_name(period: str) -> str:
    if not _PERIOD_RE.match(period):
        raise ConfigError(
            f"period {period!r}: use letters, digits, '_', '-', '.' only (at most 64 characters)"
        )
    return period


def default_first_run(run_base: int, period: str) -> int:
    """A stable first run number for a period name, increasing with the period.

    ``LHC26a`` -> base + (26 * 26 + 0) * 100, ``LHC26b`` -> ... + 100, so consecutive
    periods get consecutive, non-overlapping run ranges of up to 100 runs. Other names
    fall back to a hash. Pass ``first_run`` explicitly to match a real numbering.
    """
    m = _PERIOD_PARTS.match(period)
    if m:
        year = int(m.group(1)) % 100
        letter = 0
        for ch in m.group(2):
            letter = letter * 26 + (ord(ch) - ord("a"))
        return run_base + (year * 26 + letter) * 100
    return run_base + (zlib.crc32(period.encode()) % 90_000) * 100


def _seed(seed: int, period: str, *parts: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, zlib.crc32(period.encode()), *parts])


def write_root(path: Path, tree: str, branches: Mapping[str, np.ndarray]) -> None:
    """Write one TTree atomically (temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    types: dict[str, Any] = {}
    for name, arr in branches.items():
        types[name] = (arr.dtype, arr.shape[1:]) if arr.ndim > 1 else arr.dtype
    try:
        with uproot.recreate(tmp) as fh:
            fh.mktree(tree, types)
            fh[tree].extend(dict(branches))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def simulate_period(
    experiment: Experiment,
    cfg: StrictModel,
    out: str | Path,
    period: str,
    *,
    runs: int,
    events_per_run: int,
    seed: int = 0,
    first_run: int | None = None,
) -> Path:
    """Simulate one data-taking period; returns the period directory."""
    check_period_name(period)
    if runs < 1 or events_per_run < 1:
        raise ConfigError("runs and events-per-run must be at least 1")
    first = default_first_run(experiment.run_base, period) if first_run is None else first_run
    period_dir = Path(out) / period
    marker = period_dir / PERIOD_MANIFEST
    marker.unlink(missing_ok=True)  # a re-run is incomplete until it ends
    files: list[dict[str, Any]] = []
    jobs = [(d, r) for r in range(first, first + runs) for d in DOMAINS]
    bar = tqdm(jobs, desc=f"simulate {experiment.name} {period}", unit="file",
               disable=not progress_enabled(), leave=False)
    for domain, run in bar:
        dseed = DOMAINS.index(domain)
        rng = np.random.default_rng(_seed(seed, period, dseed, run))
        # each domain sees the same period drift, whatever the number of runs
        prng = np.random.default_rng(_seed(seed, period, 0xD41F7, dseed))
        branches = experiment.generate(
            cfg, events_per_run, domain=domain, rng=rng, period_rng=prng
        )
        branches = {"run": np.full(events_per_run, run, dtype=np.int32), **branches}
        branches.setdefault("event", np.arange(events_per_run, dtype=np.int64))
        path = period_dir / domain / f"run{run}.root"
        write_root(path, experiment.tree, branches)
        files.append({
            "path": f"{domain}/{path.name}", "domain": domain, "run": run,
            "entries": events_per_run, "sha256": sha256_file(path),
        })
    write_run_info(period_dir, cfg, experiment=experiment.name, period=period, seed=seed)
    manifest = {
        "experiment": experiment.name, "period": period, "tree": experiment.tree,
        "runs": [first, first + runs - 1], "events_per_run": events_per_run,
        "seed": seed, "files": files,
    }
    atomic_write_text(marker, json.dumps(manifest, indent=2) + "\n")
    _log.info("wrote %d files for period %s (runs %d-%d) in %s",
              len(files), period, first, first + runs - 1, period_dir)
    return period_dir


def read_period_manifest(period_dir: str | Path) -> dict[str, Any] | None:
    """The manifest of a complete period, or None while it is still being written."""
    marker = Path(period_dir) / PERIOD_MANIFEST
    if not marker.is_file():
        return None
    return json.loads(marker.read_text(encoding="utf-8"))
