"""Raw inputs of a published model: which branches and columns it reads, and how.

A published version carries ``preprocessing.json``: the feature branches with their
shapes and columns, the sentinel values that mean "missing", the missing-detector rules,
the transforms, the MDA layout and the default tree. Inference reads the raw branches
of any table or ROOT file with that description, so it does what preprocessing did
before training (sentinels to NaN, missing rules) without the dataset YAML.

:class:`StoredLayout` stands in for a :class:`~autopid.data.PreprocessedDataset` where
only the layout and the normalisation are needed (building MDA graphs for inference),
with the normalisation read back from the published ``scaling_params.json``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autopid.config.dataset import Cut
from autopid.errors import InputError
from autopid.features import Normaliser
from autopid.preprocess._chunk import cut_mask
from autopid.publish.files import COLUMNS_FILE, PREPROCESSING_FILE, SCALING_FILE


def cache_config(ds: Any) -> dict[str, Any]:
    """The resolved dataset config the cache entry was built from (``config.yaml``), if any."""
    import yaml

    path = Path(ds.path) / "config.yaml"
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, ValueError):
        return {}


def model_input_columns(ds: Any, family: str) -> list[str]:
    """The raw columns a model of ``family`` reads, in the cache's column order."""
    if family == "fse":
        return list(ds.columns)
    layout = ds.manifest["mda"]
    branches = [layout[r]["branch"] for r in ("charge", "position", "clusters")]
    branches += [*layout["rigidity"], *layout["tof"]]
    wanted = {c for b in branches for c in ds.feature_columns(b)}
    return [c for c in ds.columns if c in wanted]


def preprocessing_spec(ds: Any, family: str) -> dict[str, Any]:
    """What inference needs to read raw inputs like preprocessing did (``preprocessing.json``)."""
    m = ds.manifest
    cfg = cache_config(ds)
    trees = sorted({i["tree"] for i in m.get("inputs", [])})
    columns = model_input_columns(ds, family)
    used = set(columns)
    features = {b: {"shape": list(v["shape"]), "columns": list(v["columns"])}
                for b, v in m["features"].items() if used & set(v["columns"])}
    return {
        "format": 1,
        "family": family,
        "experiment": m.get("experiment"),
        "dataset": m.get("dataset"),
        "tree": trees[0] if trees else None,
        "run_branch": cfg.get("run_branch", "run"),
        "event_branch": cfg.get("event_branch", "event"),
        "columns": columns,
        "features": features,
        "sentinels": [float(s) for s in m.get("sentinels", [])],
        "missing_rules": list(m.get("missing_rules", [])),
        "transforms": {c: t for c, t in m["normalisation"].get("transforms", {}).items() if c in used},
        "kinematic": m.get("kinematic"),
        "mda": m.get("mda"),
    }


def rule_columns(spec: Mapping[str, Any], rule: Mapping[str, Any], all_features: Mapping[str, Any]) -> list[str]:
    """Columns a missing rule blanks: its branches expanded (a rule names branches)."""
    out: list[str] = []
    for name in rule["columns"]:
        if name in all_features:
            out += list(all_features[name]["columns"])
        else:
            out.append(name)
    return out


def apply_missing_rules(cols: dict[str, np.ndarray], spec: Mapping[str, Any], where: str) -> None:
    """Blank the columns of each rule where its condition holds (in place, float64 arrays)."""
    features = spec["features"]
    for rule in spec.get("missing_rules", []):
        cut = Cut.model_validate(rule["when"])
        if cut.branch not in cols:
            raise InputError(f"{where}: missing rule on {cut.branch!r} needs that branch, which the input lacks")
        hit = cut_mask(cols[cut.branch], cut)
        for col in rule_columns(spec, rule, features):
            if col in cols:
                cols[col] = np.where(hit, np.nan, cols[col])


def to_float(values: np.ndarray, sentinels: Sequence[float], where: str, column: str) -> np.ndarray:
    """float64 copy with sentinels as NaN; inf is refused as in preprocessing."""
    try:
        out = np.asarray(values, dtype=np.float64).copy()
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: column {column!r} is not numeric ({exc})") from exc
    for s in sentinels:
        out[out == s] = np.nan
    if np.isinf(out).any():
        first = int(np.flatnonzero(np.isinf(out))[0])
        raise InputError(f"{where}: column {column!r} holds inf (first at row {first})")
    return out


def _needed(spec: Mapping[str, Any]) -> list[str]:
    """Model columns plus the branches the missing rules test."""
    extra = [r["when"]["branch"] for r in spec.get("missing_rules", [])]
    return list(dict.fromkeys([*spec["columns"], *extra]))


def _branch_of(spec: Mapping[str, Any]) -> dict[str, tuple[str, int]]:
    """column -> (branch, flat index within the branch)."""
    return {c: (b, j) for b, v in spec["features"].items() for j, c in enumerate(v["columns"])}


def columns_from_branches(arrays: Mapping[str, Any], spec: Mapping[str, Any], where: str) -> dict[str, np.ndarray]:
    """Expand branch arrays (``[N]`` or ``[N, *shape]``) into the needed float64 columns."""
    sentinels = spec.get("sentinels", [])
    where_col = _branch_of(spec)
    out: dict[str, np.ndarray] = {}
    flat: dict[str, np.ndarray] = {}
    missing = []
    for col in _needed(spec):
        if col in arrays:  # already a column (scalar branch or expanded name)
            out[col] = to_float(np.asarray(arrays[col]).reshape(-1), sentinels, where, col)
            continue
        branch, j = where_col.get(col, (col, 0))
        if branch not in arrays:
            missing.append(col if branch == col else f"{col} (branch {branch})")
            continue
        if branch not in flat:
            arr = np.asarray(arrays[branch])
            flat[branch] = arr.reshape(len(arr), -1)
        out[col] = to_float(flat[branch][:, j], sentinels, where, col)
    if missing:
        raise InputError(f"{where}: the model needs columns the input lacks: {', '.join(missing[:10])}"
                         + (f" and {len(missing) - 10} more" if len(missing) > 10 else ""))
    lengths = {len(v) for v in out.values()}
    if len(lengths) > 1:
        raise InputError(f"{where}: columns have different lengths {sorted(lengths)}")
    return out


