"""Raw inputs of a published model: which branches and columns it reads, and how.

A published version carries ``preprocessing.json``: the feature branches with their
shapes and columns, the sentinel values that mean "missing", the missing-detector rules,
the transforms, the MDA layout, the default tree and the selection the model was
trained under (``selection``: the dataset's preselection cuts and required features;
see :mod:`autopid.publish.selection`). Inference reads the raw branches of any table or
ROOT file (TTree or RNTuple) with that description, so it does what preprocessing did
before training (sentinels to NaN, selection, missing rules) without the dataset YAML.

:class:`StoredLayout` stands in for a :class:`~autopid.data.PreprocessedDataset` where
only the layout and the normalisation are needed (building MDA graphs for inference),
with the normalisation read back from the published ``scaling_params.json``.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autopid.config.dataset import Cut
from autopid.errors import ConfigError, InputError
from autopid.features import Normaliser
from autopid.preprocess._chunk import cut_mask
from autopid.publish.files import COLUMNS_FILE, PREPROCESSING_FILE, SCALING_FILE

PREPROCESSING_FORMAT = 2  # 2: the selection is recorded


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


def recorded_selection(ds: Any) -> dict[str, Any]:
    """The ``selection`` entry of ``preprocessing.json``: the preselection cuts and the
    required features of the dataset config the cache was made with (its ``config.yaml``)."""
    from autopid.publish.selection import Selection

    cfg = cache_config(ds)
    if "selection" not in cfg:
        raise ConfigError(f"{Path(ds.path) / 'config.yaml'}: missing or unreadable, so the selection the cache "
                          "was made with is unknown; it must be recorded with the model (re-run preprocessing)")
    return Selection.to_spec(cfg.get("selection") or [], cfg.get("required") or [],
                             f"dataset {cfg.get('name', ds.manifest.get('dataset'))!r}: the preselection cuts "
                             "and required features of its preprocessing")


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
        "format": PREPROCESSING_FORMAT,
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
        "selection": recorded_selection(ds),
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


def to_float(values: np.ndarray, sentinels: Sequence[float], where: str, column: str,
             entry: np.ndarray | None = None) -> np.ndarray:
    """float64 copy with sentinels as NaN; inf is refused as in preprocessing (``entry``:
    the input entry of each row, for the message)."""
    try:
        out = np.asarray(values, dtype=np.float64).copy()
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: column {column!r} is not numeric ({exc})") from exc
    for s in sentinels:
        out[out == s] = np.nan
    if np.isinf(out).any():
        first = int(np.flatnonzero(np.isinf(out))[0])
        at = f"entry {int(entry[first])}" if entry is not None else f"row {first}"
        raise InputError(f"{where}: column {column!r} holds inf (first at {at}); the model was never trained "
                         "on inf (preprocessing refuses it)")
    return out


def rule_branches(spec: Mapping[str, Any]) -> list[str]:
    """The branches the missing rules test."""
    return list(dict.fromkeys(r["when"]["branch"] for r in spec.get("missing_rules", [])))


def _needed(spec: Mapping[str, Any]) -> list[str]:
    """Model columns plus the branches the missing rules test."""
    return list(dict.fromkeys([*spec["columns"], *rule_branches(spec)]))


def _branch_of(spec: Mapping[str, Any]) -> dict[str, tuple[str, int]]:
    """column -> (branch, flat index within the branch)."""
    return {c: (b, j) for b, v in spec["features"].items() for j, c in enumerate(v["columns"])}


def model_reads(spec: Mapping[str, Any], keys: Iterable[str]) -> tuple[list[str], list[str]]:
    """(names to read, branches the input lacks) for an input holding ``keys``: a column
    is read as itself (a scalar branch, an expanded table column) or via its branch."""
    have = set(keys)
    where_col = _branch_of(spec)
    names: list[str] = []
    missing: list[str] = []
    for col in _needed(spec):
        branch = where_col.get(col, (col, 0))[0]
        if col in have:
            names.append(col)
        elif branch in have:
            names.append(branch)
        else:
            missing.append(branch)
    return list(dict.fromkeys(names)), list(dict.fromkeys(missing))


def lacking_message(where: str, missing: Sequence[str]) -> str:
    return (f"{where}: the model needs columns the input lacks: {', '.join(missing[:10])}"
            + (f" and {len(missing) - 10} more" if len(missing) > 10 else ""))


def columns_from_branches(arrays: Mapping[str, Any], spec: Mapping[str, Any], where: str,
                          entry: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Expand branch arrays (``[N]`` or ``[N, *shape]``) into the needed float64 columns
    (``entry``: the input entry of each row, for messages)."""
    sentinels = spec.get("sentinels", [])
    where_col = _branch_of(spec)
    out: dict[str, np.ndarray] = {}
    flat: dict[str, np.ndarray] = {}
    _, missing = model_reads(spec, arrays.keys())
    if missing:
        raise InputError(lacking_message(where, missing))
    for col in _needed(spec):
        if col in arrays:  # already a column (scalar branch or expanded name)
            arr = np.asarray(arrays[col])
            if arr.ndim > 1 and int(np.prod(arr.shape[1:])) != 1:
                raise InputError(f"{where}: column {col!r} holds {list(arr.shape[1:])} values per entry; the "
                                 "model was trained on one")
            out[col] = to_float(arr.reshape(-1), sentinels, where, col, entry)
            continue
        branch, j = where_col[col]
        if branch not in flat:
            arr = np.asarray(arrays[branch])
            flat[branch] = arr.reshape(len(arr), -1)
            if flat[branch].shape[1] != len(spec["features"][branch]["columns"]):
                raise InputError(f"{where}: branch {branch!r} holds {list(arr.shape[1:])} values per entry; the "
                                 f"model was trained on shape {spec['features'][branch]['shape']}")
        out[col] = to_float(flat[branch][:, j], sentinels, where, col, entry)
    lengths = {len(v) for v in out.values()}
    if len(lengths) > 1:
        raise InputError(f"{where}: columns have different lengths {sorted(lengths)}")
    return out


