"""The AMS classic selection (physics.md) and the second-track veto alone.

A nucleus that fragments between L1 and L2 shows its parent charge in L1, debris
(extra clusters, a second track) in L2-L4, and an upper-TOF charge that may be either.
The classic selection therefore asks for

* the inner-tracker charge, over its fitted scale, within ``w_in`` of Z (the
  preselection, which a cache with a wide preselection window leaves to this selection),
* the calibrated L1 charge within ``w_L1`` of Z (gains fitted per domain, truth-free:
  ``calibration.py``),
* the upper-TOF charge, over its fitted scale, within ``w_UTOF`` of Z,
* no second track and at most ``k`` extra clusters in L2-L4 (where the roles exist),
  with the Data noise overlaid on the MC extra-cluster counts the veto is set on
  (estimated without truth, :mod:`autopid.calibration.noise`: Data has more noise
  clusters than MC, and a ``k`` chosen on quieter MC vetoes Data signal),

with ``w_in / w_L1``, ``w_UTOF / w_L1``, ``k`` and the veto chosen on MC validation: of the settings whose
cut keeps the target signal efficiency (default 90 %), the one with the least background.
The score, ``-max(|dL1| / w_L1, |din| / w_in, |dUTOF| / w_UTOF, (extra + 0.5) / (k + 1),
2 [second track])``, is continuous and selects at ``>= -1`` (the threshold) exactly the windows and
the veto; a looser or tighter threshold scales every cut together, so ROC and rejection
curves at any efficiency exist (a veto that alone loses more than 10 % of the Data signal
does not make the Data rejection at 90 % meaningless).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from autopid.baselines._common import Validation, column, cut_for_efficiency
from autopid.baselines.calibration import apply_l1_gains, fit_l1_gains
from autopid.calibration.noise import NoiseOverlay, fit_noise_overlay
from autopid.errors import ConfigError

VETO_PENALTY = 1000.0  # below every window score: vetoed events rank after all others
SECOND_TRACK_TERM = 2.0  # a second track passes only with every window doubled
_RATIOS = (np.inf, 3.0, 2.0, 1.5, 1.0, 0.75, 0.5)  # w_UTOF / w_L1, loosest first
# w_in / w_L1: the inner window is the preselection, kept at 4 sigma or more of the inner
# charge (about 0.1 at Z = 15): tighter, the efficiency would hang on a resolution MC and
# Data do not share, for a hair of rejection
_INNER_RATIOS = (np.inf, 1.0, 0.75)
_EXTRA = (np.inf, 8, 6, 4, 3, 2, 1, 0)  # extra clusters allowed, loosest first


_KEY_ROLES = ("l1_charge", "inner_charge", "rigidity")  # raw values that seed a row's overlay


def fit_extra_overlay(mc: pd.DataFrame, data: pd.DataFrame | None) -> NoiseOverlay | None:
    """The Data noise to add to the MC ``extra_clusters`` counts, estimated on rows with
    no second track of both domains (no truth), or None without Data or the role."""
    if data is None or not len(data) or not len(mc) or "extra_clusters" not in mc or "extra_clusters" not in data:
        return None
    keys = [r for r in _KEY_ROLES if r in mc and r in data]
    if not keys or "second_tracks" not in mc or "second_tracks" not in data:
        return None  # without the second-track count, fragments would read as noise
    second = ["second_tracks"]

    def cols(f: pd.DataFrame) -> dict[str, np.ndarray]:
        return {c: f[c].to_numpy(np.float64) for c in ["extra_clusters", *second, *keys]}

    return fit_noise_overlay(cols(mc), cols(data), {"extra_clusters": (None, None)}, second, keys)


def with_overlay(frame: pd.DataFrame, overlay: NoiseOverlay | None, domain: str) -> pd.DataFrame:
    """``frame`` with the overlay's noise added to its ``extra_clusters`` if it is MC."""
    if domain not in ("mc", "data"):
        raise ValueError(f"domain must be 'mc' or 'data', got {domain!r}")
    if overlay is None or domain != "mc" or "extra_clusters" not in frame or not len(frame):
        return frame
    missing = [c for c in overlay.key_columns if c not in frame]
    if missing:
        raise ConfigError(f"the MC frame lacks the role(s) {', '.join(missing)} that seed its noise overlay "
                          "(fitted with them)")
    cols = {c: frame[c].to_numpy(np.float64) for c in [*overlay.key_columns, "extra_clusters"]}
    out = overlay.apply(cols, slice(None))
    return frame.assign(extra_clusters=out["extra_clusters"]) if "extra_clusters" in out else frame


