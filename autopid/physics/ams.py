"""Constants and formulas for AMS-like nuclei (physics.md, section "AMS-like nuclei").

Shared by the AMS-like simulator and by anything that needs the same expectations
(selections, resolution studies). Units: rigidity R in GV, momenta in GeV/c, masses in
GeV/c^2, grammage in g/cm^2, lengths in cm unless a name says otherwise, times in ps,
magnetic field in T. Every function accepts NumPy arrays (or scalars) and broadcasts.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]

# name -> (charge Z, mass number A) of the nuclei the simulator knows
NUCLEI: Final[dict[str, tuple[int, int]]] = {
    "silicon": (14, 28),
    "phosphorus": (15, 31),
    "sulfur": (16, 32),
    "chlorine": (17, 35),
    "argon": (18, 40),
    "potassium": (19, 39),
    "calcium": (20, 40),
    "iron": (26, 56),
}

# mass number of the most abundant stable isotope of Z = 1..26 (H-1, He-4, ..., Fe-56):
# the mass a projectile fragment of that charge is given
STABLE_MASS_NUMBER: Final[tuple[int, ...]] = (
    1, 4, 7, 9, 11, 12, 14, 16, 19, 20, 23, 24, 27,
    28, 31, 32, 35, 40, 39, 40, 45, 48, 51, 52, 55, 56,
)

N_LAYERS: Final[int] = 9
# z of tracker layers L1..L9 (cm): L1 on top of the TRD, L2-L8 in and around the magnet,
# L9 below the lower TOF (AMS-02 after the 2011 tracker reconfiguration, rounded)
LAYER_Z_CM: Final[tuple[float, ...]] = (159.0, 53.0, 29.0, 25.0, 2.0, -2.0, -25.0, -29.0, -136.0)

NUCLEON_MASS_GEV: Final[float] = 0.9315  # atomic mass unit, the mass per nucleon used here
SPEED_OF_LIGHT_CM_PER_PS: Final[float] = 2.99792458e-2
# p [GeV/c] = 0.299792458 * Z * B [T] * r [m]: bending angle = K * B * L / R
BENDING_CONSTANT: Final[float] = 0.299792458

LAYER_CHARGE_SIGMA_CONST: Final[float] = 0.15
LAYER_CHARGE_SIGMA_SLOPE: Final[float] = 0.015
LAMBDA_REF_GCM2: Final[float] = 22.0
LAMBDA_REF_A: Final[float] = 28.0
LAMBDA_POWER: Final[float] = 0.6
MS_COEFFICIENT: Final[float] = 0.1
TOF_SIGMA_Z_PS: Final[float] = 160.0
TOF_SIGMA_CONST_PS: Final[float] = 40.0
GOLDHABER_SIGMA0_GEV: Final[float] = 0.09


def layer_charge_sigma(
    z: ArrayLike,
    const: float = LAYER_CHARGE_SIGMA_CONST,
    slope: float = LAYER_CHARGE_SIGMA_SLOPE,
) -> FloatArray:
    """Charge resolution of one tracker layer and side: sigma(Z) = sqrt(a^2 + (b Z)^2).

    Defaults a = 0.15, b = 0.015 give ~0.27 charge units at Z = 15.
    """
    z = np.asarray(z, dtype=np.float64)
    return np.sqrt(const * const + (slope * z) ** 2)


def interaction_length(
    a: ArrayLike,
    lambda_ref: float = LAMBDA_REF_GCM2,
    a_ref: float = LAMBDA_REF_A,
    power: float = LAMBDA_POWER,
) -> FloatArray:
    """Nuclear interaction length in carbon-like material: lambda(A) = 22 (28/A)^0.6 g/cm^2."""
    a = np.asarray(a, dtype=np.float64)
    return lambda_ref * (a_ref / a) ** power


def interaction_probability(x_gcm2: ArrayLike, lam_gcm2: ArrayLike) -> FloatArray:
    """Probability to interact in a grammage x: P = 1 - exp(-x / lambda)."""
    x = np.asarray(x_gcm2, dtype=np.float64)
    lam = np.asarray(lam_gcm2, dtype=np.float64)
    return -np.expm1(-x / lam)


def nucleus_mass_gev(a: ArrayLike) -> FloatArray:
    """Mass m = A * 0.9315 GeV/c^2 (binding energy neglected)."""
    return np.asarray(a, dtype=np.float64) * NUCLEON_MASS_GEV


def momentum_gev(rigidity_gv: ArrayLike, z: ArrayLike) -> FloatArray:
    """Momentum of the nucleus p = |R| Z (GeV/c)."""
    return np.abs(np.asarray(rigidity_gv, dtype=np.float64)) * np.asarray(z, dtype=np.float64)


def beta_from_rigidity(rigidity_gv: ArrayLike, z: ArrayLike, a: ArrayLike) -> FloatArray:
    """Velocity beta = p / sqrt(p^2 + m^2), with p = |R| Z and m = A * 0.9315 GeV."""
    p = momentum_gev(rigidity_gv, z)
    m = nucleus_mass_gev(a)
    return p / np.sqrt(p * p + m * m)


def fragment_mass_number(
    z_fragment: ArrayLike,
    z_parent: ArrayLike,
    a_parent: ArrayLike,
    table: tuple[int, ...] = STABLE_MASS_NUMBER,
) -> NDArray[np.int64]:
    """A of a projectile fragment of charge Z_F: the table's isotope (index Z_F - 1), at most
    the parent's A less one nucleon per removed charge (K-39 -> Ar-38, not Ar-40)."""
    zf = np.asarray(z_fragment, dtype=np.int64)
    zp = np.asarray(z_parent, dtype=np.int64)
    ap = np.asarray(a_parent, dtype=np.int64)
    lookup = np.asarray(table, dtype=np.int64)
    a = lookup[np.clip(zf, 1, lookup.size) - 1]
    return np.clip(np.minimum(a, ap - (zp - zf)), zf, None)


