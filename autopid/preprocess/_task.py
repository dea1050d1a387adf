"""The work of one Dask task: one input file, opened once, read chunk by chunk, written
as Parquet shards straight from Arrow (one shard per split, one row group per chunk)."""

from __future__ import annotations

import socket
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from autopid.config.dataset import DatasetConfig
from autopid.errors import InputError
from autopid.features import apply_transform
from autopid.preprocess._chunk import TRUTH_LABEL, Chunk, chunk_branches, select_chunk
from autopid.preprocess._read import branch_info, open_tree, read_arrays
from autopid.preprocess._split import SPLIT_NAMES

# rows of FileStats.norm[branch]: partial sums that reduce across files, then the range
COUNT, SUM, SUMSQ, MIN, MAX = range(5)


@dataclass(frozen=True)
class FileTask:
    index: int
    path: str
    tree: str
    domain: str


@dataclass
class FileStats:
    index: int
    entries: int = 0
    selected: int = 0
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # feature branch -> shape
    rows: dict[str, int] = field(default_factory=dict)  # "train/mc" -> rows
    truth_counts: dict[str, dict[int, int]] = field(default_factory=dict)  # split -> code -> n
    norm: dict[str, np.ndarray] = field(default_factory=dict)  # branch -> [5, elements], train rows
    shards: list[str] = field(default_factory=list)
    host: str = ""


def _worker_name() -> str:
    """The Dask worker's address on a cluster (so tests can see the spread), else the host."""
    # a distributed worker has imported distributed already; importing it here would
    # cost a local worker process most of a second
    if "distributed" in sys.modules:
        try:
            return str(sys.modules["distributed"].get_worker().address)
        except ValueError:
            pass
    return socket.gethostname()


def _fit(norm: dict[str, np.ndarray], chunk: Chunk, a: int, b: int, transforms: dict[str, str]) -> None:
    """Add rows [a, b) (the train rows) of a chunk to the per-element sums, after the transform."""
    for branch, block in chunk.blocks.items():
        x = apply_transform(block[a:b].astype(np.float64), transforms.get(branch))
        finite = np.isfinite(x)
        z = np.where(finite, x, 0.0)
        part = np.stack([finite.sum(axis=0), z.sum(axis=0), np.square(z).sum(axis=0),
                         np.where(finite, x, np.inf).min(axis=0), np.where(finite, x, -np.inf).max(axis=0)])
        prev = norm.get(branch)
        if prev is None:
            norm[branch] = part
        else:
            prev[:MIN] += part[:MIN]
            prev[MIN] = np.minimum(prev[MIN], part[MIN])
            prev[MAX] = np.maximum(prev[MAX], part[MAX])


def _table(columns: dict[str, np.ndarray], a: int, b: int) -> pa.Table:
    """Rows [a, b) as an Arrow table wrapping the NumPy buffers (no copy).

    pa.array() would import pandas (0.6 s) in every freshly forked worker, to check
    whether it was handed a pandas object; wrapping the buffers needs no such check.
    """
    arrays = []
    for values in columns.values():
        part = np.ascontiguousarray(values[a:b])
        arrays.append(pa.Array.from_buffers(pa.from_numpy_dtype(part.dtype), len(part), [None, pa.py_buffer(part)]))
    return pa.Table.from_arrays(arrays, names=list(columns))


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    # dictionary-encoding measured floats costs twice the write time and grows the file
    # (almost every value differs); ids and labels repeat, and shrink with it
    return [f.name for f in schema if pa.types.is_integer(f.type)]


def _count_truth(stats: FileStats, split: str, labels: np.ndarray) -> None:
    codes, counts = np.unique(labels, return_counts=True)
    per = stats.truth_counts.setdefault(split, {})
    for c, k in zip(codes.tolist(), counts.tolist()):
        per[c] = per.get(c, 0) + k


def process_file(task: FileTask, cfg: DatasetConfig, shard_root: str) -> FileStats:
    """Check, read, select and write one file; the statistics go back to the driver."""
    try:
        return _process_file(task, cfg, shard_root)
    except InputError as exc:
        # the cause may hold uproot objects of classes made at run time, which cannot be
        # unpickled in the driver: send the message, with the cause as text
        clean = InputError(str(exc))
        if exc.__cause__ is not None:
            cause = "".join(traceback.format_exception(exc.__cause__)).rstrip()
            clean.add_note(f"caused by (in {task.path}):\n{cause}")
    raise clean  # outside the handler: no chained context either


def _process_file(task: FileTask, cfg: DatasetConfig, shard_root: str) -> FileStats:
    where = f"{task.path}:{task.tree}"
    tree = open_tree(task.path, task.tree)
    names = chunk_branches(cfg, task.domain)
    infos = branch_info(where, tree, names)
    for name in cfg.auxiliary:
        if infos[name].shape:
            raise InputError(f"{where}: auxiliary branch {name!r} has shape {infos[name].shape} per entry; "
                             "auxiliary branches must be scalars")
    stats = FileStats(index=task.index, entries=int(tree.num_entries),
                      shapes={b: infos[b].shape for b in cfg.features}, host=_worker_name())
    fit_here = task.domain in cfg.normalisation_domains
    writers: dict[str, pq.ParquetWriter] = {}
    try:
        for start in range(0, stats.entries, cfg.chunk_size):
            stop = min(start + cfg.chunk_size, stats.entries)
            raw = read_arrays(where, tree, names, start, stop)
            chunk = select_chunk(raw, cfg, task.domain, stats.shapes, where, start)
            if chunk is None:
                continue
            stats.selected += chunk.bounds[-1]
            for s, split_name in enumerate(SPLIT_NAMES):
                a, b = chunk.bounds[s], chunk.bounds[s + 1]
                if a == b:
                    continue
                table = _table(chunk.columns, a, b)
                key = f"{split_name}/{task.domain}"
                if key not in writers:
                    rel = f"{key}/part-{task.index:05d}.parquet"
                    out = Path(shard_root) / rel
                    out.parent.mkdir(parents=True, exist_ok=True)
                    writers[key] = pq.ParquetWriter(out, table.schema, use_dictionary=_dictionary_columns(table.schema))
                    stats.shards.append(rel)
                writers[key].write_table(table)
                stats.rows[key] = stats.rows.get(key, 0) + b - a
                if TRUTH_LABEL in chunk.columns:
                    _count_truth(stats, split_name, chunk.columns[TRUTH_LABEL][a:b])
                if split_name == "train" and fit_here:
                    _fit(stats.norm, chunk, a, b, dict(cfg.transforms))
    finally:
        for writer in writers.values():
            writer.close()
    return stats
