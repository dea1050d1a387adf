"""Truth-free noise overlay: MC cluster counts given the Data noise rate.

Data has more noise clusters per tracker layer and side than MC (in the AMS-like
simulation 0.2 against 0.1, as in a real detector whose MC is generated before the
detector is known). A classifier trained on MC then reads the counts as if Data were as
quiet, and a Data-vs-MC classifier tells the domains apart by them alone. Experiments
overlay the noise measured in Data onto MC; autopid does the same, for count columns
only, without truth:

* the noise mean of a count column (a layer and side) is estimated on each domain's
  train split, on rows with no second track and no extra cluster on the other side of
  the same layer (a fragment or debris crossing a layer leaves clusters on both sides,
  noise on one; without this cut the domains' different shares of interacting nuclei
  read as noise): the main track's own cluster is subtracted, and the mean is
  ``N(1 extra cluster) / N(none)``, which pile-ups of many clusters do not enter;
* MC rows of the column then get Poisson(``lambda_Data - lambda_MC``) extra clusters
  where that is positive (noise can be added, not removed);
* the draw of a row is a function of the row's own raw values (a hash of its charges),
  not of its position in a frame, so an event gets the same overlay in training,
  evaluation and inference, whatever else is in the frame.

NumPy only (inference imports it without PyTorch or pandas).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIN_ROWS = 200  # rows of the noise-only sample each domain needs for an estimate


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def row_keys(cols: Mapping[str, Any], names: Sequence[str]) -> np.ndarray:
    """A 64-bit key per row from the raw float values of ``names`` (NaN counts as 0)."""
    n = len(np.asarray(cols[names[0]]))
    key = np.zeros(n, dtype=np.uint64)
    for c in names:
        bits = np.nan_to_num(np.asarray(cols[c], dtype=np.float64), nan=0.0).view(np.uint64)
        key = _splitmix64(key ^ bits)
    return key


class SeedKeys:
    """The per-row keys of one frame (``cols``), computed once per set of key columns
    however many calibration steps draw from them."""

    def __init__(self, cols: Mapping[str, Any]) -> None:
        self.cols = cols
        self._keys: dict[tuple[str, ...], np.ndarray] = {}

    def get(self, names: Sequence[str], what: str) -> np.ndarray:
        """Keys from the raw values of ``names``; a clear error naming ``what`` when the
        frame lacks one of them."""
        k = tuple(names)
        if k not in self._keys:
            missing = [c for c in names if c not in self.cols]
            if missing:
                raise ValueError(f"{what}: the columns that seed each row's draws are missing: {', '.join(missing)}")
            self._keys[k] = row_keys(self.cols, names)
        return self._keys[k]


def uniforms(keys: np.ndarray, salt: int) -> np.ndarray:
    """A uniform in [0, 1) per key, a function of ``(key, salt)`` only."""
    return (_splitmix64(keys ^ _splitmix64(np.full(len(keys), salt, dtype=np.uint64))) >> np.uint64(11)
            ).astype(np.float64) / float(1 << 53)


def poisson_draws(keys: np.ndarray, mean: float, salt: int) -> np.ndarray:
    """Poisson(``mean``) counts, one per key, by inverting the CDF at a uniform made
    from ``(key, salt)``: the same key and salt always give the same count."""
    u = uniforms(keys, salt)
    k = np.arange(64)
    log_pmf = k * np.log(max(mean, 1e-300)) - mean - np.cumsum(np.log(np.maximum(k, 1)))
    cdf = np.cumsum(np.exp(log_pmf))
    return np.minimum(np.searchsorted(cdf, u, side="right"), k[-1]).astype(np.float64)


def column_salt(name: str) -> int:
    """A column's own salt (from its name, not its place among the columns at hand)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


def noise_mean(extra: np.ndarray) -> tuple[float, int]:
    """Poisson mean of the extra clusters ``extra`` (NaN: no count) as
    ``N(1 extra) / N(none)``, which counts pile-ups of many clusters (debris) in neither,
    and the number of rows used."""
    e = np.asarray(extra, dtype=np.float64)
    e = e[np.isfinite(e)]
    n0, n1 = float(np.sum(e <= 0)), float(np.sum(e == 1))
    return (n1 / n0 if n0 > 0 else float("inf")), len(e)