def fragment_rigidity(
    rigidity_gv: ArrayLike,
    z_parent: ArrayLike,
    a_parent: ArrayLike,
    z_fragment: ArrayLike,
    a_fragment: ArrayLike,
) -> FloatArray:
    """Rigidity of a projectile fragment with the parent's velocity (momentum per nucleon
    conserved): R_F = R (A_F / A) (Z / Z_F), so beta(R_F, Z_F, A_F) = beta(R, Z, A)."""
    r = np.asarray(rigidity_gv, dtype=np.float64)
    return (r * np.asarray(a_fragment, dtype=np.float64) / np.asarray(a_parent, dtype=np.float64)
            * np.asarray(z_parent, dtype=np.float64)
            / np.asarray(z_fragment, dtype=np.float64))


def inverse_rigidity_sigma(
    rigidity_gv: ArrayLike,
    beta: ArrayLike,
    mdr_tv: float,
    ms_coefficient: float = MS_COEFFICIENT,
) -> FloatArray:
    """Resolution of the measured 1/R in 1/GV: sigma(1/R) = sqrt(MDR^-2 + (c_ms / (beta R))^2).

    The MDR (maximum detectable rigidity, where sigma(R)/R = 100%) is given in TV and
    converted to GV; c_ms = 0.1 is the multiple-scattering term, so sigma(R)/R ~ 10%/beta
    at low rigidity.
    """
    r = np.abs(np.asarray(rigidity_gv, dtype=np.float64))
    beta = np.asarray(beta, dtype=np.float64)
    mdr_gv = 1000.0 * mdr_tv
    return np.sqrt(mdr_gv**-2 + (ms_coefficient / (beta * r)) ** 2)


def bending_power(field_t: float, length_cm: float) -> float:
    """K B L in GV (times radians): a track of rigidity R turns by K B L / R in the field."""
    return BENDING_CONSTANT * field_t * length_cm / 100.0


def tof_time_sigma_ps(
    z: ArrayLike, per_z_ps: float = TOF_SIGMA_Z_PS, const_ps: float = TOF_SIGMA_CONST_PS
) -> FloatArray:
    """Time resolution of one TOF plane: sigma_t = sqrt((160/Z)^2 + 40^2) ps."""
    z = np.asarray(z, dtype=np.float64)
    return np.sqrt((per_z_ps / z) ** 2 + const_ps**2)


def goldhaber_pt_sigma(
    a: ArrayLike, a_fragment: ArrayLike, sigma0_gev: float = GOLDHABER_SIGMA0_GEV
) -> FloatArray:
    """Transverse-momentum spread (per component) of a projectile fragment, Goldhaber model:
    sigma = sigma0 sqrt(A_F (A - A_F) / (A - 1)), sigma0 ~ 90 MeV/c."""
    a = np.asarray(a, dtype=np.float64)
    af = np.asarray(a_fragment, dtype=np.float64)
    return sigma0_gev * np.sqrt(np.clip(af * (a - af), 0.0, None) / np.maximum(a - 1.0, 1.0))
