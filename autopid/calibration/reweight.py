"""MC-to-Data rigidity reweighting.

MC is generated flat in log R; Data follows a falling spectrum above a geomagnetic
cutoff. Left alone, the rigidity alone tells MC from Data, and a domain-adversarial
network is pushed to erase it. Each MC row gets the Data/MC density ratio of
``log10 |R|`` (R from the first rigidity branch of the MDA layout), from histograms of
the training rows:

* bins: equal-width in ``log10 |R|`` between the 0.5 % and 99.5 % quantiles of MC and
  Data pooled, as many as the smaller sample fills with ``min_per_bin`` rows on
  average (at most ``max_bins``); values outside fall in the edge bins;
* smoothing: ``pseudo_count`` (a fraction of a row) added to every bin of both
  histograms, then a 3-bin running mean of the ratio in log;
* clipping: ``[1 / max_weight, max_weight]``; the weights are then scaled to a mean of
  1 over the MC rows (so a weighted loss keeps its size). A row without a rigidity
  gets weight 1.

Where the weights act (``TrainingSpec.rigidity_reweighting``): by default on the MC
rows of the domain loss only, so the domain head compares MC and Data at the same
spectrum and the features need not forget the rigidity; ``"all"`` also weights the
MC classification loss (the classifier then concentrates on the Data-like rigidities
at the cost of the statistical weight of high-rigidity MC). The class-matched domain
accuracy (:mod:`autopid.calibration.label_shift`) uses them as well.

NumPy only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


def log_rigidity(values: np.ndarray) -> np.ndarray:
    """``log10 |R|`` (NaN where R is missing or 0)."""
    r = np.abs(np.asarray(values, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log10(r)
    return np.where(np.isfinite(out), out, np.nan)


@dataclass
class RigidityReweighter:
    """Histogram density ratio Data/MC in ``log10 |R|`` (see the module docstring)."""

    edges: np.ndarray
    ratio: np.ndarray  # per bin, smoothed and clipped, before the mean-1 scaling
    scale: float = 1.0  # mean-1 scaling of the MC rows it was fitted on
    max_weight: float = 20.0

    @classmethod
    def fit(cls, mc_rigidity: np.ndarray, data_rigidity: np.ndarray, *, mc_weights: np.ndarray | None = None,
            min_per_bin: int = 50, max_bins: int = 40, pseudo_count: float = 0.5,
            max_weight: float = 20.0) -> RigidityReweighter:
        lm, ld = log_rigidity(mc_rigidity), log_rigidity(data_rigidity)
        wm = np.ones(len(lm)) if mc_weights is None else np.asarray(mc_weights, dtype=np.float64)
        fm, fd = np.isfinite(lm), np.isfinite(ld)
        if fm.sum() < 2 or fd.sum() < 2:
            return cls(np.array([-np.inf, np.inf]), np.ones(1), 1.0, max_weight)
        pooled = np.concatenate([lm[fm], ld[fd]])
        lo, hi = np.quantile(pooled, [0.005, 0.995])
        bins = int(np.clip(min(fm.sum(), fd.sum()) // max(min_per_bin, 1), 1, max_bins))
        edges = np.linspace(lo, hi, bins + 1) if hi > lo else np.array([lo - 0.5, lo + 0.5])
        hm = np.bincount(_bin(edges, lm[fm]), weights=wm[fm], minlength=len(edges) - 1) + pseudo_count
        hd = np.bincount(_bin(edges, ld[fd]), minlength=len(edges) - 1) + pseudo_count
        log_ratio = np.log((hd / hd.sum()) / (hm / hm.sum()))
        if len(log_ratio) >= 3:  # 3-bin running mean (edge bins: their 2-bin mean)
            padded = np.concatenate([[log_ratio[0]], log_ratio, [log_ratio[-1]]])
            log_ratio = (padded[:-2] + padded[1:-1] + padded[2:]) / 3.0
        ratio = np.clip(np.exp(log_ratio), 1.0 / max_weight, max_weight)
        out = cls(edges, ratio, 1.0, max_weight)
        w = out.weights(mc_rigidity)
        mean = float(np.sum(w * wm) / max(np.sum(wm), 1e-12))
        out.scale = 1.0 / mean if mean > 0 else 1.0
        return out

    def weights(self, rigidity: np.ndarray) -> np.ndarray:
        """Weight of each row (1 where the rigidity is missing)."""
        lr = log_rigidity(rigidity)
        ok = np.isfinite(lr)
        w = np.ones(len(lr))
        w[ok] = self.ratio[_bin(self.edges, lr[ok])] * self.scale
        return w

    def to_dict(self) -> dict[str, Any]:
        return {"variable": "log10|R|", "edges": [float(v) for v in self.edges],
                "ratio": [float(v) for v in self.ratio], "scale": float(self.scale),
                "max_weight": float(self.max_weight)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RigidityReweighter:
        return cls(np.asarray(d["edges"], dtype=np.float64), np.asarray(d["ratio"], dtype=np.float64),
                   float(d.get("scale", 1.0)), float(d.get("max_weight", 20.0)))


def _bin(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    return np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)


def rigidity_column(ds: Any) -> str:
    """The cache column of the rigidity the reweighting uses: the first rigidity branch
    of the MDA layout (a scalar branch)."""
    branch = ds.manifest["mda"]["rigidity"][0]
    return ds.feature_columns(branch)[0]
