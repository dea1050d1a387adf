"""ALICE's n-sigma PID, calibrated on the MC at hand rather than on fixed parameters.

A fixed ALEPH parametrisation, one TPC resolution for all tracks and a constant TOF term
fail on any sample whose response differs from them (another generator, another
calibration): the n-sigma then measures the mismatch, not the particle. Here, on the
signal tracks of the species (MC truth):

* TPC: the five ALEPH parameters (the MIP scale folded into P1) are fitted by least
  squares to the binned medians of dE/dx against beta*gamma = p/m; the relative
  resolution is ``s0 (159 / ncl)^a`` with ``a = 1/2`` (a mean of ncl samples; ``a`` is
  fitted to the widths in cluster bins when asked, which needs thousands of tracks) and
  ``s0`` the robust width of the scaled residuals (one width, ``a = 0``, without a
  ``tpc_clusters`` role);
* TOF: the expected time ``t = L / (beta_exp c)`` from the track length and the time
  unit fitted as one scale (so lengths and times may come in any units); without
  ``tof_time``/``track_length`` the same is done with ``1 / beta``. The resolution is
  ``sqrt(s_t^2 + (k t_exp m^2 / E^2)^2)``: a constant time resolution and the momentum
  resolution's share, both fitted to the robust widths in momentum bins;
* combined as ALICE does: ``|n_TPC|`` below pT 0.5 GeV/c or without TOF, else
  ``sqrt(n_TPC^2 + n_TOF^2)``; the score is ``-n``;
* the cut ``n < n_cut`` is chosen on validation (MC) for the best F1 (a grid 0.5-5 in
  steps of 0.1), else the standard ``n_cut = 3``;
* Data is recalibrated without truth (``calibrate("data", frame)``): the position and
  width of the pion peak of dE/dx near minimum ionisation (0.4 < p < 0.6 GeV/c, where
  pions are most tracks) and the width of the pion TOF peak (0.6 < p < 1.2 GeV/c), each
  relative to MC's, scale the expected dE/dx, the TPC and the TOF resolutions of Data.
  Pions dominate every hadron sample at colliders; no label is read.

Roles read: ``momentum``, ``tpc_signal``; optional ``pt``, ``tpc_clusters``, ``tof_time``
with ``track_length``, ``tof_beta``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from autopid.baselines._common import Validation, best_f1_cut, column, peak, robust_std
from autopid.physics.alice import ALEPH_DEFAULT, MIP_DEFAULT, SPECIES, TPC_NCL_REF

C_CM_PER_PS = 2.99792458e-2
_MASS_BY_PDG = {code: mass for code, mass in SPECIES.values()}
_N_CUTS = np.round(np.arange(0.5, 5.0001, 0.1), 2)
_PION_MASS = SPECIES["pion"][1]
_UNIT_CALIBRATION = {"tpc_scale": 1.0, "tpc_width": 1.0, "tof_width": 1.0}


def mass_of(species: str, codes: list[int] | None = None) -> float:
    """The mass hypothesis of a species: by name, else by its (PDG) truth codes."""
    if species in SPECIES:
        return SPECIES[species][1]
    for code in codes or []:
        if abs(int(code)) in _MASS_BY_PDG:
            return _MASS_BY_PDG[abs(int(code))]
    raise ValueError(f"n-sigma needs a mass hypothesis; species {species!r} (truth codes {codes}) "
                     f"is none of {', '.join(SPECIES)} nor a known PDG code")


def aleph(bg: np.ndarray, p1: float, p2: float, log10_p3: float, p4: float, p5: float) -> np.ndarray:
    """ALEPH f(bg) = P1/b^P4 (P2 - b^P4 - ln(P3 + bg^-P5)), P3 given as log10 (it spans
    tens of decades)."""
    bg = np.asarray(bg, dtype=np.float64)
    beta = bg / np.sqrt(1.0 + bg * bg)
    bp = beta**p4
    return p1 / bp * (p2 - bp - np.log(10.0**log10_p3 + bg ** (-p5)))


def _bins(x: np.ndarray, n_bins: int) -> tuple[np.ndarray, int]:
    """Quantile-bin index of every x, and the number of bins."""
    edges = np.unique(np.quantile(x, np.linspace(0, 1, n_bins + 1)))
    return np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2), len(edges) - 1


def _binned(x: np.ndarray, v: np.ndarray, n_bins: int, min_count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(median x, median v, error of the median) in quantile bins of x."""
    idx, nb = _bins(x, n_bins)
    out = [(np.median(x[idx == b]), np.median(v[idx == b]),
            1.2533 * max(robust_std(v[idx == b]), 1e-12) / np.sqrt((idx == b).sum()))
           for b in range(nb) if (idx == b).sum() >= min_count]
    return tuple(np.asarray(c, dtype=np.float64) for c in zip(*out)) if out else (np.zeros(0),) * 3  # type: ignore[return-value]