def table_columns(data: Any, spec: Mapping[str, Any], where: str = "input") -> dict[str, np.ndarray]:
    """Raw columns from a NumPy matrix (``[N, F]`` in ``spec['columns']`` order), a pandas
    DataFrame, a mapping of arrays or an awkward Array of records."""
    if isinstance(data, pd.DataFrame):
        return columns_from_branches({c: data[c].to_numpy() for c in data.columns}, spec, where)
    if isinstance(data, np.ndarray):
        cols = spec["columns"]
        if data.ndim != 2 or data.shape[1] != len(cols):
            raise InputError(f"{where}: a NumPy input must be [rows, {len(cols)}] in the order of "
                             f"{COLUMNS_FILE}, got shape {list(data.shape)}")
        arrays = {c: data[:, j] for j, c in enumerate(cols)}
        extra = [r["when"]["branch"] for r in spec.get("missing_rules", []) if r["when"]["branch"] not in arrays]
        if extra:
            raise InputError(f"{where}: missing rules test {extra}, which are not model columns; "
                             "pass a DataFrame or ROOT file that has them")
        return columns_from_branches(arrays, spec, where)
    if isinstance(data, Mapping):
        return columns_from_branches(data, spec, where)
    try:
        import awkward as ak
    except ImportError:  # pragma: no cover - awkward is a dependency
        ak = None
    if ak is not None and isinstance(data, ak.Array):
        fields = ak.fields(data)
        if not fields:
            raise InputError(f"{where}: an awkward input must be an array of records (one field per branch)")
        return columns_from_branches({f: ak.to_numpy(data[f]) for f in fields}, spec, where)
    raise InputError(f"{where}: unsupported input type {type(data).__name__}; pass a NumPy array, pandas "
                     "DataFrame, awkward Array or a ROOT file path")


def root_batches(path: str | Path, tree: str | None, spec: Mapping[str, Any], step: int
                 ) -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """Chunks of a ROOT tree: (raw columns, pass-through run/event columns)."""
    from autopid.preprocess._read import open_tree

    tree = tree or spec.get("tree")
    if not tree:
        raise InputError(f"{path}: no tree name given and the model records none; pass --tree")
    t = open_tree(Path(path), tree)
    where_col = _branch_of(spec)
    branches = list(dict.fromkeys(where_col.get(c, (c, 0))[0] for c in _needed(spec)))
    missing = [b for b in branches if b not in t.keys()]
    if missing:
        raise InputError(f"{path}:{tree}: the model needs branches the tree lacks: {', '.join(missing)}")
    keep = [b for b in (spec.get("run_branch"), spec.get("event_branch")) if b and b in t.keys()]
    for arrays in t.iterate(list(dict.fromkeys([*branches, *keep])), library="np", step_size=step):
        where = f"{path}:{tree}"
        yield columns_from_branches(arrays, spec, where), {k: np.asarray(arrays[k]) for k in keep}


def raw_matrix(cols: Mapping[str, np.ndarray], spec: Mapping[str, Any], *, apply_rules: bool = True) -> np.ndarray:
    """``[N, F]`` float32 in model column order (missing = NaN); missing rules applied
    unless ``apply_rules`` is False (the FSE graph applies them itself)."""
    work = {k: np.asarray(v, dtype=np.float64) for k, v in cols.items()}
    if apply_rules:
        apply_missing_rules(work, spec, "input")
    n = len(next(iter(work.values()))) if work else 0
    out = np.empty((n, len(spec["columns"])), dtype=np.float32)
    for j, c in enumerate(spec["columns"]):
        out[:, j] = work[c]
    return out


class StoredLayout:
    """The parts of a :class:`~autopid.data.PreprocessedDataset` that building MDA graphs
    needs, from a published version: layout from ``preprocessing.json``, normalisation
    from ``scaling_params.json`` (``[column, mean, std]``) and the recorded transforms."""

    def __init__(self, spec: Mapping[str, Any], scaling: Sequence[Sequence[Any]], path: str | Path = "") -> None:
        self.path = Path(path)
        self.spec = dict(spec)
        self.manifest: dict[str, Any] = {"mda": spec.get("mda"), "features": spec["features"],
                                         "columns": spec["columns"], "experiment": spec.get("experiment")}
        cols = [str(r[0]) for r in scaling]
        self.normaliser = Normaliser(columns=tuple(cols), mean=np.asarray([float(r[1]) for r in scaling]),
                                     std=np.asarray([float(r[2]) for r in scaling]),
                                     transforms=dict(spec.get("transforms", {})))

    @classmethod
    def from_dir(cls, directory: str | Path) -> StoredLayout:
        d = Path(directory)
        try:
            spec = json.loads((d / PREPROCESSING_FILE).read_text(encoding="utf-8"))
            scaling = json.loads((d / SCALING_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{d}: cannot read {PREPROCESSING_FILE} / {SCALING_FILE} ({exc})") from exc
        return cls(spec, scaling, d)

    @property
    def columns(self) -> list[str]:
        return list(self.spec["columns"])

    def feature_columns(self, branch: str) -> list[str]:
        return list(self.spec["features"][branch]["columns"])

    def feature_shape(self, branch: str) -> tuple[int, ...]:
        return tuple(self.spec["features"][branch]["shape"])
