"""Reading ROOT trees (TTree or RNTuple) with uproot, with errors that name the file,
the tree and the branch, and keep the underlying cause."""

from __future__ import annotations

import difflib
import glob
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import uproot
from uproot.behaviors.RNTuple import RNTuple
from uproot.behaviors.TTree import TTree

from autopid._logging import get_logger
from autopid.errors import InputError

_log = get_logger(__name__)

# Both kinds answer ``num_entries``, ``keys()``, ``arrays(...)`` and ``iterate(...)`` alike.
Tree = TTree | RNTuple
TREE_CLASSES = ("TTree", "ROOT::RNTuple")


@dataclass(frozen=True)
class BranchInfo:
    dtype: np.dtype
    shape: tuple[int, ...]  # per-entry shape: () for scalars


def expand_files(patterns: Iterable[str]) -> list[Path]:
    """Expand paths and globs; a pattern that matches nothing is an error. A file that
    several patterns match (or one listed twice) is read once: its rows would otherwise
    count twice."""
    out: list[Path] = []
    seen: dict[str, str] = {}
    for pattern in patterns:
        pattern = str(Path(pattern.replace("{period}", "*")).expanduser())
        if glob.has_magic(pattern):
            matches = [Path(m) for m in sorted(glob.glob(pattern, recursive=True)) if Path(m).is_file()]
            if not matches:
                raise InputError(f"{pattern}: no file matches this pattern")
        else:
            path = Path(pattern)
            if path.is_dir():
                raise InputError(f"{path}: a directory, not a file; give a pattern such as {path / '*.root'}")
            if not path.is_file():
                raise InputError(f"{path}: file not found")
            matches = [path]
        for path in matches:
            key = os.path.realpath(path)
            if key in seen:
                _log.warning("%s: matched again by %s; read once", path, pattern if seen[key] != pattern else
                             "the same pattern")
                continue
            seen[key] = pattern
            out.append(path)
    return out


