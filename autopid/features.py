"""One feature definition for preprocessing, training and inference.

Array branches become one column per element (``trk_charge[0][1][0]``); transforms are
applied before the normalisation, which is fitted on the training split only.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


def expand_columns(branch: str, shape: Sequence[int]) -> list[str]:
    """Column names of one branch: itself for a scalar, one per element for an array."""
    if not shape:
        return [branch]
    return [branch + "".join(f"[{i}]" for i in idx) for idx in itertools.product(*map(range, shape))]


def apply_transform(values: np.ndarray, kind: str | None) -> np.ndarray:
    """``signed_log``: sign(x) log(1 + |x|); ``inverse``: 1/x (rigidity to curvature)."""
    if kind is None:
        return values
    if kind == "signed_log":
        return np.sign(values) * np.log1p(np.abs(values))
    if kind == "inverse":
        with np.errstate(divide="ignore", invalid="ignore"):
            out = 1.0 / values
        return np.where(np.isfinite(out), out, np.nan)
    raise ValueError(f"unknown transform {kind!r}")


def column_transforms(
    columns_by_branch: Mapping[str, Sequence[str]], transforms: Mapping[str, str]
) -> dict[str, str]:
    return {
        col: transforms[branch]
        for branch, cols in columns_by_branch.items()
        if branch in transforms
        for col in cols
    }


@dataclass(frozen=True)
class Normaliser:
    """Standardisation ``(t(x) - mean) / std`` per column; missing stays NaN."""

    columns: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    transforms: Mapping[str, str]

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Normaliser:
        return cls(
            columns=tuple(d["columns"]),  # type: ignore[arg-type]
            mean=np.asarray(d["mean"], dtype=np.float64),
            std=np.asarray(d["std"], dtype=np.float64),
            transforms=dict(d.get("transforms", {})),  # type: ignore[arg-type]
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "columns": list(self.columns),
            "mean": [float(x) for x in self.mean],
            "std": [float(x) for x in self.std],
            "transforms": dict(self.transforms),
        }

    def scaling_params(self) -> list[list[object]]:
        """ALICE O2's side file layout: ``[column, mean, std]`` rows."""
        return [[c, float(m), float(s)] for c, m, s in zip(self.columns, self.mean, self.std)]

    def transform(self, frame: Mapping[str, np.ndarray], columns: Sequence[str] | None = None) -> np.ndarray:
        """A float32 matrix of the requested columns (all by default), normalised."""
        cols = list(self.columns if columns is None else columns)
        index = {c: i for i, c in enumerate(self.columns)}
        out = np.empty((len(frame[cols[0]]) if cols else 0, len(cols)), dtype=np.float32)
        for j, col in enumerate(cols):
            i = index[col]
            x = apply_transform(np.asarray(frame[col], dtype=np.float64), self.transforms.get(col))
            out[:, j] = (x - self.mean[i]) / self.std[i]
        return out


def fit_stats(values: np.ndarray) -> tuple[int, float, float]:
    """(count, sum, sum of squares) of the finite values: partial sums that Dask tasks reduce."""
    finite = values[np.isfinite(values)]
    return int(finite.size), float(finite.sum()), float(np.square(finite).sum())


def finish_stats(count: np.ndarray, total: np.ndarray, sumsq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std from reduced partial sums; a constant or empty column gets std 1."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), 0.0)
        var = np.where(count > 1, sumsq / np.maximum(count, 1) - mean**2, 0.0)
    std = np.sqrt(np.clip(var, 0.0, None))
    std = np.where(std > 1e-12 * np.maximum(1.0, np.abs(mean)), std, 1.0)
    return mean, std
