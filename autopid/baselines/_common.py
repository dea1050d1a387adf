"""Small statistics shared by the classic selections: robust widths, peaks and cuts."""

from __future__ import annotations

import numpy as np
import pandas as pd

# ``fit(..., validation=(frame, y))``: the sample a working point is chosen on
Validation = tuple[pd.DataFrame, np.ndarray]


def robust_std(x: np.ndarray) -> float:
    """1.4826 x the median absolute deviation: the Gaussian core's width, blind to tails
    (TOF mismatches, delta rays) that would inflate a plain standard deviation."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(1.4826 * np.median(np.abs(x - np.median(x)))) if x.size else float("nan")


def peak(x: np.ndarray, half_window: float, start: float | None = None, iterations: int = 20) -> float:
    """The position of the main peak: the median of the values within ``half_window``
    of the current estimate, iterated. A neighbouring population (a parent charge one
    unit away) hardly reaches into the window, so it does not pull the estimate as it
    pulls a plain median."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if not x.size:
        return float("nan")
    mu = float(np.median(x)) if start is None else float(start)
    for _ in range(iterations):
        near = x[np.abs(x - mu) < half_window]
        if not near.size:
            break
        new = float(np.median(near))
        if abs(new - mu) < 1e-6 * max(abs(mu), 1.0):
            mu = new
            break
        mu = new
    return mu


def cut_for_efficiency(signal_scores: np.ndarray, efficiency: float) -> float:
    """The highest cut ``t`` with ``mean(signal_scores >= t) >= efficiency``."""
    s = np.sort(np.asarray(signal_scores, dtype=np.float64))[::-1]
    if not s.size:
        return float("nan")
    k = min(max(int(np.ceil(efficiency * s.size - 1e-9)), 1), s.size)
    return float(s[k - 1])


def best_f1_cut(y: np.ndarray, score: np.ndarray, candidates: np.ndarray) -> tuple[float, float]:
    """(cut, F1) of the candidate cut with the best F1 (``score >= cut`` selects)."""
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    best = (float(candidates[0]), -1.0)
    n_sig = y.sum()
    for c in candidates:
        sel = score >= c
        tp = float((sel & y).sum())
        f1 = 2 * tp / (sel.sum() + n_sig) if (sel.sum() + n_sig) else 0.0
        if f1 > best[1]:
            best = (float(c), f1)
    return best


def column(frame: pd.DataFrame, role: str) -> np.ndarray | None:
    """The role's values as float64, or None when the frame does not carry it."""
    return frame[role].to_numpy(np.float64) if role in frame else None
