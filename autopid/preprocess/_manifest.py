"""From the per-file statistics to ``manifest.json``, refusing results no model can use."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from autopid._logging import get_logger
from autopid.config.dataset import DatasetConfig
from autopid.errors import InputError
from autopid.features import expand_columns, finish_stats
from autopid.preprocess import cache as _cache
from autopid.preprocess._split import SPLIT_NAMES
from autopid.preprocess._task import COUNT, MAX, MIN, SUM, SUMSQ, FileStats, FileTask

_log = get_logger(__name__)


@dataclass(frozen=True)
class Input:
    task: FileTask
    sha256: str
    stats: FileStats

    @property
    def where(self) -> str:
        return f"{self.task.path}:{self.task.tree}"


def feature_shapes(inputs: list[Input]) -> dict[str, tuple[int, ...]]:
    """Each feature's per-entry shape, which every file must agree on."""
    shapes: dict[str, tuple[int, ...]] = {}
    first: dict[str, str] = {}
    for inp in inputs:
        for name, shape in inp.stats.shapes.items():
            if shapes.setdefault(name, shape) != shape:
                raise InputError(f"{inp.where}: branch {name!r} has shape {shape}, "
                                 f"but {shapes[name]} in {first[name]}")
            first.setdefault(name, inp.where)
    return shapes


def check_counts(cfg: DatasetConfig, inputs: list[Input]) -> None:
    """Empty trees and empty selections, each told apart from the other."""
    empty = [inp.where for inp in inputs if inp.stats.entries == 0]
    mc = [inp for inp in inputs if inp.task.domain == "mc"]
    if all(inp.stats.entries == 0 for inp in mc):
        raise InputError(f"dataset {cfg.name!r}: every MC tree is empty (0 entries), so there is nothing "
                         f"to train on: {', '.join(inp.where for inp in mc)}")
    for where in empty:
        _log.warning("%s: the tree is empty (0 entries); nothing is read from it", where)
    if sum(inp.stats.selected for inp in inputs) == 0:
        cuts = "; ".join(c.describe() for c in cfg.selection) or "none"
        entries = sum(inp.stats.entries for inp in inputs)
        raise InputError(f"dataset {cfg.name!r}: the selection keeps no entry (cuts: {cuts}) "
                         f"of {entries} entries in {len(inputs)} file(s)")


def _fitted(cfg: DatasetConfig, inputs: list[Input]) -> dict[str, np.ndarray]:
    """Per feature branch, [5, elements] over the train rows of the normalisation domains."""
    out: dict[str, np.ndarray] = {}
    for inp in inputs:
        for branch, part in inp.stats.norm.items():
            prev = out.get(branch)
            if prev is None:
                out[branch] = part.copy()
                continue
            prev[:MIN] += part[:MIN]
            prev[MIN] = np.minimum(prev[MIN], part[MIN])
            prev[MAX] = np.maximum(prev[MAX], part[MAX])
    return out


def _useless(part: np.ndarray | None, j: int) -> str | None:
    """Why column ``j`` cannot be normalised, or None when it can."""
    if part is None or part[COUNT, j] == 0:
        return "always missing (NaN, a sentinel or blanked by a missing rule)"
    if part[MIN, j] == part[MAX, j]:
        return f"constant ({part[MIN, j]:g})"
    return None


def check_features(cfg: DatasetConfig, fitted: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]]) -> None:
    """Refuse a feature that is always missing or constant on the training split: it
    cannot be normalised and tells the model nothing.

    An array branch is refused only when all its elements are: single elements of a sparse
    layout (a second track, an outer layer) may be rare, and the layout needs them all.
    """
    domains = "/".join(cfg.normalisation_domains)
    if not fitted:
        raise InputError(f"dataset {cfg.name!r}: no {domains} entry in the train split to fit the "
                         "normalisation on")
    for branch in cfg.features:
        cols = expand_columns(branch, shapes[branch])
        why = [_useless(fitted.get(branch), j) for j in range(len(cols))]
        kind = cfg.transforms.get(branch)
        after = f" after the {kind} transform" if kind else ""
        fix = (f"; it cannot be normalised: remove {branch!r} from features or check the input files, "
               "sentinels, missing rules and cuts")
        if not shapes[branch] and why[0]:
            raise InputError(f"dataset {cfg.name!r}: feature column {branch!r} is {why[0]}{after} "
                             f"in the train split ({domains}){fix}")
        if shapes[branch] and all(why):
            raise InputError(f"dataset {cfg.name!r}: feature branch {branch!r}: each of its {len(cols)} "
                             f"columns is always missing or constant{after} in the train split ({domains}), "
                             f"e.g. {cols[0]!r} is {why[0]}{fix}")
        if shapes[branch] and any(why):
            _log.debug("%s: %d of %d columns of %r are always missing or constant in the train split; "
                       "normalised with std 1", cfg.name, sum(map(bool, why)), len(cols), branch)


