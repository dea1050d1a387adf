"""The work of one Dask task: read a chunk, select, label, split, write shards."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from autopid.config.dataset import Cut, DatasetConfig
from autopid.errors import InputError
from autopid.features import apply_transform, expand_columns, fit_stats
from autopid.preprocess._read import read_arrays
from autopid.preprocess._split import SPLIT_NAMES, assign_split

TRUTH_LABEL = "truth_label"
HIDDEN_LABEL = "hidden_label"


@dataclass(frozen=True)
class ChunkTask:
    index: int
    path: str
    tree: str
    domain: str
    start: int
    stop: int
    shapes: dict[str, tuple[int, ...]]


@dataclass
class ChunkStats:
    index: int
    entries: int = 0
    selected: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # "train/mc" -> rows
    truth_counts: dict[str, dict[int, int]] = field(default_factory=dict)  # split -> code -> n
    norm: dict[str, tuple[int, float, float]] = field(default_factory=dict)
    shards: list[str] = field(default_factory=list)
    host: str = ""


def cut_mask(values: np.ndarray, cut: Cut) -> np.ndarray:
    v = cut.value
    with np.errstate(invalid="ignore"):
        if cut.op == "<":
            return values < v
        if cut.op == "<=":
            return values <= v
        if cut.op == ">":
            return values > v
        if cut.op == ">=":
            return values >= v
        if cut.op == "==":
            return values == v
        if cut.op == "!=":
            return values != v
        if cut.op == "abs<":
            return np.abs(values) < v
        if cut.op == "between":
            lo, hi = v  # type: ignore[misc]
            return (values >= lo) & (values <= hi)
        return np.isin(values, v)  # "in"


def truth_branches(cfg: DatasetConfig, domain: str) -> dict[str, str]:
    """Output column -> branch. Data truth goes to ``hidden_*`` columns only."""
    out: dict[str, str] = {}
    items = {"label": cfg.truth.label, **cfg.truth.extra}
    for name, tb in items.items():
        if domain == "mc":
            out[TRUTH_LABEL if name == "label" else f"truth_{name}"] = tb.mc
        elif tb.data is not None:
            out[HIDDEN_LABEL if name == "label" else f"hidden_{name}"] = tb.data
    return out


def chunk_branches(cfg: DatasetConfig, domain: str) -> list[str]:
    names = [cfg.run_branch, cfg.event_branch, *cfg.features]
    names += [c.branch for c in cfg.selection]
    names += [r.when.branch for r in cfg.missing_rules]
    names += list(truth_branches(cfg, domain).values())
    return list(dict.fromkeys(names))


def _to_float(values: np.ndarray, sentinels: list[float]) -> np.ndarray:
    out = values.astype(np.float64, copy=True)
    for s in sentinels:
        out[out == s] = np.nan
    return out


def _check_required(arrays: dict[str, np.ndarray], cfg: DatasetConfig, where: str, offset: int) -> None:
    for name in [cfg.run_branch, cfg.event_branch, *cfg.required]:
        bad = ~np.isfinite(arrays[name].reshape(len(arrays[name]), -1)).all(axis=1)
        if bad.any():
            first = int(np.flatnonzero(bad)[0]) + offset
            raise InputError(
                f"{where}: branch {name!r} is missing, NaN or inf in {int(bad.sum())} entries "
                f"(first at entry {first}); it is required"
            )
    for name in cfg.features:
        if np.isinf(arrays[name]).any():
            first = int(np.flatnonzero(np.isinf(arrays[name]).reshape(len(arrays[name]), -1).any(axis=1))[0])
            raise InputError(f"{where}: branch {name!r} holds inf (first at entry {first + offset})")


def _worker_name() -> str:
    """The Dask worker's address on a cluster (so tests can see the spread), else the host."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        import socket

        return socket.gethostname()


def process_chunk(task: ChunkTask, cfg: DatasetConfig, shard_root: str) -> ChunkStats:
    """Read entries [start, stop) of one file and write its Parquet shards."""
    where = f"{task.path}:{task.tree}"
    truth = truth_branches(cfg, task.domain)
    raw = read_arrays(Path(task.path), task.tree, chunk_branches(cfg, task.domain), task.start, task.stop)
    arrays = {k: (v if k in truth.values() else _to_float(v, cfg.sentinels)) for k, v in raw.items()}
    _check_required(arrays, cfg, where, task.start)

    n = task.stop - task.start
    keep = np.ones(n, dtype=bool)
    for cut in cfg.selection:
        keep &= cut_mask(arrays[cut.branch], cut)
    for rule in cfg.missing_rules:
        hit = cut_mask(arrays[rule.when.branch], rule.when)
        for col in rule.columns:
            arrays[col][hit] = np.nan

    stats = ChunkStats(index=task.index, entries=n, selected=int(keep.sum()), host=_worker_name())
    if not keep.any():
        return stats

    run = raw[cfg.run_branch][keep].astype(np.int64)
    event = raw[cfg.event_branch][keep].astype(np.int64)
    split = assign_split(run, event, train=cfg.split.train, validation=cfg.split.validation, seed=cfg.split.seed)
    columns: dict[str, np.ndarray] = {"run": run, "event": event}
    for branch in cfg.features:
        values = arrays[branch][keep].reshape(int(keep.sum()), -1).astype(np.float32)
        for j, col in enumerate(expand_columns(branch, task.shapes[branch])):
            columns[col] = values[:, j]
    for col, branch in truth.items():
        columns[col] = raw[branch][keep].astype(np.int64)
    frame = pd.DataFrame(columns)

    fit_here = task.domain in cfg.normalisation_domains
    for s, split_name in enumerate(SPLIT_NAMES):
        part = frame[split == s]
        if part.empty:
            continue
        rel = f"{split_name}/{task.domain}/part-{task.index:05d}.parquet"
        out = Path(shard_root) / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        part.to_parquet(out, index=False)
        stats.shards.append(rel)
        stats.rows[f"{split_name}/{task.domain}"] = len(part)
        if TRUTH_LABEL in part:
            codes, counts = np.unique(part[TRUTH_LABEL].to_numpy(), return_counts=True)
            stats.truth_counts[split_name] = {int(c): int(k) for c, k in zip(codes, counts)}
        if split_name == "train" and fit_here:
            for branch in cfg.features:
                kind = cfg.transforms.get(branch)
                for col in expand_columns(branch, task.shapes[branch]):
                    stats.norm[col] = fit_stats(apply_transform(part[col].to_numpy(np.float64), kind))
    return stats