def selection_floats(arrays: Mapping[str, Any], names: Iterable[str], sentinels: Sequence[float],
                     where: str) -> dict[str, np.ndarray]:
    """The branches a selection tests as float64, sentinels as NaN (inf kept: cuts order it)."""
    out: dict[str, np.ndarray] = {}
    for name in names:
        try:
            values = np.asarray(arrays[name], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{where}: branch {name!r}, which the selection tests, is not numeric ({exc})") from exc
        hit = np.isin(values, np.asarray(sentinels, dtype=np.float64)) if sentinels else None
        out[name] = np.where(hit, np.nan, values) if hit is not None and hit.any() else values
    return out


@dataclass
class Source:
    """Raw entries to score: where they come from (for messages), how many, the names
    they hold, and ``read(names, start, stop)`` giving entries [start, stop) of ``names``."""

    where: str
    entries: int
    keys: list[str]
    read: Callable[[list[str], int, int], dict[str, np.ndarray]]
    tree: Any = None  # the uproot TTree or RNTuple of a ROOT input

    @property
    def is_root(self) -> bool:
        return self.tree is not None

    def missing_error(self, names: Sequence[str], role: str) -> InputError:
        """The error for ``names`` absent from the input: each with its close matches,
        and ``role``, why it is needed."""
        hints = []
        for name in names:
            close = difflib.get_close_matches(name, self.keys, n=2, cutoff=0.6)
            hints.append(f"{name!r}" + (f" (close: {', '.join(map(repr, close))})" if close else ""))
        return InputError(f"{self.where}: no branch {', '.join(hints)}; {role}")

    def check_types(self, names: list[str]) -> None:
        """ROOT inputs: every one of ``names`` holds numbers or fixed-size arrays of numbers."""
        if self.tree is not None:
            from autopid.preprocess._read import branch_info

            branch_info(self.where, self.tree, names)


def _table(where: str, arrays: dict[str, np.ndarray]) -> Source:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise InputError(f"{where}: columns have different lengths: "
                         + ", ".join(f"{k} {n}" for k, n in list(lengths.items())[:6]))
    n = next(iter(lengths.values())) if lengths else 0
    return Source(where, n, list(arrays), lambda names, a, b: {k: arrays[k][a:b] for k in names})


def table_source(data: Any, spec: Mapping[str, Any], where: str = "input") -> Source:
    """A NumPy matrix (``[N, F]`` in ``spec['columns']`` order), a pandas DataFrame, a
    mapping of arrays or an awkward Array of records, as a :class:`Source`."""
    if isinstance(data, pd.DataFrame):
        return _table(where, {str(c): data[c].to_numpy() for c in data.columns})
    if isinstance(data, np.ndarray):
        cols = spec["columns"]
        if data.ndim != 2 or data.shape[1] != len(cols):
            raise InputError(f"{where}: a NumPy input must be [rows, {len(cols)}] in the order of "
                             f"{COLUMNS_FILE}, got shape {list(data.shape)}")
        extra = [b for b in rule_branches(spec) if b not in cols]
        if extra:
            raise InputError(f"{where}: missing rules test {extra}, which are not model columns; "
                             "pass a DataFrame or ROOT file that has them")
        return _table(where, {c: data[:, j] for j, c in enumerate(cols)})
    if isinstance(data, Mapping):
        return _table(where, {str(k): np.asarray(v) for k, v in data.items()})
    import awkward as ak

    if isinstance(data, ak.Array):
        fields = ak.fields(data)
        if not fields:
            raise InputError(f"{where}: an awkward input must be an array of records (one field per branch)")
        arrays = {}
        for f in fields:
            try:
                arrays[f] = ak.to_numpy(data[f])
            except (TypeError, ValueError) as exc:  # a variable-length or record field
                raise InputError(f"{where}: field {f!r} is not a number or a fixed-size array of numbers "
                                 f"({type(exc).__name__}: {exc})") from exc
        return _table(where, arrays)
    raise InputError(f"{where}: unsupported input type {type(data).__name__}; pass a NumPy array, pandas "
                     "DataFrame, awkward Array or a ROOT file path")


def root_source(path: str | Path, tree: str | None, spec: Mapping[str, Any]) -> Source:
    """A TTree or RNTuple of a ROOT file as a :class:`Source` (errors name the file and cause)."""
    from autopid.preprocess import open_tree
    from autopid.preprocess._read import read_arrays

    tree = tree or spec.get("tree")
    if not tree:
        raise InputError(f"{path}: no tree name given and the model records none; pass --tree")
    t = open_tree(Path(path), tree)
    where = f"{path}:{tree}"
    return Source(where, int(t.num_entries), [str(k) for k in t.keys()],
                  lambda names, a, b: read_arrays(where, t, names, a, b), tree=t)


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


def _read_json(path: Path) -> Any:
    """A side file of an exported model; a missing or broken one is named with its cause."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InputError(f"{path}: missing; the model directory {path.parent} is incomplete "
                         "(re-export or re-publish the model)") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc})") from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InputError(f"{path}: not valid JSON ({exc}); the file is corrupt") from exc


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
        spec, scaling = (_read_json(d / name) for name in (PREPROCESSING_FILE, SCALING_FILE))
        for key in ("family", "columns", "features"):
            if key not in spec:
                raise InputError(f"{d / PREPROCESSING_FILE}: no {key!r} entry; not an autopid export")
        try:
            return cls(spec, scaling, d)
        except (TypeError, ValueError, IndexError) as exc:
            raise InputError(f"{d / SCALING_FILE}: not [column, mean, std] rows ({exc})") from exc

    @property
    def columns(self) -> list[str]:
        return list(self.spec["columns"])

    def feature_columns(self, branch: str) -> list[str]:
        return list(self.spec["features"][branch]["columns"])

    def feature_shape(self, branch: str) -> tuple[int, ...]:
        return tuple(self.spec["features"][branch]["shape"])
