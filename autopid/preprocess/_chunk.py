"""One chunk of entries: select, apply missing rules, label and split, as NumPy columns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from autopid.config.dataset import Cut, DatasetConfig
from autopid.errors import InputError
from autopid.features import expand_columns
from autopid.preprocess._split import assign_split

TRUTH_LABEL = "truth_label"
HIDDEN_LABEL = "hidden_label"


def cut_mask(values: np.ndarray, cut: Cut) -> np.ndarray:
    """Where ``values op value`` holds; NaN fails every op but ``!=``.

    The bound is a float64 NumPy scalar: float32 values are then compared in float64
    (as if converted first, without the copy); a Python float would round the bound
    to float32 instead.
    """
    v = np.float64(cut.value) if not isinstance(cut.value, list) else [np.float64(x) for x in cut.value]
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
        return np.isin(values, np.asarray(v, dtype=np.float64))  # "in"


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
    names = [cfg.run_branch, cfg.event_branch, *cfg.features, *cfg.auxiliary]
    names += [c.branch for c in cfg.selection]
    names += [r.when.branch for r in cfg.missing_rules]
    names += list(truth_branches(cfg, domain).values())
    return list(dict.fromkeys(names))


def _with_missing(values: np.ndarray, sentinels: list[float]) -> np.ndarray:
    """``values`` with the sentinels as NaN: the array itself when it holds none (most
    branches: no copy), else a float copy. Equality is float64-exact, as in cut_mask."""
    hit: np.ndarray | None = None
    for s in sentinels:
        m = values == np.float64(s)
        if m.any():
            hit = m if hit is None else hit | m
    if hit is None:
        return values
    out = _float_copy(values)
    out[hit] = np.nan
    return out


def _float_copy(values: np.ndarray) -> np.ndarray:
    # float32 stays float32 (what the shards store); integers need a float for NaN
    return values.copy() if values.dtype.kind == "f" else values.astype(np.float64)


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


@dataclass
class Chunk:
    """The selected rows of one chunk, ordered by split (stable: file order within a split).

    Split ``s`` is rows ``bounds[s]:bounds[s + 1]`` of every column and block, so each
    split is a slice, and a slice of a contiguous array goes to Arrow without a copy.
    """

    columns: dict[str, np.ndarray]  # float32 features and auxiliary, int64 run/event/truth
    blocks: dict[str, np.ndarray]  # feature branch -> [rows, elements] float32, for the statistics
    bounds: tuple[int, int, int, int]


def select_chunk(raw: dict[str, np.ndarray], cfg: DatasetConfig, domain: str,
                 shapes: dict[str, tuple[int, ...]], where: str, offset: int) -> Chunk | None:
    """Cuts, missing rules, labels and split of one chunk read from ``where``; None if no row passes."""
    truth = truth_branches(cfg, domain)
    truth_names = set(truth.values())
    arrays = {k: (v if k in truth_names else _with_missing(v, cfg.sentinels)) for k, v in raw.items()}
    _check_required(arrays, cfg, where, offset)

    n = len(raw[cfg.run_branch])
    keep = np.ones(n, dtype=bool)
    for cut in cfg.selection:
        keep &= cut_mask(arrays[cut.branch], cut)
    for rule in cfg.missing_rules:  # one after the other: a rule may test what an earlier one blanked
        hit = cut_mask(arrays[rule.when.branch], rule.when)
        if not hit.any():
            continue
        for col in rule.columns:
            if arrays[col] is raw[col]:  # never write into the arrays uproot handed out
                arrays[col] = _float_copy(raw[col])
            arrays[col][hit] = np.nan
    rows = np.flatnonzero(keep)
    k = len(rows)
    if k == 0:
        return None

    run = raw[cfg.run_branch][rows].astype(np.int64)
    event = raw[cfg.event_branch][rows].astype(np.int64)
    split = assign_split(run, event, train=cfg.split.train, validation=cfg.split.validation, seed=cfg.split.seed)
    order = np.argsort(split, kind="stable")
    rows = rows[order]
    counts = np.bincount(split, minlength=3)
    bounds = (0, int(counts[0]), int(counts[0] + counts[1]), k)
    columns: dict[str, np.ndarray] = {"run": run[order], "event": event[order]}
    blocks: dict[str, np.ndarray] = {}
    for branch in cfg.features:
        block = arrays[branch][rows].reshape(k, -1).astype(np.float32, copy=False)
        blocks[branch] = block
        # one contiguous row per element: Arrow wraps each without another copy
        by_element = block.T.copy() if block.shape[1] > 1 else block.reshape(1, k)
        for j, col in enumerate(expand_columns(branch, shapes[branch])):
            columns[col] = by_element[j]
    for branch in cfg.auxiliary:  # physical values for baselines and calibrations: no transform
        columns[branch] = np.ascontiguousarray(arrays[branch][rows], dtype=np.float32)
    for col, branch in truth.items():
        columns[col] = raw[branch][rows].astype(np.int64, copy=False)
    return Chunk(columns, blocks, bounds)
