"""Reading ROOT trees with uproot, with errors that name the file, tree and branch."""

from __future__ import annotations

import glob
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import uproot

from autopid.errors import InputError


@dataclass(frozen=True)
class BranchInfo:
    dtype: np.dtype
    shape: tuple[int, ...]  # per-entry shape: () for scalars


def expand_files(patterns: Iterable[str]) -> list[Path]:
    """Expand paths and globs; a pattern that matches nothing is an error."""
    out: list[Path] = []
    for pattern in patterns:
        pattern = str(Path(pattern.replace("{period}", "*")).expanduser())
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches:
                raise InputError(f"{pattern}: no file matches this pattern")
            out.extend(Path(m) for m in matches)
        else:
            path = Path(pattern)
            if not path.is_file():
                raise InputError(f"{path}: file not found")
            out.append(path)
    return out


def open_tree(path: Path, tree: str) -> uproot.TTree:
    try:
        fh = uproot.open(path)
    except FileNotFoundError as exc:
        raise InputError(f"{path}: file not found") from exc
    except Exception as exc:  # uproot raises many types for non-ROOT or truncated files
        raise InputError(f"{path}: not a readable ROOT file ({type(exc).__name__}: {exc})") from exc
    try:
        obj = fh[tree]
    except Exception as exc:
        trees = sorted({k.split(";")[0] for k, c in fh.classnames().items() if c == "TTree"})
        raise InputError(f"{path}: no tree {tree!r} (trees in file: {', '.join(trees) or 'none'})") from exc
    if not isinstance(obj, uproot.behaviors.TTree.TTree):
        raise InputError(f"{path}: {tree!r} is a {type(obj).__name__}, not a TTree")
    return obj


def branch_info(path: Path, tree: uproot.TTree, names: Iterable[str]) -> dict[str, BranchInfo]:
    """Check every branch exists and holds numbers (scalar or fixed-size array)."""
    out: dict[str, BranchInfo] = {}
    for name in names:
        if name not in tree:
            raise InputError(f"{path}:{tree.name}: no branch {name!r}")
        interp = tree[name].interpretation
        if not isinstance(interp, uproot.interpretation.numerical.AsDtype):
            raise InputError(
                f"{path}:{tree.name}: branch {name!r} has type {tree[name].typename!r}; "
                "expected a number or a fixed-size array of numbers"
            )
        dtype = np.dtype(interp.to_dtype)
        base = dtype.base if dtype.subdtype is not None else dtype
        if base.kind not in "biuf":
            raise InputError(
                f"{path}:{tree.name}: branch {name!r} has type {tree[name].typename!r}; expected numbers"
            )
        out[name] = BranchInfo(dtype=base, shape=tuple(interp.inner_shape))
    return out


def read_arrays(
    path: Path, tree_name: str, names: list[str], start: int, stop: int
) -> dict[str, np.ndarray]:
    tree = open_tree(path, tree_name)
    try:
        arrays = tree.arrays(names, entry_start=start, entry_stop=stop, library="np")
    except Exception as exc:
        raise InputError(
            f"{path}:{tree_name}: cannot read entries {start}-{stop} of branches "
            f"{', '.join(names)} ({type(exc).__name__}: {exc}); is the file truncated?"
        ) from exc
    return {name: np.asarray(arrays[name]) for name in names}
