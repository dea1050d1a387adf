"""Truth-free calibration of the AMS-like L1 and upper-TOF charges, per domain.

Data ladders have gains a few per cent off (2.5 % rms per ladder and side by default):
uncorrected they widen the Data L1 charge peak well beyond MC's, and a window chosen on MC
then loses Data signal. A physicist calibrates on the data at hand, without truth:

1. the inner-tracker charge scale is the peak of the inner charge nearest Z, over Z;
   tag events whose calibrated inner charge is compatible with Z;
2. the upper-TOF scale is the peak of the UTOF charge in that sample over Z;
3. tighten the tag with a UTOF charge compatible with Z; in that sample most events keep
   their charge through L1 (a parent that fragments after L1 is a minority one unit
   away), so per ladder the L1 gain is the L1 charge peak over Z;
4. a ladder with too few tagged events takes the gain of all ladders together.

The same recipe runs on MC (its own fit), so MC and Data calibrated charges both peak at Z.
Roles read: ``l1_charge``, ``inner_charge``, optional ``utof_charge`` and ``l1_ladder``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from autopid.baselines._common import column, peak, robust_std


def _half_window(z: int) -> float:
    # the layer charge width grows with Z (sigma ~ sqrt(0.15^2 + (0.015 Z)^2), L1 x1.2):
    # about 1.5 sigma at Z = 15
    return 0.5 * max(1.0, z / 15.0)


def _ladders(frame: pd.DataFrame) -> np.ndarray | None:
    lad = column(frame, "l1_ladder")
    if lad is None:
        return None
    return np.where(np.isfinite(lad) & (lad >= 0), np.nan_to_num(lad, nan=-1.0), -1.0).astype(np.int64)


def inner_scale(frame: pd.DataFrame, z: int) -> float:
    """The inner-tracker charge scale: the peak nearest Z over Z. The inner charge is a
    truncated mean of many layers (a width of about 0.1 at Z = 15), so neighbouring
    charges are well apart and a narrow window finds the peak."""
    value = peak(frame["inner_charge"].to_numpy(np.float64), 0.3 * max(1.0, z / 15.0), start=float(z)) / z
    return value if np.isfinite(value) else 1.0


def utof_scale(frame: pd.DataFrame, z: int, inner_window: float = 0.5, inner: float = 1.0) -> float:
    """The upper-TOF charge scale: its peak over Z for events with the inner charge
    (over its scale ``inner``) near Z."""
    utof = column(frame, "utof_charge")
    if utof is None:
        return 1.0
    tag = np.abs(frame["inner_charge"].to_numpy(np.float64) / inner - z) < inner_window
    value = peak(utof[tag], 2 * _half_window(z), start=float(z)) / z
    return value if np.isfinite(value) else 1.0


def fit_l1_gains(frame: pd.DataFrame, *, z: int, inner_window: float = 0.5, utof_window: float = 0.7,
                 min_tagged: int = 25) -> dict[str, Any]:
    """Per-ladder L1 gains fitted without truth (see the module docstring).

    Args:
        frame: role-named rows of one domain (``l1_charge``, ``inner_charge``, optional
            ``utof_charge``, ``l1_ladder``).
        z: the charge of the tag (15 for the phosphorus selection).
        inner_window, utof_window: tag half-widths around Z (charge units).
        min_tagged: fewer tagged events on a ladder: it takes the global gain (25: the
            peak then has a statistical error of about 0.6 %, a quarter of the 2.5 % spread).

    Returns:
        ``{"z", "inner_scale", "utof_scale", "global_gain", "gains": {ladder: gain},
        "tagged": {ladder: n}, "n_tagged", "width_before", "width_after"}``; widths are the
        robust rms of the L1 charge of the tagged sample, before and after the calibration.
    """
    l1 = frame["l1_charge"].to_numpy(np.float64)
    s_inner = inner_scale(frame, z)
    s_utof = utof_scale(frame, z, inner_window, s_inner)
    tag = (np.abs(frame["inner_charge"].to_numpy(np.float64) / s_inner - z) < inner_window) & np.isfinite(l1)
    utof = column(frame, "utof_charge")
    if utof is not None:
        tag &= np.abs(utof / s_utof - z) < utof_window
    hw = _half_window(z)
    global_peak = peak(l1[tag], hw, start=float(z))
    global_gain = global_peak / z if np.isfinite(global_peak) else 1.0
    gains: dict[int, float] = {}
    tagged: dict[int, int] = {}
    ladders = _ladders(frame)
    if ladders is not None:
        for lad in np.unique(ladders[tag & (ladders >= 0)]):
            here = tag & (ladders == lad)
            tagged[int(lad)] = int(here.sum())
            if here.sum() >= min_tagged:
                gains[int(lad)] = peak(l1[here], hw, start=global_peak) / z
    out: dict[str, Any] = {"z": int(z), "inner_scale": float(s_inner), "utof_scale": float(s_utof),
                           "global_gain": float(global_gain), "gains": gains, "tagged": tagged,
                           "n_tagged": int(tag.sum())}
    out["width_before"] = robust_std(l1[tag])
    out["width_after"] = robust_std(apply_l1_gains(frame, out)[tag])
    return out


def apply_l1_gains(frame: pd.DataFrame, gains: dict[str, Any]) -> np.ndarray:
    """The calibrated L1 charge: L1 charge over its ladder's gain (the global gain for a
    ladder without enough tagged events, a missing ladder or no ``l1_ladder`` role)."""
    l1 = frame["l1_charge"].to_numpy(np.float64)
    per_row = np.full(l1.shape, float(gains["global_gain"]))
    ladders = _ladders(frame)
    if ladders is not None:
        for lad, g in gains["gains"].items():
            per_row[ladders == int(lad)] = g
    return l1 / per_row
