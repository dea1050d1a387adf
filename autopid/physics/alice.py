"""Detector-response formulas for ALICE-like tracks (TPC dE/dx, TOF time of flight).

Shared by the track simulator and by the n-sigma baseline, so that both use the same
expectations. Units: momenta in GeV/c, masses in GeV/c^2, lengths in m, times in ps.
Every function accepts NumPy arrays (or scalars) and broadcasts.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

# name -> (PDG code of the particle, mass in GeV/c^2), PDG 2024 values
SPECIES: Final[dict[str, tuple[int, float]]] = {
    "pion": (211, 0.13957039),
    "kaon": (321, 0.493677),
    "proton": (2212, 0.93827209),
    "electron": (11, 0.000510998950),
    "muon": (13, 0.1056583755),
}

# Electric charge of the particle carrying the positive PDG code: for leptons the
# particle (e-, mu-) is negative, for hadrons (pi+, K+, p) positive.
PDG_CHARGE: Final[dict[int, int]] = {211: 1, 321: 1, 2212: 1, 11: -1, 13: -1}

# O2Physics default ALEPH parameters P1..P5 and MIP value of the TPC response
ALEPH_DEFAULT: Final[tuple[float, float, float, float, float]] = (
    0.032098, 19.9768, 2.53e-16, 2.7212, 6.0809,
)
MIP_DEFAULT: Final[float] = 50.0
TPC_NCL_REF: Final[int] = 159
TOF_RADIUS_M: Final[float] = 3.7
SPEED_OF_LIGHT_M_PER_PS: Final[float] = 2.99792458e-4

FloatArray = NDArray[np.float64]


def signed_pdg(code: ArrayLike, charge: ArrayLike) -> NDArray[np.int32]:
    """PDG code with the sign of the PDG convention: ``code`` if charge equals
    ``PDG_CHARGE[code]``, else ``-code`` (e- -> 11, e+ -> -11, pi+ -> 211, pi- -> -211)."""
    code = np.asarray(code, dtype=np.int32)
    charge = np.asarray(charge)
    lepton = (code == 11) | (code == 13)
    particle_charge = np.where(lepton, -1, 1)
    return np.where(np.sign(charge) == particle_charge, code, -code).astype(np.int32)


def beta_gamma(p: ArrayLike, mass: ArrayLike) -> FloatArray:
    """beta*gamma = p / m."""
    return np.asarray(p, dtype=np.float64) / np.asarray(mass, dtype=np.float64)


def beta_from_p(p: ArrayLike, mass: ArrayLike) -> FloatArray:
    """beta = p / sqrt(p^2 + m^2)."""
    p = np.asarray(p, dtype=np.float64)
    mass = np.asarray(mass, dtype=np.float64)
    return p / np.sqrt(p * p + mass * mass)


def bethe_bloch_aleph(
    bg: ArrayLike,
    p1: float = ALEPH_DEFAULT[0],
    p2: float = ALEPH_DEFAULT[1],
    p3: float = ALEPH_DEFAULT[2],
    p4: float = ALEPH_DEFAULT[3],
    p5: float = ALEPH_DEFAULT[4],
) -> FloatArray:
    """ALEPH parametrisation f(bg) = P1/b^P4 * (P2 - b^P4 - ln(P3 + bg^-P5)), b = beta.

    Normalised so that ``MIP * f`` is the TPC signal (f ~ 1 near minimum ionisation).
    """
    bg = np.asarray(bg, dtype=np.float64)
    beta = bg / np.sqrt(1.0 + bg * bg)
    bp = beta**p4
    return p1 / bp * (p2 - bp - np.log(p3 + bg ** (-p5)))


def expected_tpc_signal(
    p: ArrayLike,
    mass: ArrayLike,
    mip: float = MIP_DEFAULT,
    params: tuple[float, float, float, float, float] = ALEPH_DEFAULT,
) -> FloatArray:
    """Expected TPC dE/dx of a singly charged particle: MIP * f_ALEPH(p/m)."""
    return mip * bethe_bloch_aleph(beta_gamma(p, mass), *params)


def tpc_resolution(ncl: ArrayLike, sigma0: float, ncl_ref: int = TPC_NCL_REF) -> FloatArray:
    """Relative dE/dx resolution sigma0 * sqrt(ncl_ref / ncl) (ncl_ref = 159 pad rows)."""
    ncl = np.asarray(ncl, dtype=np.float64)
    return sigma0 * np.sqrt(ncl_ref / ncl)


def tof_length_m(eta: ArrayLike, radius_m: float = TOF_RADIUS_M) -> FloatArray:
    """Straight-line track length to the TOF cylinder: L = R * cosh(eta)."""
    return radius_m * np.cosh(np.asarray(eta, dtype=np.float64))


def tof_expected_time_ps(p: ArrayLike, mass: ArrayLike, length_m: ArrayLike) -> FloatArray:
    """Expected time of flight t = L / (beta c) in ps."""
    beta = beta_from_p(p, mass)
    return np.asarray(length_m, dtype=np.float64) / (beta * SPEED_OF_LIGHT_M_PER_PS)


def beta_from_time(length_m: ArrayLike, time_ps: ArrayLike) -> FloatArray:
    """Measured velocity beta = L / (t c)."""
    time_ps = np.asarray(time_ps, dtype=np.float64)
    return np.asarray(length_m, dtype=np.float64) / (time_ps * SPEED_OF_LIGHT_M_PER_PS)


def tof_match_efficiency(
    pt: ArrayLike, eps_max: float, pt_threshold: float = 0.3, pt_scale: float = 0.2
) -> FloatArray:
    """TOF matching efficiency eps_max * (1 - exp(-(pT - pt0)/w)), zero below pt0."""
    pt = np.asarray(pt, dtype=np.float64)
    rise = -np.expm1(-(pt - pt_threshold) / pt_scale)
    return np.where(pt > pt_threshold, eps_max * rise, 0.0)