def _veto_fails(frame: pd.DataFrame, second_veto: bool, max_extra: float) -> np.ndarray:
    """Where the second-track / extra-cluster veto rejects (a missing count does not)."""
    fails = np.zeros(len(frame), dtype=bool)
    second = column(frame, "second_tracks")
    if second_veto and second is not None:
        fails |= np.nan_to_num(second, nan=0.0) > 0
    extra = column(frame, "extra_clusters")
    if np.isfinite(max_extra) and extra is not None:
        fails |= np.nan_to_num(extra, nan=0.0) > max_extra
    return fails


class ClassicAmsSelection:
    """Calibrated L1 charge + UTOF charge windows + second-track/extra-cluster veto.

    Args:
        z: the signal charge (15 for phosphorus).
        target_efficiency: signal efficiency on MC validation the windows are set for
            (default: ``0.9``).
        min_tagged: tagged events a ladder needs for its own gain (default: ``25``).

    After ``fit``: ``calibration[domain]`` (``fit_l1_gains`` output) and ``windows`` (the
    chosen ``l1_half_width``, ``inner_half_width``, ``utof_half_width``, ``second_track_veto``,
    ``extra_clusters_max`` and the validation efficiencies); ``threshold`` is ``-1``.
    """

    required_roles = ("l1_charge", "inner_charge")
    optional_roles = ("utof_charge", "l1_ladder", "second_tracks", "extra_clusters")

    def __init__(self, z: int, target_efficiency: float = 0.9, min_tagged: int = 25) -> None:
        self.z = int(z)
        self.min_tagged = min_tagged
        self.target_efficiency = target_efficiency
        self.calibration: dict[str, dict[str, Any]] = {}
        self.ratio = np.inf
        self.inner_ratio = np.inf
        self.second_veto = False
        self.max_extra: float = np.inf
        self.windows: dict[str, Any] = {}
        self.threshold = -1.0
        self.overlay: NoiseOverlay | None = None

    def calibrate(self, domain: str, frame: pd.DataFrame) -> ClassicAmsSelection:
        """Fit the L1 gains and UTOF scale of ``domain`` on ``frame`` (no truth read)."""
        self.calibration[domain] = fit_l1_gains(frame, z=self.z, min_tagged=self.min_tagged)
        return self

    def fit(self, frame: pd.DataFrame, y: np.ndarray, *, validation: Validation | None = None,
            data: pd.DataFrame | None = None) -> ClassicAmsSelection:
        """Calibrate MC on ``frame`` (and Data on ``data`` when given, truth-free), then
        choose the windows on ``validation`` (MC; ``frame`` itself when None)."""
        self.calibrate("mc", frame)
        if data is not None and len(data):
            self.calibrate("data", data)
        self.overlay = fit_extra_overlay(frame, data)
        vf, vy = validation if validation is not None else (frame, y)
        vf = with_overlay(vf, self.overlay, "mc")
        vy = np.asarray(vy).astype(bool)
        dl1, dut, din = self._deviations(vf, "mc")
        best: tuple[float, dict[str, Any]] | None = None
        for second_veto in (False, True):
            for max_extra in _EXTRA:
                fails = _veto_fails(vf, second_veto, max_extra)
                for r_in in _INNER_RATIOS:
                    for ratio in _RATIOS:
                        s = self._combine(dl1, dut, din, fails, ratio, r_in)
                        cut = cut_for_efficiency(s[vy], self.target_efficiency)
                        if not np.isfinite(cut) or cut <= -VETO_PENALTY / 2:
                            continue  # the veto alone loses more signal than allowed
                        eps_b = float((s[~vy] >= cut).mean()) if (~vy).any() else 0.0
                        if best is None or eps_b < best[0] - 1e-12:
                            best = (eps_b, {"ratio": ratio, "inner_ratio": r_in, "second_veto": second_veto,
                                            "max_extra": max_extra, "cut": cut,
                                            "eff": float((s[vy] >= cut).mean())})
        if best is None:
            raise ValueError(f"no window keeps {self.target_efficiency:.0%} of the Z={self.z} signal "
                             "on validation")
        eps_b, b = best
        self.ratio, self.inner_ratio = b["ratio"], b["inner_ratio"]
        self.second_veto, self.max_extra = b["second_veto"], b["max_extra"]
        w1 = -float(b["cut"])
        self.windows = {
            "l1_half_width": w1,
            "inner_half_width": w1 * self.inner_ratio if np.isfinite(self.inner_ratio) else None,
            "utof_half_width": w1 * self.ratio if np.isfinite(self.ratio) and "utof_charge" in vf else None,
            "second_track_veto": bool(self.second_veto and "second_tracks" in vf),
            "extra_clusters_max": int(self.max_extra) if np.isfinite(self.max_extra) else None,
            "efficiency_validation": b["eff"], "background_efficiency_validation": eps_b,
            "mc_extra_clusters_noise_added": self.overlay.extra["extra_clusters"] if self.overlay else 0.0,
        }
        return self

    def _deviations(self, frame: pd.DataFrame, domain: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """|dL1|, |dUTOF|, |d inner| from Z with ``domain``'s calibration; a missing
        measurement is infinitely far (fails its window)."""
        if domain not in self.calibration:
            raise ConfigError(f"classic AMS selection: no {domain} calibration; call calibrate({domain!r}, "
                              f"frame) first (calibrated: {', '.join(self.calibration) or 'none'})")
        cal = self.calibration[domain]
        dl1 = np.abs(apply_l1_gains(frame, cal) - self.z)
        utof = column(frame, "utof_charge")
        dut = np.zeros(len(frame)) if utof is None else np.abs(utof / cal["utof_scale"] - self.z)
        din = np.abs(frame["inner_charge"].to_numpy(np.float64) / cal["inner_scale"] - self.z)
        return tuple(np.nan_to_num(d, nan=np.inf) for d in (dl1, dut, din))  # type: ignore[return-value]

    @staticmethod
    def _combine(dl1: np.ndarray, dut: np.ndarray, din: np.ndarray, fails: np.ndarray, ratio: float,
                 inner_ratio: float) -> np.ndarray:
        """The ranking used to choose the windows: vetoed events after all others."""
        dev = dl1 if not np.isfinite(ratio) else np.maximum(dl1, dut / ratio)
        if np.isfinite(inner_ratio):
            dev = np.maximum(dev, din / inner_ratio)
        return -dev - VETO_PENALTY * fails

    def predict(self, frame: pd.DataFrame, domain: str = "mc") -> np.ndarray:
        """The score with ``domain``'s calibration (``"data"`` for Data frames; MC frames
        get the Data noise overlay on their extra-cluster counts)."""
        frame = with_overlay(frame, self.overlay, domain)
        dl1, dut, din = self._deviations(frame, domain)
        w1 = self.windows.get("l1_half_width", 0.5)
        terms = [dl1 / w1]
        if np.isfinite(self.ratio):
            terms.append(dut / (w1 * self.ratio))
        if np.isfinite(self.inner_ratio):
            terms.append(din / (w1 * self.inner_ratio))
        extra = column(frame, "extra_clusters")
        if np.isfinite(self.max_extra) and extra is not None:
            terms.append((np.nan_to_num(extra, nan=0.0) + 0.5) / (self.max_extra + 1.0))
        second = column(frame, "second_tracks")
        if self.second_veto and second is not None:
            terms.append(SECOND_TRACK_TERM * (np.nan_to_num(second, nan=0.0) > 0))
        return -np.max(np.stack(terms), axis=0)


class SecondTrackVeto:
    """The veto alone: no second track and at most ``k`` extra clusters in L2-L4, ``k``
    the tightest that keeps the target signal efficiency on MC validation (the second-track
    requirement is dropped if it alone loses more). Score ``-(1000 [second track] + extra)``.
    """

    required_roles = ("second_tracks", "extra_clusters")
    optional_roles: tuple[str, ...] = ()

    def __init__(self, target_efficiency: float = 0.9) -> None:
        self.target_efficiency = target_efficiency
        self.threshold = -0.5
        self.windows: dict[str, Any] = {}
        self.overlay: NoiseOverlay | None = None

    def predict(self, frame: pd.DataFrame, domain: str = "mc") -> np.ndarray:
        """The score (MC frames with the Data noise overlay, as :class:`ClassicAmsSelection`)."""
        frame = with_overlay(frame, self.overlay, domain)
        second = np.nan_to_num(frame["second_tracks"].to_numpy(np.float64), nan=0.0) > 0
        extra = np.nan_to_num(frame["extra_clusters"].to_numpy(np.float64), nan=0.0)
        return -(VETO_PENALTY * second + extra)

    def fit(self, frame: pd.DataFrame, y: np.ndarray, *, validation: Validation | None = None,
            data: pd.DataFrame | None = None) -> SecondTrackVeto:
        self.overlay = fit_extra_overlay(frame, data)
        vf, vy = validation if validation is not None else (frame, y)
        vy = np.asarray(vy).astype(bool)
        s = self.predict(vf, "mc")
        cut = cut_for_efficiency(s[vy], self.target_efficiency)
        self.threshold = cut - 0.5  # between integer scores
        vetoed = cut > -VETO_PENALTY / 2
        self.windows = {"second_track_veto": bool(vetoed),
                        "extra_clusters_max": round(-cut if vetoed else -cut - VETO_PENALTY),
                        "efficiency_validation": float((s[vy] >= self.threshold).mean())}
        return self