@dataclass
class ColumnDraws:
    """A value per column that MC rows get drawn from (the noise overlay's extra mean, the
    resolution smearing's width), the raw columns whose values seed each row's draws,
    and notes on the estimate. Stored as JSON with its ``KIND``."""

    KIND: ClassVar[str] = ""
    extra: dict[str, float]
    key_columns: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.KIND, "extra": {c: float(v) for c, v in self.extra.items()},
                "key_columns": list(self.key_columns), "info": self.info}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Any:
        if d.get("kind") != cls.KIND:
            raise ValueError(f"not a {cls.KIND.replace('_', ' ')}: kind {d.get('kind')!r}")
        return cls({str(c): float(v) for c, v in d["extra"].items()}, [str(c) for c in d["key_columns"]],
                   dict(d.get("info") or {}))

    def present(self, cols: Mapping[str, Any]) -> list[str]:
        """The columns of ``cols`` that get draws."""
        return [c for c, v in self.extra.items() if c in cols and v > 0]


class NoiseOverlay(ColumnDraws):
    """Extra Poisson mean per count column, added to MC rows (see the module docstring)."""

    KIND = "noise_overlay"

    def apply(self, cols: Mapping[str, Any], mc_rows: np.ndarray | slice,
              seeds: SeedKeys | None = None) -> dict[str, np.ndarray]:
        """The overlaid count columns of ``cols`` (those present, float64): ``mc_rows``
        (indices or a slice) get their extra clusters, the other rows stay as they are.
        A column's draws depend on the row's key columns and the column's name only.
        ``seeds``: the frame's keys, shared with the other steps drawing from it."""
        present = self.present(cols)
        out = {c: np.asarray(cols[c], dtype=np.float64).copy() for c in present}
        if not present:
            return out
        keys = (seeds or SeedKeys(cols)).get(self.key_columns, "noise overlay")[mc_rows]
        for c in present:
            add = poisson_draws(keys, self.extra[c], salt=column_salt(c))
            out[c][mc_rows] = out[c][mc_rows] + np.where(np.isfinite(out[c][mc_rows]), add, 0.0)
        return out


def fit_noise_overlay(mc: Mapping[str, Any], data: Mapping[str, Any],
                      counts: Mapping[str, tuple[str | None, str | None]],
                      second_track: Sequence[str], key_columns: Sequence[str]) -> NoiseOverlay:
    """Estimate the overlay from raw columns of both domains' train splits (no truth).

    ``counts`` maps each count column (a layer and side) to ``(hit, partner)``: the
    charge column of the main track's own hit there (its cluster is not noise) and the
    count column of the other side of the same layer (either None for a count of
    clusters off the track summed over layers). Rows with a second track (a finite
    value > 0 in any ``second_track`` column) are left out, and so are rows with an extra
    cluster on the partner side: a fragment or debris crossing the layer leaves a cluster
    on both sides, detector noise on one, so this removes the interactions whose
    clusters the domains' different compositions would otherwise count as noise."""

    def extra(cols: Mapping[str, Any], c: str) -> np.ndarray:
        hit = counts[c][0]
        own = 0.0 if hit is None else np.isfinite(np.asarray(cols[hit], dtype=np.float64)).astype(np.float64)
        return np.asarray(cols[c], dtype=np.float64) - own

    def quiet(cols: Mapping[str, Any]) -> np.ndarray:
        n = len(np.asarray(next(iter(cols.values()))))
        rows = np.ones(n, dtype=bool)
        for c in second_track:
            v = np.asarray(cols[c], dtype=np.float64)
            rows &= ~(np.isfinite(v) & (v > 0))
        return rows

    q = {"mc": quiet(mc), "data": quiet(data)}
    out: dict[str, float] = {}
    info: dict[str, Any] = {"quiet_rows": {d: int(r.sum()) for d, r in q.items()}, "lambda": {}}
    for c, (_, partner) in counts.items():
        lam = {}
        for name, cols in (("mc", mc), ("data", data)):
            rows = q[name] if partner is None else q[name] & ~(extra(cols, partner) > 0)
            lam[name] = noise_mean(extra(cols, c)[rows])
        (l_mc, n_mc), (l_data, n_data) = lam["mc"], lam["data"]
        ok = min(n_mc, n_data) >= MIN_ROWS and np.isfinite(l_mc) and np.isfinite(l_data)
        out[c] = float(max(l_data - l_mc, 0.0)) if ok else 0.0
        info["lambda"][c] = {d: (float(v) if np.isfinite(v) else None) for d, v in (("mc", l_mc), ("data", l_data))}
    return NoiseOverlay(out, list(key_columns), info)