def _cause(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _truncation(path: Path, fh: Any) -> str | None:
    """'truncated: N of M bytes' when the file is shorter than its header says."""
    try:
        size, end = path.stat().st_size, int(fh.file.fEND)
    except (OSError, AttributeError, TypeError, ValueError):
        return None
    return f"the file is truncated ({size} of {end} bytes)" if size < end else None


def open_tree(path: str | Path, name: str) -> Tree:
    """The TTree or RNTuple ``name`` of a ROOT file, for preprocessing and prediction alike.

    Errors name the file and the real cause: a truncated or corrupt file is never
    reported as a missing tree.
    """
    path = Path(path)
    try:
        # memory-mapped reads: faster than uproot's default fsspec source for local files;
        # no array cache: every entry is read once, and cached arrays would keep memory
        # from being reused (a third fewer page faults in a fresh worker process)
        fh = uproot.open(path, handler=uproot.source.file.MemmapSource, array_cache=None)
    except FileNotFoundError as exc:
        raise InputError(f"{path}: file not found") from exc
    except Exception as exc:  # uproot raises many types for non-ROOT or truncated files
        raise InputError(f"{path}: not a readable ROOT file ({_cause(exc)})") from exc
    truncated = _truncation(path, fh)
    if truncated:
        raise InputError(f"{path}: {truncated}; re-copy or regenerate it")
    try:
        classname = fh.classname_of(name)
    except uproot.KeyInFileError as exc:
        trees = sorted({k.split(";")[0] for k, c in fh.classnames().items() if c in TREE_CLASSES})
        raise InputError(f"{path}: no tree {name!r} (trees in file: {', '.join(trees) or 'none'})") from exc
    except Exception as exc:
        raise InputError(f"{path}: cannot read the directory of the file ({_cause(exc)})") from exc
    if classname not in TREE_CLASSES:
        raise InputError(f"{path}: {name!r} is a {classname}, not a TTree or RNTuple")
    try:
        obj = fh[name]
    except Exception as exc:
        raise InputError(f"{path}: cannot read {classname} {name!r} ({_cause(exc)}); "
                         "the file is corrupt") from exc
    if not isinstance(obj, (TTree, RNTuple)):  # a class name that lied: be explicit
        raise InputError(f"{path}: {name!r} is a {type(obj).__name__}, not a TTree or RNTuple")
    return obj


def _missing_branch(where: str, name: str, keys: list[str]) -> InputError:
    close = difflib.get_close_matches(name, keys, n=3, cutoff=0.6)
    if close:
        hint = f"; close matches: {', '.join(map(repr, close))}"
    else:
        shown = ", ".join(keys[:12]) + (", ..." if len(keys) > 12 else "")
        hint = f"; it has {len(keys)} branches: {shown}"
    return InputError(f"{where}: no branch {name!r}{hint}")


def _rntuple_info(field: Any) -> tuple[str, np.dtype | None, tuple[int, ...]]:
    """(type name, dtype or None when not a fixed-size number, shape) of an RNTuple field."""
    import awkward as ak

    form = field.to_akform()[0].contents[0]
    shape: list[int] = []
    while isinstance(form, ak.forms.RegularForm):
        shape.append(int(form.size))
        form = form.content
    dtype = np.dtype(ak.types.numpytype.primitive_to_dtype(form.primitive)) \
        if isinstance(form, ak.forms.NumpyForm) and not form.inner_shape else None
    return str(field.typename), dtype, tuple(shape)


def _ttree_info(branch: Any) -> tuple[str, np.dtype | None, tuple[int, ...]]:
    interp = branch.interpretation
    if not isinstance(interp, uproot.interpretation.numerical.AsDtype):
        return str(branch.typename), None, ()
    dtype = np.dtype(interp.to_dtype)
    return str(branch.typename), (dtype.base if dtype.subdtype is not None else dtype), tuple(interp.inner_shape)


def branch_info(where: str, tree: Tree, names: Iterable[str]) -> dict[str, BranchInfo]:
    """Check every branch exists and holds numbers (scalar or fixed-size array).

    ``where`` is ``path:tree``, for the messages.
    """
    keys = list(tree.keys())
    present = set(keys)
    out: dict[str, BranchInfo] = {}
    for name in names:
        if name not in present:
            raise _missing_branch(where, name, keys)
        try:
            typename, dtype, shape = _rntuple_info(tree[name]) if isinstance(tree, RNTuple) else _ttree_info(tree[name])
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"{where}: cannot read the type of branch {name!r} ({_cause(exc)})") from exc
        if dtype is None:
            raise InputError(f"{where}: branch {name!r} has type {typename!r}; "
                             "expected a number or a fixed-size array of numbers")
        if dtype.kind not in "biuf":
            raise InputError(f"{where}: branch {name!r} has type {typename!r}; expected numbers")
        out[name] = BranchInfo(dtype=dtype, shape=shape)
    return out


def read_arrays(where: str, tree: Tree, names: list[str], start: int, stop: int) -> dict[str, np.ndarray]:
    """Entries [start, stop) of ``names`` as NumPy arrays (fixed-size arrays keep their shape)."""
    try:
        arrays = tree.arrays(names, entry_start=start, entry_stop=stop, library="np")
    except Exception as exc:
        raise _unreadable(where, tree, names, start, stop, exc) from exc
    return {name: np.asarray(arrays[name]) for name in names}


def _unreadable(where: str, tree: Tree, names: list[str], start: int, stop: int, exc: Exception) -> InputError:
    """Name the first branch that cannot be read, with its own error (the failure path only)."""
    for name in names:
        try:
            tree.arrays([name], entry_start=start, entry_stop=stop, library="np")
        except Exception as one:  # noqa: BLE001 - reported, with its type, in the returned error
            return InputError(f"{where}: cannot read branch {name!r}, entries {start}-{stop} "
                              f"({_cause(one)}); the file is corrupt")
    return InputError(f"{where}: cannot read entries {start}-{stop} ({_cause(exc)}); the file is corrupt")
