"""``autopid preprocess``: ROOT files to a cache of Parquet shards, in parallel with Dask."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import numpy as np

from autopid._logging import get_logger, progress_enabled
from autopid.config.dataset import DatasetConfig
from autopid.errors import InputError
from autopid.features import expand_columns, finish_stats
from autopid.monitoring import metrics
from autopid.preprocess import cache as _cache
from autopid.preprocess._chunk import ChunkStats, ChunkTask, chunk_branches, process_chunk
from autopid.preprocess._read import BranchInfo, branch_info, expand_files, open_tree
from autopid.preprocess._split import SPLIT_NAMES
from autopid.provenance import atomic_write_text, write_run_info

_log = get_logger(__name__)


@dataclass(frozen=True)
class PreprocessResult:
    path: Path
    cache_hit: bool
    manifest: dict[str, Any]
    seconds: float

    def summary(self) -> str:
        m = self.manifest
        lines = [f"dataset {m['dataset']!r}: {'cache hit' if self.cache_hit else 'preprocessed'} "
                 f"in {self.seconds:.2f} s", f"cache: {self.path}"]
        lines.append(f"entries read: {m['entries']}, selected: {m['selected']} "
                     f"({100.0 * m['selected'] / max(m['entries'], 1):.1f}%)")
        for split in SPLIT_NAMES:
            rows = m["splits"][split]
            lines.append(f"  {split:<10} " + "  ".join(f"{d}: {rows.get(d, {}).get('rows', 0)}" for d in ("mc", "data")))
        counts = m["species_counts"]["train"]
        lines.append("  MC train per species: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        return "\n".join(lines)


def _scan(cfg: DatasetConfig) -> tuple[list[tuple[str, str, Path, int]], dict[str, BranchInfo]]:
    """Open every input once: check trees, branches and types; count entries."""
    inputs: list[tuple[str, str, Path, int]] = []
    infos: dict[str, BranchInfo] = {}
    for src in cfg.sources:
        for path in expand_files(src.files):
            tree = open_tree(path, src.tree)
            info = branch_info(path, tree, chunk_branches(cfg, src.domain))
            for name, bi in info.items():
                prev = infos.setdefault(name, bi)
                if prev.shape != bi.shape:
                    raise InputError(
                        f"{path}:{src.tree}: branch {name!r} has shape {bi.shape}, "
                        f"but {prev.shape} in earlier files"
                    )
            inputs.append((src.domain, src.tree, path, int(tree.num_entries)))
    if not any(d == "mc" for d, *_ in inputs):
        raise InputError(f"dataset {cfg.name!r}: no MC source; labels come from MC truth")
    return inputs, infos


def _tasks(cfg: DatasetConfig, inputs: list[tuple[str, str, Path, int]], shapes: dict[str, tuple[int, ...]]) -> list[ChunkTask]:
    tasks: list[ChunkTask] = []
    for domain, tree, path, entries in inputs:
        for start in range(0, entries, cfg.chunk_size):
            tasks.append(ChunkTask(len(tasks), str(path), tree, domain, start,
                                   min(start + cfg.chunk_size, entries), shapes))
    return tasks


def _run(tasks: list[ChunkTask], cfg: DatasetConfig, shard_root: Path, scheduler: str | None) -> list[ChunkStats]:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tasks), desc="preprocess", unit="chunk", disable=not progress_enabled(), leave=False)
    try:
        if scheduler:
            from distributed import Client, as_completed, wait

            with Client(scheduler) as client:
                futures = [client.submit(process_chunk, t, cfg, str(shard_root), pure=False) for t in tasks]
                results = []
                try:
                    for fut in as_completed(futures):
                        results.append(fut.result())
                        bar.update()
                except BaseException:
                    # let running chunks end before the caller removes the staging directory
                    client.cancel(futures)
                    wait(futures, timeout=120)
                    raise
                return sorted(results, key=lambda s: s.index)
        from concurrent.futures import ThreadPoolExecutor

        from dask.callbacks import Callback

        class _Bar(Callback):  # type: ignore[misc]
            def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, id: Any) -> None:
                bar.update()

        delayed = [dask.delayed(process_chunk)(t, cfg, str(shard_root)) for t in tasks]
        # our own pool: leaving the block waits for chunks still running after a failure
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool, _Bar():
            return list(dask.compute(*delayed, scheduler="threads", pool=pool))
    finally:
        bar.close()


def _manifest(cfg: DatasetConfig, key: str, inputs: list[tuple[str, str, Path, int]],
              hashes: dict[str, str], infos: dict[str, BranchInfo], stats: list[ChunkStats]) -> dict[str, Any]:
    columns_by_branch = {b: expand_columns(b, infos[b].shape) for b in cfg.features}
    columns = [c for b in cfg.features for c in columns_by_branch[b]]
    count, total, sumsq = (np.zeros(len(columns)) for _ in range(3))
    for st in stats:
        for j, col in enumerate(columns):
            if col in st.norm:
                c, s, q = st.norm[col]
                count[j] += c
                total[j] += s
                sumsq[j] += q
    mean, std = finish_stats(count, total, sumsq)
    splits: dict[str, dict[str, Any]] = {s: {} for s in SPLIT_NAMES}
    truth: dict[str, Counter[int]] = defaultdict(Counter)
    for st in stats:
        for key_, n in st.rows.items():
            split, domain = key_.split("/")
            entry = splits[split].setdefault(domain, {"rows": 0, "shards": []})
            entry["rows"] += n
        for rel in st.shards:
            split, domain, _ = rel.split("/")
            splits[split][domain]["shards"].append(rel)
        for split, codes in st.truth_counts.items():
            truth[split].update(codes)
    code_to_species = {c: name for name, sp in cfg.species.items() for c in sp.truth}
    species_counts: dict[str, dict[str, int]] = {}
    for split in SPLIT_NAMES:
        per: Counter[str] = Counter()
        for code, n in truth[split].items():
            per[code_to_species.get(code, "other")] += n
        species_counts[split] = {name: per.get(name, 0) for name in [*cfg.species, "other"]}
    transforms = {c: cfg.transforms[b] for b, cols in columns_by_branch.items() if b in cfg.transforms for c in cols}
    return {
        "format": _cache.CACHE_FORMAT,
        "key": key,
        "dataset": cfg.name,
        "experiment": cfg.experiment,
        "family": cfg.family,
        "features": {b: {"shape": list(infos[b].shape), "columns": cols} for b, cols in columns_by_branch.items()},
        "columns": columns,
        "normalisation": {"columns": columns, "mean": mean.tolist(), "std": std.tolist(),
                          "transforms": transforms, "fitted_on": {"split": "train", "domains": list(cfg.normalisation_domains)}},
        "species": {name: sp.truth for name, sp in cfg.species.items()},
        "targets": list(cfg.targets),
        "kinematic": cfg.kinematic,
        "mda": cfg.mda.model_dump() if cfg.mda is not None else None,
        "missing_rules": [r.model_dump(mode="json") for r in cfg.missing_rules],
        "sentinels": list(cfg.sentinels),
        "species_counts": species_counts,
        "splits": splits,
        "entries": sum(st.entries for st in stats),
        "selected": sum(st.selected for st in stats),
        "inputs": [{"path": str(p), "domain": d, "tree": t, "entries": n, "sha256": hashes[str(p)]}
                   for d, t, p, n in inputs],
        "hosts": sorted({st.host for st in stats}),
    }


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
        scheduler: a ``distributed`` scheduler address; local threads when None.
        force: rebuild even when an entry exists.
    """
    t0 = time.perf_counter()
    root = Path(cache_root) if cache_root is not None else _cache.default_cache_root()
    root = root / "preprocess"
    root.mkdir(parents=True, exist_ok=True)
    inputs, infos = _scan(cfg)
    hashes = _cache.file_hashes([p for *_, p, _ in inputs], root)
    # where the files are does not matter, what they hold does
    keyed = cfg.model_dump(mode="json", exclude={"sources": {"__all__": {"files"}}})
    key = _cache.cache_key(json.dumps(keyed, sort_keys=True), [(d, t, hashes[str(p)]) for d, t, p, _ in inputs])
    final = root / f"{cfg.name}-{key[:16]}"
    manifest = _cache.read_manifest(final)
    if manifest is not None and not force:
        metrics.CACHE_HITS.labels(cfg.experiment, cfg.name).inc()
        return PreprocessResult(final, True, manifest, time.perf_counter() - t0)
    metrics.CACHE_MISSES.labels(cfg.experiment, cfg.name).inc()

    staging = _cache.staging_dir(root, key)
    try:
        shapes = {name: info.shape for name, info in infos.items()}
        stats = _run(_tasks(cfg, inputs, shapes), cfg, staging / "shards", scheduler)
        selected = sum(st.selected for st in stats)
        if selected == 0:
            cuts = "; ".join(c.describe() for c in cfg.selection) or "none"
            raise InputError(f"dataset {cfg.name!r}: the selection keeps no entry (cuts: {cuts}) "
                             f"in {len(inputs)} file(s)")
        manifest = _manifest(cfg, key, inputs, hashes, infos, stats)
        for split in SPLIT_NAMES:
            if manifest["splits"][split].get("mc", {}).get("rows", 0) == 0:
                raise InputError(f"dataset {cfg.name!r}: no MC entry in the {split} split after selection")
        write_run_info(staging, cfg, inputs=hashes, cache_key=key)
        atomic_write_text(staging / _cache.MANIFEST, json.dumps(manifest, indent=1) + "\n")
        if force and final.exists():
            shutil.rmtree(final)
        path = _cache.publish(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    seconds = time.perf_counter() - t0
    entries = sum(st.entries for st in stats)
    metrics.PREPROCESS_EVENTS.labels(cfg.experiment, cfg.name).inc(entries)
    metrics.PREPROCESS_RATE.labels(cfg.experiment, cfg.name).set(entries / max(seconds, 1e-9))
    return PreprocessResult(path, False, manifest, seconds)