def _widths(x: np.ndarray, v: np.ndarray, n_bins: int, min_count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(median x, robust width of v, count) in quantile bins of x."""
    idx, nb = _bins(x, n_bins)
    out = [(np.median(x[idx == b]), robust_std(v[idx == b]), float((idx == b).sum()))
           for b in range(nb) if (idx == b).sum() >= min_count]
    return tuple(np.asarray(c, dtype=np.float64) for c in zip(*out)) if out else (np.zeros(0),) * 3  # type: ignore[return-value]


_DEFAULT_Q = (ALEPH_DEFAULT[0], ALEPH_DEFAULT[1], float(np.log10(ALEPH_DEFAULT[2])), ALEPH_DEFAULT[3],
              ALEPH_DEFAULT[4])


def fit_aleph(p: np.ndarray, signal: np.ndarray, mass: float) -> np.ndarray:
    """The five ALEPH parameters (P1 carrying the MIP scale, log10 P3) fitted to the
    binned medians of the dE/dx of one species. A weak pull towards the O2Physics
    defaults keeps directions the data cannot fix (a narrow beta*gamma range) in place."""
    bg = p / mass
    default = np.array(_DEFAULT_Q)
    scale = float(np.median(signal / aleph(bg, *default)))
    start = default.copy()
    start[0] *= scale
    xb, vb, eb = _binned(np.log(bg), signal, n_bins=min(30, max(len(bg) // 60, 4)), min_count=15)
    if len(xb) < 6:  # too few tracks for a shape: the default shape, the fitted scale
        return start
    bgb = np.exp(xb)
    prior_width = np.array([10.0, 8.0, 1.5, 3.0])  # P2, log10 P3, P4, P5; P1 (the scale) is free
    weight = np.sqrt(len(xb)) * 0.1  # the prior counts as a fraction of one bin

    def residuals(q: np.ndarray) -> np.ndarray:
        data = np.nan_to_num((vb - aleph(bgb, *q)) / eb, nan=1e6, posinf=1e6, neginf=-1e6)
        return np.concatenate([data, weight * (q[1:] - start[1:]) / prior_width])

    lower = [start[0] * 1e-3, 1.0, -40.0, 0.3, 0.5]
    upper = [start[0] * 1e3, 200.0, 2.0, 6.0, 15.0]
    res = least_squares(residuals, start, bounds=(lower, upper), loss="soft_l1", f_scale=3.0, max_nfev=4000)
    return np.asarray(res.x)


class NSigmaSelection:
    """ALICE's n-sigma PID for one species, with every response fitted on MC (see the
    module docstring).

    Args:
        species: pion, kaon, proton, electron, muon, or any name when ``mass`` is given.
        mass: the mass hypothesis in GeV/c^2 (default: from ``species``).
        pt_tof: TOF is combined above this pT (default: ``0.5`` GeV/c).
        n_sigma: the cut when ``fit`` gets no validation sample (default: ``3``).
        ncl_power: ``a`` of the resolution ``s0 (159 / ncl)^a``; None fits it
            (default: ``0.5``).

    After ``fit``: ``aleph_params`` (P1..P5), ``tpc_sigma0`` and ``tpc_ncl_power``,
    ``tof_mode`` (``"time"``, ``"beta"`` or None), ``tof_unit``, ``tof_sigma`` and
    ``tof_momentum_term``, ``n_sigma`` and ``threshold = -n_sigma``; ``calibration[domain]``
    (``tpc_scale``, ``tpc_width``, ``tof_width`` relative to MC).
    """

    required_roles = ("momentum", "tpc_signal")
    optional_roles = ("pt", "tpc_clusters", "tof_time", "track_length", "tof_beta")

    def __init__(self, species: str, *, mass: float | None = None, pt_tof: float = 0.5,
                 n_sigma: float = 3.0, ncl_power: float | None = 0.5) -> None:
        self.species = species
        self.mass = float(mass) if mass is not None else mass_of(species)
        self.pt_tof = pt_tof
        self.n_sigma = n_sigma
        p = np.array(ALEPH_DEFAULT, dtype=np.float64)
        self.aleph_params = np.array([p[0] * MIP_DEFAULT, p[1], np.log10(p[2]), p[3], p[4]])
        self.tpc_sigma0 = 0.052
        self.ncl_power = ncl_power
        self.tpc_ncl_power = 0.5 if ncl_power is None else ncl_power
        self.tof_mode: str | None = None
        self.tof_unit = 1.0
        self.tof_sigma = float("nan")
        self.tof_momentum_term = 0.0
        self.f1_validation = float("nan")
        self.reference: dict[str, float] = {}  # MC pion peaks, for the Data recalibration
        self.calibration: dict[str, dict[str, float]] = {"mc": dict(_UNIT_CALIBRATION)}

    @property
    def threshold(self) -> float:
        return -self.n_sigma

    @property
    def params(self) -> dict[str, Any]:
        """The fitted response, for reports."""
        p1, p2, lp3, p4, p5 = self.aleph_params
        return {"aleph": [float(p1), float(p2), float(10.0**lp3), float(p4), float(p5)],
                "tpc_sigma0": self.tpc_sigma0, "tpc_ncl_power": self.tpc_ncl_power, "tof_mode": self.tof_mode,
                "tof_unit": self.tof_unit, "tof_sigma": self.tof_sigma, "tof_momentum_term": self.tof_momentum_term,
                "n_sigma": self.n_sigma, "f1_validation": self.f1_validation,
                "data_calibration": self.calibration.get("data")}

    # ------------------------------------------------------------------ responses

    def expected_tpc(self, p: np.ndarray) -> np.ndarray:
        return aleph(np.asarray(p, dtype=np.float64) / self.mass, *self.aleph_params)

    def tpc_resolution(self, frame: pd.DataFrame) -> np.ndarray:
        ncl = column(frame, "tpc_clusters")
        if ncl is None or self.tpc_ncl_power == 0.0:
            return np.full(len(frame), self.tpc_sigma0)
        ncl = np.where(np.isfinite(ncl) & (ncl > 0), ncl, TPC_NCL_REF)
        return self.tpc_sigma0 * (TPC_NCL_REF / ncl) ** self.tpc_ncl_power

    def _tof_mode(self, frame: pd.DataFrame) -> str | None:
        if "tof_time" in frame and "track_length" in frame:
            return "time"
        return "beta" if "tof_beta" in frame else None

    def _tof_delta(self, frame: pd.DataFrame, p: np.ndarray, mass: float | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """(measured - expected, expected) in the TOF observable (time, or 1/beta), for
        ``mass`` (default: the species')."""
        m = self.mass if mass is None else mass
        beta_exp = p / np.sqrt(p * p + m * m)
        if self.tof_mode == "time":
            expected = self.tof_unit * frame["track_length"].to_numpy(np.float64) / (beta_exp * C_CM_PER_PS)
            return frame["tof_time"].to_numpy(np.float64) - expected, expected
        expected = 1.0 / beta_exp
        return 1.0 / frame["tof_beta"].to_numpy(np.float64) - expected, expected

    def _tof_sigma(self, p: np.ndarray, expected: np.ndarray) -> np.ndarray:
        mom = self.tof_momentum_term * expected * self.mass**2 / (p * p + self.mass**2)
        return np.sqrt(self.tof_sigma**2 + mom**2)

    # ------------------------------------------------------------------ fit

    def _fit_tpc(self, frame: pd.DataFrame, sig: np.ndarray) -> None:
        p = frame["momentum"].to_numpy(np.float64)
        s = frame["tpc_signal"].to_numpy(np.float64)
        ok = sig & np.isfinite(p) & np.isfinite(s) & (p > 0) & (s > 0)
        self.aleph_params = fit_aleph(p[ok], s[ok], self.mass)
        rel = s[ok] / self.expected_tpc(p[ok]) - 1.0
        ncl = column(frame, "tpc_clusters")
        self.tpc_sigma0, self.tpc_ncl_power = robust_std(rel), 0.0
        if ncl is None:
            return
        n = np.where(np.isfinite(ncl[ok]) & (ncl[ok] > 0), ncl[ok], TPC_NCL_REF)
        x = np.log(TPC_NCL_REF / n)
        if self.ncl_power is not None:
            self.tpc_ncl_power = self.ncl_power
        else:
            xs, ws, ns = _widths(x, rel, n_bins=8, min_count=30)
            if len(xs) < 3 or np.ptp(xs) < 0.05:
                return  # clusters too alike to see the dependence: one width
            # log(width) = log(s0) + a log(159 / ncl)
            self.tpc_ncl_power = float(np.clip(np.polyfit(xs, np.log(ws), 1, w=np.sqrt(ns))[0], 0.0, 1.5))
        self.tpc_sigma0 = robust_std(rel / np.exp(self.tpc_ncl_power * x))

    def _fit_tof(self, frame: pd.DataFrame, sig: np.ndarray) -> None:
        self.tof_mode = self._tof_mode(frame)
        if self.tof_mode is None:
            return
        p = frame["momentum"].to_numpy(np.float64)
        self.tof_unit = 1.0
        delta, expected = self._tof_delta(frame, p)
        ok = sig & np.isfinite(delta) & np.isfinite(expected) & (p > 0)
        if ok.sum() < 50:
            self.tof_mode = None
            return
        if self.tof_mode == "time":  # the time unit (and a length calibration) in one scale
            measured = delta[ok] + expected[ok]
            self.tof_unit = float(np.median(measured / expected[ok]))
            delta, expected = self._tof_delta(frame, p)
        pb_a, wb_a, _ = _widths(p[ok], delta[ok], n_bins=int(np.clip(ok.sum() // 50, 1, 10)), min_count=20)
        if len(pb_a) < 3:  # too few tracks for a momentum dependence: one width
            self.tof_sigma, self.tof_momentum_term = robust_std(delta[ok]), 0.0
            return
        order = np.argsort(p[ok])
        exp_b = np.interp(pb_a, p[ok][order], expected[ok][order])
        lever = exp_b * self.mass**2 / (pb_a**2 + self.mass**2)

        def resid(q: np.ndarray) -> np.ndarray:
            return np.sqrt(q[0] ** 2 + (q[1] * lever) ** 2) / wb_a - 1.0

        start = np.array([float(np.min(wb_a)), 0.01])
        res = least_squares(resid, start, bounds=([0.0, 0.0], [np.inf, 0.2]))
        self.tof_sigma, self.tof_momentum_term = float(res.x[0]), float(res.x[1])

    def fit(self, frame: pd.DataFrame, y: np.ndarray, *, validation: Validation | None = None,
            data: pd.DataFrame | None = None) -> NSigmaSelection:
        """Fit the responses on the signal rows of ``frame``; choose the cut on ``validation``;
        recalibrate Data on ``data`` (no truth read) when given."""
        sig = np.asarray(y).astype(bool)
        self._fit_tpc(frame, sig)
        self._fit_tof(frame, sig)
        self.reference = self._pion_peaks(frame)
        if validation is not None:
            vf, vy = validation
            n = np.nan_to_num(self.n_combined(vf), nan=np.inf)
            cut, f1 = best_f1_cut(vy, -n, -_N_CUTS)
            self.n_sigma, self.f1_validation = float(-cut), f1
        if data is not None and len(data):
            self.calibrate("data", data)
        return self

    # ------------------------------------------------------------------ Data recalibration

    def _pion_peaks(self, frame: pd.DataFrame) -> dict[str, float]:
        """Position and width of the pion dE/dx peak near minimum ionisation (relative to
        the default ALEPH shape) and the width of the pion TOF peak: every track, no truth."""
        p = frame["momentum"].to_numpy(np.float64)
        out: dict[str, float] = {}
        mip = (p > 0.4) & (p < 0.6)
        if mip.sum() >= 50:
            x = frame["tpc_signal"].to_numpy(np.float64)[mip] / aleph(p[mip] / _PION_MASS, *_DEFAULT_Q)
            centre = peak(x, 0.1 * np.nanmedian(x))
            out["tpc_peak"] = centre
            out["tpc_width"] = robust_std(x[np.abs(x - centre) < 0.25 * centre])
        if self.tof_mode is not None and self._tof_mode(frame) == self.tof_mode:
            delta = self._tof_delta(frame, p, _PION_MASS)[0][(p > 0.6) & (p < 1.2)]
            delta = delta[np.isfinite(delta)]
            if delta.size >= 50:
                w = robust_std(delta)
                out["tof_width"] = robust_std(delta[np.abs(delta - peak(delta, 2 * w)) < 4 * w])
        return out

    def calibrate(self, domain: str, frame: pd.DataFrame) -> NSigmaSelection:
        """The responses of ``domain`` relative to MC, from its pion peaks (no truth)."""
        here, ref = self._pion_peaks(frame), self.reference
        cal = dict(_UNIT_CALIBRATION)
        if "tpc_peak" in here and "tpc_peak" in ref:
            cal["tpc_scale"] = here["tpc_peak"] / ref["tpc_peak"]
            cal["tpc_width"] = (here["tpc_width"] / here["tpc_peak"]) / (ref["tpc_width"] / ref["tpc_peak"])
        if "tof_width" in here and "tof_width" in ref:
            cal["tof_width"] = here["tof_width"] / ref["tof_width"]
        self.calibration[domain] = cal
        return self

    # ------------------------------------------------------------------ predict

    def n_sigmas(self, frame: pd.DataFrame, domain: str = "mc") -> tuple[np.ndarray, np.ndarray]:
        """(n_TPC, n_TOF) with ``domain``'s calibration (MC's when it has none); n_TOF is
        NaN without TOF."""
        cal = self.calibration.get(domain, self.calibration["mc"])
        p = frame["momentum"].to_numpy(np.float64)
        expected = self.expected_tpc(p) * cal["tpc_scale"]
        sigma = self.tpc_resolution(frame) * cal["tpc_width"]
        n_tpc = (frame["tpc_signal"].to_numpy(np.float64) / expected - 1.0) / sigma
        if self.tof_mode is None or self._tof_mode(frame) != self.tof_mode:
            return n_tpc, np.full(len(frame), np.nan)
        delta, exp_t = self._tof_delta(frame, p)
        return n_tpc, delta / (self._tof_sigma(p, exp_t) * cal["tof_width"])

    def n_combined(self, frame: pd.DataFrame, domain: str = "mc") -> np.ndarray:
        n_tpc, n_tof = self.n_sigmas(frame, domain)
        pt = column(frame, "pt")
        pt = frame["momentum"].to_numpy(np.float64) if pt is None else pt
        use_tof = (pt >= self.pt_tof) & np.isfinite(n_tof)
        return np.where(use_tof, np.hypot(n_tpc, np.nan_to_num(n_tof)), np.abs(n_tpc))

    def predict(self, frame: pd.DataFrame, domain: str = "mc") -> np.ndarray:
        """``-n`` with ``domain``'s calibration (``"data"`` for Data frames)."""
        return -self.n_combined(frame, domain)
