"""The standard selections: ALICE n-sigma PID and the AMS L1-charge cut."""

from __future__ import annotations

import numpy as np
import pandas as pd

from autopid.physics.alice import SPECIES, beta_from_p, expected_tpc_signal


def _robust_std(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(1.4826 * np.median(np.abs(x - np.median(x)))) if x.size else float("nan")


class NSigmaSelection:
    """ALICE's n-sigma PID for one species.

    ``n_TPC = (dE/dx - E) / sigma_TPC`` with ``E`` the ALEPH Bethe-Bloch expectation for
    the species' mass; ``n_TOF = (beta - beta_exp) / sigma_beta`` with
    ``sigma_beta = k beta^2`` (time resolution over flight time). Selected: ``|n_TPC| < 3``
    below pT 0.5 GeV/c (or without TOF), ``sqrt(n_TPC^2 + n_TOF^2) < 3`` above. The score
    is ``-n`` so that higher means more signal-like. ``fit`` calibrates the TPC scale and
    resolution and ``k`` on the signal tracks of a sample, as a physicist calibrates the
    response before using it.

    Args:
        species: pion, kaon, proton, electron or muon.
        n_sigma: the cut (default: ``3``).
        pt_tof: TOF is combined above this pT (default: ``0.5`` GeV/c).
    """

    def __init__(self, species: str, n_sigma: float = 3.0, pt_tof: float = 0.5) -> None:
        if species not in SPECIES:
            raise ValueError(f"n-sigma needs a mass hypothesis; unknown species {species!r}")
        self.mass = SPECIES[species][1]
        self.n_sigma = n_sigma
        self.pt_tof = pt_tof
        self.tpc_scale = 1.0
        self.tpc_resolution = 0.052
        self.tof_k = 0.01

    @property
    def threshold(self) -> float:
        return -self.n_sigma

    def fit(self, frame: pd.DataFrame, y: np.ndarray) -> NSigmaSelection:
        sig = np.asarray(y).astype(bool)
        p = frame["fP"].to_numpy(np.float64)[sig]
        ratio = frame["fTPCSignal"].to_numpy(np.float64)[sig] / expected_tpc_signal(p, self.mass)
        self.tpc_scale = float(np.nanmedian(ratio))
        self.tpc_resolution = _robust_std(ratio / self.tpc_scale)
        beta_exp = beta_from_p(p, self.mass)
        pull = (frame["fBeta"].to_numpy(np.float64)[sig] - beta_exp) / beta_exp**2
        self.tof_k = _robust_std(pull)
        return self

    def n_sigmas(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        p = frame["fP"].to_numpy(np.float64)
        expected = self.tpc_scale * expected_tpc_signal(p, self.mass)
        n_tpc = (frame["fTPCSignal"].to_numpy(np.float64) - expected) / (self.tpc_resolution * expected)
        beta_exp = beta_from_p(p, self.mass)
        n_tof = (frame["fBeta"].to_numpy(np.float64) - beta_exp) / (self.tof_k * beta_exp**2)
        return n_tpc, n_tof

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        n_tpc, n_tof = self.n_sigmas(frame)
        combined = np.sqrt(n_tpc**2 + n_tof**2)
        use_tof = (frame["fPt"].to_numpy() >= self.pt_tof) & np.isfinite(n_tof)
        return -np.where(use_tof, combined, np.abs(n_tpc))


class L1ChargeCut:
    """AMS standard selection: the L1 charge in a window around the species' charge.

    Score ``-|Q_L1 - Z|``; selected when ``|Q_L1 - Z| < half_width``. A missing L1 hit
    is never selected.

    Args:
        z: the species' charge (``15`` for phosphorus).
        half_width: (default: ``0.5``).
        column: the L1 charge column (default: ``"trk_charge_l1"``).
    """

    def __init__(self, z: int, half_width: float = 0.5, column: str = "trk_charge_l1") -> None:
        self.z = z
        self.half_width = half_width
        self.column = column

    @property
    def threshold(self) -> float:
        return -self.half_width

    def fit(self, frame: pd.DataFrame, y: np.ndarray) -> L1ChargeCut:
        return self  # a fixed cut: nothing to learn

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        q = frame[self.column].to_numpy(np.float64)
        return np.where(np.isfinite(q), -np.abs(q - self.z), -np.inf)