def _splits(inputs: list[Input]) -> dict[str, dict[str, Any]]:
    splits: dict[str, dict[str, Any]] = {s: {} for s in SPLIT_NAMES}
    for inp in inputs:
        for key, n in inp.stats.rows.items():
            split, domain = key.split("/")
            splits[split].setdefault(domain, {"rows": 0, "shards": []})["rows"] += n
        for rel in inp.stats.shards:
            split, domain, _ = rel.split("/")
            splits[split][domain]["shards"].append(rel)
    return splits


def _species_counts(cfg: DatasetConfig, inputs: list[Input]) -> dict[str, dict[str, int]]:
    truth: dict[str, Counter[int]] = defaultdict(Counter)
    for inp in inputs:
        for split, codes in inp.stats.truth_counts.items():
            truth[split].update(codes)
    code_to_species = {c: name for name, sp in cfg.species.items() for c in sp.truth}
    out: dict[str, dict[str, int]] = {}
    for split in SPLIT_NAMES:
        per: Counter[str] = Counter()
        for code, n in truth[split].items():
            per[code_to_species.get(code, "other")] += n
        out[split] = {name: per.get(name, 0) for name in [*cfg.species, "other"]}
    return out


def build_manifest(cfg: DatasetConfig, key: str, inputs: list[Input]) -> dict[str, Any]:
    """Check the statistics of every file and lay them out as ``manifest.json``."""
    shapes = feature_shapes(inputs)
    check_counts(cfg, inputs)
    splits = _splits(inputs)
    for split in SPLIT_NAMES:
        if splits[split].get("mc", {}).get("rows", 0) == 0:
            raise InputError(f"dataset {cfg.name!r}: no MC entry in the {split} split after selection")
    fitted = _fitted(cfg, inputs)
    check_features(cfg, fitted, shapes)
    columns_by_branch = {b: expand_columns(b, shapes[b]) for b in cfg.features}
    columns = [c for b in cfg.features for c in columns_by_branch[b]]
    count, total, sumsq = (np.concatenate([fitted[b][row] for b in cfg.features]) for row in (COUNT, SUM, SUMSQ))
    mean, std = finish_stats(count, total, sumsq)
    transforms = {c: cfg.transforms[b] for b, cols in columns_by_branch.items() if b in cfg.transforms for c in cols}
    return {
        "format": _cache.CACHE_FORMAT,
        "key": key,
        "dataset": cfg.name,
        "experiment": cfg.experiment,
        "family": cfg.family,
        "features": {b: {"shape": list(shapes[b]), "columns": cols} for b, cols in columns_by_branch.items()},
        "columns": columns,
        "auxiliary": list(cfg.auxiliary),
        "roles": dict(cfg.roles),
        "normalisation": {"columns": columns, "mean": mean.tolist(), "std": std.tolist(),
                          "transforms": transforms,
                          "fitted_on": {"split": "train", "domains": list(cfg.normalisation_domains)}},
        "species": {name: sp.truth for name, sp in cfg.species.items()},
        "targets": list(cfg.targets),
        "kinematic": cfg.kinematic,
        "mda": cfg.mda.model_dump() if cfg.mda is not None else None,
        "missing_rules": [r.model_dump(mode="json") for r in cfg.missing_rules],
        "sentinels": list(cfg.sentinels),
        "species_counts": _species_counts(cfg, inputs),
        "splits": splits,
        "entries": sum(inp.stats.entries for inp in inputs),
        "selected": sum(inp.stats.selected for inp in inputs),
        "inputs": [{"path": inp.task.path, "domain": inp.task.domain, "tree": inp.task.tree,
                    "entries": inp.stats.entries, "sha256": inp.sha256} for inp in inputs],
        "hosts": sorted({inp.stats.host for inp in inputs}),
    }
