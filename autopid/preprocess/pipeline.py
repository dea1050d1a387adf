"""``autopid preprocess``: ROOT files (TTree or RNTuple) to a cache of Parquet shards, in
parallel with Dask: one task per file, on local processes, threads or a cluster."""

from __future__ import annotations

import json
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autopid.config.dataset import DatasetConfig
from autopid.errors import InputError
from autopid.monitoring import metrics
from autopid.preprocess import cache as _cache
from autopid.preprocess._manifest import Input, build_manifest
from autopid.preprocess._read import expand_files
from autopid.preprocess._schedule import run_tasks, settle
from autopid.preprocess._split import SPLIT_NAMES
from autopid.preprocess._task import FileTask
from autopid.provenance import atomic_write_text, package_versions, write_run_info


@dataclass(frozen=True)
class PreprocessResult:
    path: Path
    cache_hit: bool
    manifest: dict[str, Any]
    seconds: float

    def summary(self) -> str:
        m = self.manifest
        lines = [(f"dataset {m['dataset']!r}: {'cache hit' if self.cache_hit else 'preprocessed'} "
                  f"in {self.seconds:.2f} s"), f"cache: {self.path}"]
        lines.append(f"entries read: {m['entries']}, selected: {m['selected']} "
                     f"({100.0 * m['selected'] / max(m['entries'], 1):.1f}%)")
        for split in SPLIT_NAMES:
            rows = m["splits"][split]
            lines.append(f"  {split:<10} " + "  ".join(f"{d}: {rows.get(d, {}).get('rows', 0)}" for d in ("mc", "data")))
        counts = m["species_counts"]["train"]
        lines.append("  MC train per species: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        return "\n".join(lines)


def _tasks(cfg: DatasetConfig) -> list[FileTask]:
    """One task per input file; the files are opened by the tasks alone (once each)."""
    if not any(src.domain == "mc" for src in cfg.sources):
        raise InputError(f"dataset {cfg.name!r}: no MC source; labels come from MC truth")
    tasks: list[FileTask] = []
    for src in cfg.sources:
        for path in expand_files(src.files):
            tasks.append(FileTask(len(tasks), str(path), src.tree, src.domain))
    return tasks


def preprocess(
    cfg: DatasetConfig,
    *,
    cache_root: str | Path | None = None,
    scheduler: str | None = None,
    force: bool = False,
) -> PreprocessResult:
    """Preprocess ``cfg`` into the cache, or return the existing entry (a cache hit).

    Args:
        cfg: the dataset description.
        cache_root: where cache entries live (default: :func:`default_cache_root`).
        scheduler: a ``distributed`` scheduler address; when None, Dask's local
            ``processes`` scheduler with 4 files or more, else threads.
        force: rebuild even when an entry exists.
    """
    t0 = time.perf_counter()
    root = Path(cache_root) if cache_root is not None else _cache.default_cache_root()
    root = root / "preprocess"
    root.mkdir(parents=True, exist_ok=True)
    tasks = _tasks(cfg)
    hashes = _cache.file_hashes([Path(t.path) for t in tasks], root)
    # where the files are does not matter, what they hold does
    keyed = cfg.model_dump(mode="json", exclude={"sources": {"__all__": {"files"}}})
    key = _cache.cache_key(json.dumps(keyed, sort_keys=True), [(t.domain, t.tree, hashes[t.path]) for t in tasks])
    final = root / f"{cfg.name}-{key[:16]}"
    _cache.remove_stale(root)  # what a killed run left, cache hit or not
    manifest = _cache.read_manifest(final)
    if manifest is not None and not force:
        metrics.CACHE_HITS.labels(cfg.experiment, cfg.name).inc()
        return PreprocessResult(final, True, manifest, time.perf_counter() - t0)
    metrics.CACHE_MISSES.labels(cfg.experiment, cfg.name).inc()

    staging = _cache.staging_dir(root, key)
    try:
        # the package versions (provenance) are looked up while the workers read: the
        # driver is idle then; joined before another fork could see the thread
        warm = threading.Thread(target=package_versions, name="autopid-provenance", daemon=True)
        try:
            stats = run_tasks(tasks, cfg, str(staging / "shards"), scheduler, started=warm.start)
        finally:
            if warm.is_alive():
                warm.join()
        manifest = build_manifest(cfg, key, [Input(t, hashes[t.path], st) for t, st in zip(tasks, stats)])
        write_run_info(staging, cfg, inputs=hashes, cache_key=key)
        atomic_write_text(staging / _cache.MANIFEST, json.dumps(manifest, indent=1) + "\n")
        if force and final.exists():
            shutil.rmtree(final)
        path = _cache.publish(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        settle()
    seconds = time.perf_counter() - t0
    entries = int(manifest["entries"])
    metrics.PREPROCESS_EVENTS.labels(cfg.experiment, cfg.name).inc(entries)
    metrics.PREPROCESS_RATE.labels(cfg.experiment, cfg.name).set(entries / max(seconds, 1e-9))
    return PreprocessResult(path, False, manifest, seconds)
