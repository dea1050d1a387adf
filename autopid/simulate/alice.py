"""ALICE-like tracks with the 19 input features of O2Physics ``Tools/PIDML``.

Every number of the ALICE table in ``physics.md`` is a configuration field; values marked
"(default)" in a description are reasonable choices, not published ones. MC ("source
domain") and Data ("target domain") share the generator and differ in the ``mc`` and
``data`` calibration sections; Data also drifts from period to period (``drift``).

Branches (``n`` entries each):

* features, float32, NaN where a detector is missing: fTPCSignal, fTRDSignal, fTRDPattern,
  fTOFSignal, fBeta, fP, fPt, fPx, fPy, fPz, fSign, fX, fY, fZ, fAlpha, fTrackType,
  fTPCNClsShared, fDcaXY, fDcaZ
* auxiliary: fEta, fPhi (float32), fTPCNClsCrossedRows (int16), fTPCNClsFound (int16:
  the clusters found on the crossed rows, those the dE/dx is computed from, so its
  resolution is sigma0 sqrt(159/fTPCNClsFound)), fLength (float32, cm: straight-line track
  length from the vertex to the TOF cylinder, defined for every track), event (int64)
* fTOFSignal is the measured time of flight in ps from the collision (event time t0 with
  its resolution included); fBeta = fLength / (c fTOFSignal).
* truth: fPdgCode (int32, PDG sign convention), fIsPhysicalPrimary (int8) in MC; the same
  content named hidden_fPdgCode, hidden_fIsPhysicalPrimary in Data (evaluation only).

Units: GeV/c, cm for positions and DCAs, ps for times, radians for angles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from autopid.config._loader import StrictModel
from autopid.physics.alice import (
    SPECIES,
    TPC_NCL_REF,
    beta_from_time,
    bethe_bloch_aleph,
    signed_pdg,
    tof_expected_time_ps,
    tof_length_m,
    tof_match_efficiency,
    tpc_resolution,
)
from autopid.simulate._common import HIDDEN_PREFIX, Experiment

SPECIES_ORDER: tuple[str, ...] = ("pion", "kaon", "proton", "electron", "muon")
FEATURES: tuple[str, ...] = (
    "fTPCSignal", "fTRDSignal", "fTRDPattern", "fTOFSignal", "fBeta", "fP", "fPt", "fPx",
    "fPy", "fPz", "fSign", "fX", "fY", "fZ", "fAlpha", "fTrackType", "fTPCNClsShared",
    "fDcaXY", "fDcaZ",
)
TRUTH: tuple[str, ...] = ("fPdgCode", "fIsPhysicalPrimary")

_MASS = np.array([SPECIES[s][1] for s in SPECIES_ORDER])
_PDG = np.array([SPECIES[s][0] for s in SPECIES_ORDER], dtype=np.int32)
_TPC_SECTORS = 18
_TRD_LAYERS = 6
_LEVY_GRID = 4096
_POPCOUNT = np.array([bin(i).count("1") for i in range(1 << _TRD_LAYERS)], dtype=np.int64)


# --------------------------------------------------------------------------- config


class PerSpecies(StrictModel):
    """One value per species; what it means is said by the field holding it."""

    pion: float = Field(description="value for pions")
    kaon: float = Field(description="value for kaons")
    proton: float = Field(description="value for protons")
    electron: float = Field(description="value for electrons")
    muon: float = Field(description="value for muons")

    def array(self) -> np.ndarray:
        return np.array([getattr(self, s) for s in SPECIES_ORDER], dtype=np.float64)


class CompositionConfig(StrictModel):
    kaon_to_pion: float = Field(0.11, ge=0, description="K/pi ratio of tracks in the acceptance")
    proton_to_pion: float = Field(0.05, ge=0, description="p/pi ratio of tracks in the acceptance")
    electron_to_pion: float = Field(0.01, ge=0, description="e/pi ratio (default)")
    muon_to_pion: float = Field(0.01, ge=0, description="mu/pi ratio (default)")

    def fractions(self) -> np.ndarray:
        """Species fractions in SPECIES_ORDER."""
        w = np.array([1.0, self.kaon_to_pion, self.proton_to_pion,
                      self.electron_to_pion, self.muon_to_pion])
        return w / w.sum()


class TpcCalibrationConfig(StrictModel):
    mip: float = Field(50.0, gt=0, description="TPC signal of a minimum-ionising particle")
    sigma0: float = Field(
        0.052, gt=0, description="relative dE/dx resolution at 159 clusters, sigma0*sqrt(159/ncl)"
    )


class TofCalibrationConfig(StrictModel):
    eps_max: float = Field(0.70, ge=0, le=1, description="TOF matching efficiency plateau")
    resolution_ps: float = Field(60.0, gt=0, description="Gaussian TOF time resolution (ps)")
    tail_ps: float = Field(
        40.0, ge=0, description="decay constant of the exponential tail of the time residual (ps)"
    )
    mismatch_fraction: float = Field(
        0.01, ge=0, le=1, description="fraction of matched tracks given another track's hit time"
    )
    t0_jitter_ps: float = Field(
        20.0, ge=0, description="event-time (t0) resolution, shared by a collision's tracks (ps)"
    )


class DomainConfig(StrictModel):
    """The values that differ between MC and Data."""

    composition: CompositionConfig = Field(
        default_factory=CompositionConfig, description="particle composition"
    )
    tpc: TpcCalibrationConfig = Field(
        default_factory=TpcCalibrationConfig, description="TPC dE/dx calibration and resolution"
    )
    tof: TofCalibrationConfig = Field(
        default_factory=TofCalibrationConfig, description="TOF matching and time response"
    )
    trd_acceptance: float = Field(
        0.85, ge=0, le=1, description="probability that a track with p >= p_min has a TRD signal"
    )
    detector_loss: float = Field(
        0.01, ge=0, le=1,
        description="probability of losing the TOF and, independently, the TRD signal at random",
    )


def _data_defaults() -> DomainConfig:
    return DomainConfig(
        composition=CompositionConfig(kaon_to_pion=0.13, proton_to_pion=0.065),
        tpc=TpcCalibrationConfig(mip=50.0 * 1.025, sigma0=0.060),
        tof=TofCalibrationConfig(eps_max=0.65, resolution_ps=80.0, tail_ps=70.0,
                                 mismatch_fraction=0.03),
        trd_acceptance=0.75,
        detector_loss=0.04,
    )


class DriftConfig(StrictModel):
    """Per-period random drift of the Data calibration (all runs of a period share it)."""

    mip_rel_sigma: float = Field(0.01, ge=0, description="relative rms of the Data MIP (default)")
    tpc_sigma0_rel_sigma: float = Field(
        0.02, ge=0, description="relative rms of the Data dE/dx resolution (default)"
    )
    tof_resolution_sigma_ps: float = Field(
        3.0, ge=0, description="rms of the Data TOF time resolution (ps, default)"
    )
    tof_eps_max_sigma: float = Field(
        0.01, ge=0, description="rms of the Data TOF matching plateau (default)"
    )


class KinematicsConfig(StrictModel):
    pt_min: float = Field(0.1, gt=0, description="lowest generated pT (GeV/c)")
    pt_max: float = Field(5.0, gt=0, description="highest generated pT (GeV/c)")
    eta_max: float = Field(0.8, gt=0, description="tracks are uniform in |eta| < eta_max")
    levy_n: PerSpecies = Field(
        default_factory=lambda: PerSpecies(pion=7, kaon=7, proton=7, electron=7, muon=7),
        description="Levy-Tsallis exponent n, dN/dpT ~ pT (1 + (mT - m)/(n C))^-n "
                    "(electron, muon: default)",
    )
    levy_c: PerSpecies = Field(
        default_factory=lambda: PerSpecies(pion=0.13, kaon=0.17, proton=0.20,
                                           electron=0.13, muon=0.13),
        description="Levy-Tsallis slope C in GeV (electron, muon: default)",
    )
    charge_asymmetry: PerSpecies = Field(
        default_factory=lambda: PerSpecies(pion=0.0, kaon=0.0, proton=0.01,
                                           electron=0.0, muon=0.0),
        description="(N+ - N-)/(N+ + N-) per species (default)",
    )

    @model_validator(mode="after")
    def _check(self) -> KinematicsConfig:
        if self.pt_min >= self.pt_max:
            raise ValueError("pt_min must be below pt_max")
        return self


class BetheBlochConfig(StrictModel):
    p1: float = Field(0.032098, description="ALEPH P1 (O2Physics default)")
    p2: float = Field(19.9768, description="ALEPH P2")
    p3: float = Field(2.53e-16, description="ALEPH P3")
    p4: float = Field(2.7212, description="ALEPH P4")
    p5: float = Field(6.0809, description="ALEPH P5")

    def params(self) -> tuple[float, float, float, float, float]:
        return (self.p1, self.p2, self.p3, self.p4, self.p5)


class TpcClustersConfig(StrictModel):
    ncl_ref: int = Field(TPC_NCL_REF, gt=0, description="pad rows: resolution reference ncl")
    crossed_rows_min: int = Field(
        70, gt=0, description="lower end of the main crossed-rows distribution (selection cut)"
    )
    crossed_rows_floor: int = Field(
        50, gt=0, description="fewest crossed rows of the short tracks below crossed_rows_min"
    )
    below_min_fraction: float = Field(
        0.02, ge=0, le=1,
        description="fraction of tracks with crossed rows in [floor, min) (default)",
    )
    rows_beta_a: float = Field(
        5.0, gt=0, description="Beta(a, b) shape of the crossed rows within [min, ref] (default)"
    )
    rows_beta_b: float = Field(1.5, gt=0, description="Beta(a, b) shape, b (default)")
    shared_clusters_mean: float = Field(
        0.3, ge=0, description="mean number of shared TPC clusters, Poisson (default)"
    )
    found_fraction: float = Field(
        0.95, gt=0, le=1,
        description="probability that a crossed row has a cluster used for the dE/dx, binomial; "
                    "fTPCNClsFound (default)",
    )

    @model_validator(mode="after")
    def _check(self) -> TpcClustersConfig:
        if not self.crossed_rows_floor <= self.crossed_rows_min <= self.ncl_ref:
            raise ValueError("need crossed_rows_floor <= crossed_rows_min <= ncl_ref")
        return self


class TofConfig(StrictModel):
    radius_m: float = Field(3.7, gt=0, description="TOF radius; track length L = R cosh(eta)")
    p_min: float = Field(0.5, ge=0, description="TOF is used only for p >= p_min (GeV/c)")
    match_pt_threshold: float = Field(
        0.3, ge=0, description="pt0 of eps_max (1 - exp(-(pT - pt0)/w)); zero below (GeV/c)"
    )
    match_pt_scale: float = Field(0.2, gt=0, description="turn-on width w (GeV/c)")


class TrdConfig(StrictModel):
    p_min: float = Field(0.8, ge=0, description="TRD is used only for p >= p_min (GeV/c)")
    layer_efficiency: float = Field(
        0.9, gt=0, le=1, description="probability of a tracklet in each of the 6 layers (default)"
    )
    signal_mip: float = Field(
        1.0, gt=0, description="TRD truncated-mean signal of a MIP, arbitrary units (default)"
    )
    resolution: float = Field(
        0.15, gt=0, description="relative TRD signal resolution with 6 layers, "
                                "scaling as sqrt(6/layers) (default)"
    )
    tr_boost: float = Field(
        0.7, ge=0, description="transition-radiation yield at saturation, in MIP units (default)"
    )
    tr_gamma_half: float = Field(
        800.0, gt=0, description="Lorentz factor at which TR reaches half its yield (default)"
    )


class DcaConfig(StrictModel):
    xy_const_cm: float = Field(0.0015, gt=0, description="DCAxy sigma = a + b / pT^c: a (cm)")
    xy_slope_cm: float = Field(0.0050, ge=0, description="DCAxy sigma: b (cm GeV^c)")
    xy_power: float = Field(1.1, description="DCAxy sigma: c")
    z_const_cm: float = Field(0.0020, gt=0, description="DCAz sigma = a + b / pT^c: a (default)")
    z_slope_cm: float = Field(0.0060, ge=0, description="DCAz sigma: b (default)")
    z_power: float = Field(1.1, description="DCAz sigma: c (default)")
    xy_max_cm: float = Field(2.4, gt=0, description="largest |DCAxy| kept (default)")
    z_max_cm: float = Field(2.0, gt=0, description="largest |DCAz| kept (selection |DCAz| < 2 cm)")


class SecondariesConfig(StrictModel):
    fraction: PerSpecies = Field(
        default_factory=lambda: PerSpecies(pion=0.05, kaon=0.02, proton=0.15,
                                           electron=0.5, muon=0.6),
        description="fraction of non-physical-primary tracks (weak decays, conversions, "
                    "material; default)",
    )
    dcaxy_scale_cm: float = Field(
        0.3, gt=0, description="scale of the broad (Laplace) DCAxy of secondaries (default)"
    )
    dcaz_scale_cm: float = Field(
        0.3, gt=0, description="scale of the broad (Laplace) DCAz of secondaries (default)"
    )


class TrackingConfig(StrictModel):
    pt_resolution_const: float = Field(
        0.008, ge=0, description="sigma(pT)/pT = sqrt(a^2 + (b pT)^2): a (default)"
    )
    pt_resolution_slope: float = Field(
        0.002, ge=0, description="sigma(pT)/pT: b in 1/(GeV/c) (default)"
    )
    other_type_fraction: float = Field(
        0.03, ge=0, le=1, description="fraction of tracks of fTrackType other_type (default)"
    )
    other_type: int = Field(
        1, ge=0, le=255, description="track type of those (O2 TrackIU = 1: at innermost update)"
    )
    innermost_radius_cm: float = Field(
        2.3, ge=0, description="radius of the innermost update point of other_type tracks"
    )


class CollisionsConfig(StrictModel):
    tracks_per_collision: int = Field(
        10, ge=1, description="tracks per collision; event = track index // this (default)"
    )
    vertex_xy_sigma_cm: float = Field(0.005, ge=0, description="beam-spot rms in x and y (default)")
    vertex_z_sigma_cm: float = Field(6.0, ge=0, description="vertex z rms (default)")


class AliceSimConfig(StrictModel):
    """Configuration of the ALICE-like track simulator (physics.md, ALICE table)."""

    mc: DomainConfig = Field(default_factory=DomainConfig, description="MC calibration")
    data: DomainConfig = Field(
        default_factory=_data_defaults,
        description="Data calibration (MIP +2.5%, sigma0 0.060, eps_max 0.65, TOF 80/70 ps, "
                    "mismatch 3%, TRD 75%, loss 4%, K/pi 0.13, p/pi 0.065)",
    )
    drift: DriftConfig = Field(default_factory=DriftConfig, description="per-period Data drift")
    kinematics: KinematicsConfig = Field(
        default_factory=KinematicsConfig, description="spectra, acceptance, charge"
    )
    bethe_bloch: BetheBlochConfig = Field(
        default_factory=BetheBlochConfig, description="ALEPH Bethe-Bloch parameters"
    )
    tpc: TpcClustersConfig = Field(
        default_factory=TpcClustersConfig, description="TPC crossed rows and shared clusters"
    )
    tof: TofConfig = Field(default_factory=TofConfig, description="TOF geometry and turn-on")
    trd: TrdConfig = Field(default_factory=TrdConfig, description="TRD signal and layers")
    dca: DcaConfig = Field(default_factory=DcaConfig, description="DCA resolution of primaries")
    secondaries: SecondariesConfig = Field(
        default_factory=SecondariesConfig, description="non-physical-primary tracks"
    )
    tracking: TrackingConfig = Field(
        default_factory=TrackingConfig, description="momentum resolution and track types"
    )
    collisions: CollisionsConfig = Field(
        default_factory=CollisionsConfig, description="collision structure and vertex"
    )


# --------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class PeriodDrift:
    """Multiplicative (mip, sigma0) and additive (tof_resolution_ps, eps_max) drifts."""

    mip_scale: float
    sigma0_scale: float
    tof_resolution_ps: float
    eps_max: float


_N_DRIFT_DRAWS = 4


def draw_period_drift(cfg: DriftConfig, period_rng: np.random.Generator) -> PeriodDrift:
    """The drift of one period; always consumes the same draws of ``period_rng``."""
    z = period_rng.standard_normal(_N_DRIFT_DRAWS)
    return PeriodDrift(
        mip_scale=1.0 + cfg.mip_rel_sigma * z[0],
        sigma0_scale=1.0 + cfg.tpc_sigma0_rel_sigma * z[1],
        tof_resolution_ps=cfg.tof_resolution_sigma_ps * z[2],
        eps_max=cfg.tof_eps_max_sigma * z[3],
    )


def resolve_calibration(
    cfg: AliceSimConfig, domain: Literal["mc", "data"], period_rng: np.random.Generator
) -> DomainConfig:
    """The calibration a period actually has: ``cfg.mc``, or ``cfg.data`` with the drift."""
    drift = draw_period_drift(cfg.drift, period_rng)  # drawn for MC too: same rng use
    if domain == "mc":
        return cfg.mc
    if domain != "data":
        raise ValueError(f"domain must be 'mc' or 'data', got {domain!r}")
    base = cfg.data
    tpc = base.tpc.model_copy(update={
        "mip": base.tpc.mip * max(drift.mip_scale, 0.5),
        "sigma0": base.tpc.sigma0 * max(drift.sigma0_scale, 0.5),
    })
    tof = base.tof.model_copy(update={
        "resolution_ps": max(base.tof.resolution_ps + drift.tof_resolution_ps, 1.0),
        "eps_max": float(np.clip(base.tof.eps_max + drift.eps_max, 0.0, 1.0)),
    })
    return base.model_copy(update={"tpc": tpc, "tof": tof})


# --------------------------------------------------------------------------- pieces


def _levy_inverse_cdf(kin: KinematicsConfig, species: int) -> tuple[np.ndarray, np.ndarray]:
    """(cdf, pT) on a grid for dN/dpT ~ pT (1 + (mT - m)/(n C))^-n."""
    name = SPECIES_ORDER[species]
    n, c, m = getattr(kin.levy_n, name), getattr(kin.levy_c, name), _MASS[species]
    pt = np.linspace(kin.pt_min, kin.pt_max, _LEVY_GRID)
    mt = np.sqrt(pt * pt + m * m)
    pdf = pt * (1.0 + (mt - m) / (n * c)) ** (-n)
    cdf = np.concatenate(([0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(pt))))
    return cdf / cdf[-1], pt


def _draw_pt(kin: KinematicsConfig, species: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    u = rng.random(species.size)
    pt = np.empty(species.size)
    for s in range(len(SPECIES_ORDER)):
        sel = species == s
        cdf, grid = _levy_inverse_cdf(kin, s)
        pt[sel] = np.interp(u[sel], cdf, grid)
    return pt


def _draw_crossed_rows(tpc: TpcClustersConfig, n: int, rng: np.random.Generator) -> np.ndarray:
    """Mostly in [min, ref] (Beta shaped, peaked high), a few short tracks in [floor, min)."""
    span = tpc.ncl_ref - tpc.crossed_rows_min
    main = tpc.crossed_rows_min + np.rint(span * rng.beta(tpc.rows_beta_a, tpc.rows_beta_b, n))
    short_end = max(tpc.crossed_rows_min, tpc.crossed_rows_floor + 1)
    short = rng.integers(tpc.crossed_rows_floor, short_end, n)
    rows = np.where(rng.random(n) < tpc.below_min_fraction, short, main)
    return rows.astype(np.int16)


def _emg_mode(sigma: float, tau: float) -> float:
    """Mode of Gaussian(sigma) convolved with Exp(tau): where the time peak sits."""
    if tau <= 0.0 or sigma <= 0.0:
        return 0.0
    step = max(min(sigma, tau) / 50.0, sigma / 2000.0)
    xg = np.arange(-6.0 * sigma, 6.0 * sigma + step, step)
    xe = np.arange(0.0, 10.0 * tau + step, step)
    conv = np.convolve(np.exp(-0.5 * (xg / sigma) ** 2), np.exp(-xe / tau))
    return float(xg[0] + step * np.argmax(conv))


def _tof_time(
    cal: DomainConfig, p_true: np.ndarray, mass: np.ndarray, length: np.ndarray,
    t0: np.ndarray, reaches_tof: np.ndarray, rng: np.random.Generator,
) -> np.ndarray:
    """Measured time: expected + Gaussian + exponential tail + event t0, peak calibrated to
    the expected time; mismatched tracks carry another track's hit time."""
    tof = cal.tof
    n = p_true.size
    sigma_total = float(np.hypot(tof.resolution_ps, tof.t0_jitter_ps))
    # the calibration aligns the peak, not the mean, of the residual with zero
    offset = _emg_mode(sigma_total, tof.tail_ps)
    tail = rng.exponential(tof.tail_ps, n) if tof.tail_ps > 0 else np.zeros(n)
    time = (tof_expected_time_ps(p_true, mass, length)
            + tof.resolution_ps * rng.standard_normal(n) + tail + t0 - offset)
    # a wrong hit belongs to a track that reaches the TOF radius
    donors = np.flatnonzero(reaches_tof)
    if donors.size == 0:
        donors = np.arange(n)
    other = donors[rng.integers(0, max(donors.size, 1), n)] if n else donors
    return np.where(rng.random(n) < tof.mismatch_fraction, time[other], time)


def _trd_pattern(eff: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """6-bit layer pattern with at least one layer (a TRD track needs a tracklet)."""
    bits = rng.random((n, _TRD_LAYERS)) < eff
    empty = ~bits.any(axis=1)
    bits[empty, rng.integers(0, _TRD_LAYERS, n)[empty]] = True
    return bits.astype(np.int64) @ (1 << np.arange(_TRD_LAYERS))


def _trd_signal(
    cfg: AliceSimConfig, bg: np.ndarray, layers: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Truncated-mean dE/dx (ALEPH shape) plus a transition-radiation term rising with gamma,
    which only electrons reach at these momenta."""
    trd = cfg.trd
    gamma = np.sqrt(1.0 + bg * bg)
    tr = trd.tr_boost / (1.0 + (trd.tr_gamma_half / gamma) ** 2)
    mean = trd.signal_mip * (bethe_bloch_aleph(bg, *cfg.bethe_bloch.params()) + tr)
    rel = trd.resolution * np.sqrt(_TRD_LAYERS / np.maximum(layers, 1))
    return np.maximum(mean * (1.0 + rel * rng.standard_normal(bg.size)), 0.01 * trd.signal_mip)


def _truncated_laplace(scale: float, limit: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Symmetric exponential in |x| < limit, by inverse CDF (no rejection loop)."""
    u = rng.random(n)
    mag = -scale * np.log1p(-u * (-np.expm1(-limit / scale)))
    return np.where(rng.random(n) < 0.5, -mag, mag)


def _dca(
    cfg: AliceSimConfig, pt: np.ndarray, primary: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    d, sec = cfg.dca, cfg.secondaries
    n = pt.size
    sxy = d.xy_const_cm + d.xy_slope_cm / pt**d.xy_power
    sz = d.z_const_cm + d.z_slope_cm / pt**d.z_power
    xy = np.clip(sxy * rng.standard_normal(n), -d.xy_max_cm, d.xy_max_cm)
    z = np.clip(sz * rng.standard_normal(n), -d.z_max_cm, d.z_max_cm)
    xy = np.where(primary, xy, _truncated_laplace(sec.dcaxy_scale_cm, d.xy_max_cm, n, rng))
    z = np.where(primary, z, _truncated_laplace(sec.dcaz_scale_cm, d.z_max_cm, n, rng))
    return xy, z


def sector_alpha(phi: np.ndarray) -> np.ndarray:
    """Centre of the 20-degree TPC sector containing phi, in [-pi, pi)."""
    width = 2.0 * np.pi / _TPC_SECTORS
    sector = np.floor(np.mod(phi, 2.0 * np.pi) / width)
    alpha = (sector + 0.5) * width
    return np.where(alpha >= np.pi, alpha - 2.0 * np.pi, alpha)


def _local_position(
    phi: np.ndarray, eta: np.ndarray, alpha: np.ndarray,
    vertex: tuple[np.ndarray, np.ndarray, np.ndarray], dcaxy: np.ndarray, dcaz: np.ndarray,
    radius: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Track reference point in the sector frame: the DCA point to the vertex, moved out by
    ``radius`` along the (straight, at this scale) track for innermost-update tracks."""
    vx, vy, vz = vertex
    gx = vx - dcaxy * np.sin(phi) + radius * np.cos(phi)
    gy = vy + dcaxy * np.cos(phi) + radius * np.sin(phi)
    gz = vz + dcaz + radius * np.sinh(eta)
    ca, sa = np.cos(alpha), np.sin(alpha)
    return gx * ca + gy * sa, -gx * sa + gy * ca, gz


# --------------------------------------------------------------------------- generator


def generate_alice(
    cfg: AliceSimConfig,
    n: int,
    *,
    domain: Literal["mc", "data"],
    rng: np.random.Generator,
    period_rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Generate ``n`` ALICE-like tracks of one run (see the module docstring)."""
    cal = resolve_calibration(cfg, domain, period_rng)
    kin = cfg.kinematics

    species = rng.choice(len(SPECIES_ORDER), size=n, p=cal.composition.fractions())
    mass = _MASS[species]
    positive = rng.random(n) < 0.5 * (1.0 + kin.charge_asymmetry.array()[species])
    charge = np.where(positive, 1, -1)
    primary = rng.random(n) >= cfg.secondaries.fraction.array()[species]

    pt_true = _draw_pt(kin, species, rng)
    eta = rng.uniform(-kin.eta_max, kin.eta_max, n)
    phi = rng.uniform(0.0, 2.0 * np.pi, n)
    p_true = pt_true * np.cosh(eta)
    trk = cfg.tracking
    pt_rel = np.hypot(trk.pt_resolution_const, trk.pt_resolution_slope * pt_true)
    pt = pt_true * (1.0 + pt_rel * rng.standard_normal(n))
    p = pt * np.cosh(eta)

    col = cfg.collisions
    event = np.arange(n, dtype=np.int64) // col.tracks_per_collision
    n_col = int(event[-1]) + 1 if n else 0
    vertex = (col.vertex_xy_sigma_cm * rng.standard_normal(n_col)[event],
              col.vertex_xy_sigma_cm * rng.standard_normal(n_col)[event],
              col.vertex_z_sigma_cm * rng.standard_normal(n_col)[event])
    t0 = cal.tof.t0_jitter_ps * rng.standard_normal(n_col)[event]

    # TPC: the physics uses the true momentum, the n-sigma user only sees fP
    rows = _draw_crossed_rows(cfg.tpc, n, rng)
    bb = cfg.bethe_bloch.params()
    bg = p_true / mass
    tpc_z = rng.standard_normal(n)  # the smear; its scale needs the found clusters, drawn last
    shared = np.minimum(rng.poisson(cfg.tpc.shared_clusters_mean, n), rows)

    # TOF: missing not at random (momentum cut and pT-dependent matching)
    length = tof_length_m(eta, cfg.tof.radius_m)
    eff = tof_match_efficiency(pt_true, cal.tof.eps_max, cfg.tof.match_pt_threshold,
                               cfg.tof.match_pt_scale)
    has_tof = ((p >= cfg.tof.p_min) & (rng.random(n) < eff)
               & (rng.random(n) >= cal.detector_loss))
    time = _tof_time(cal, p_true, mass, length, t0, eff > 0, rng)
    tof_signal = np.where(has_tof, time, np.nan)
    beta = np.where(has_tof, beta_from_time(length, time), np.nan)

    # TRD
    has_trd = ((p >= cfg.trd.p_min) & (rng.random(n) < cal.trd_acceptance)
               & (rng.random(n) >= cal.detector_loss))
    pattern = _trd_pattern(cfg.trd.layer_efficiency, n, rng)
    layers = _POPCOUNT[pattern]
    trd_signal = np.where(has_trd, _trd_signal(cfg, bg, layers, rng), np.nan)
    trd_pattern = np.where(has_trd, pattern, np.nan)

    dcaxy, dcaz = _dca(cfg, pt, primary, rng)
    track_type = np.where(rng.random(n) < trk.other_type_fraction, trk.other_type, 0)
    radius = np.where(track_type == 0, 0.0, trk.innermost_radius_cm)
    alpha = sector_alpha(phi)
    x, y, z = _local_position(phi, eta, alpha, vertex, dcaxy, dcaz, radius)

    # drawn after everything else, so that adding the found clusters left every other
    # branch of a seed as it was
    found = np.maximum(rng.binomial(rows, cfg.tpc.found_fraction), 1)
    tpc_signal = cal.tpc.mip * bethe_bloch_aleph(bg, *bb) * (
        1.0 + tpc_resolution(found, cal.tpc.sigma0, cfg.tpc.ncl_ref) * tpc_z)

    features = {
        "fTPCSignal": tpc_signal, "fTRDSignal": trd_signal, "fTRDPattern": trd_pattern,
        "fTOFSignal": tof_signal, "fBeta": beta, "fP": p, "fPt": pt,
        "fPx": pt * np.cos(phi), "fPy": pt * np.sin(phi), "fPz": pt * np.sinh(eta),
        "fSign": charge, "fX": x, "fY": y, "fZ": z, "fAlpha": alpha,
        "fTrackType": track_type, "fTPCNClsShared": shared, "fDcaXY": dcaxy, "fDcaZ": dcaz,
    }
    out = {k: np.asarray(v, dtype=np.float32) for k, v in features.items()}
    out["fEta"] = eta.astype(np.float32)
    out["fPhi"] = phi.astype(np.float32)
    out["fTPCNClsCrossedRows"] = rows
    out["fTPCNClsFound"] = found.astype(np.int16)
    out["fLength"] = (100.0 * length).astype(np.float32)
    out["event"] = event
    prefix = "" if domain == "mc" else HIDDEN_PREFIX
    out[prefix + "fPdgCode"] = signed_pdg(_PDG[species], charge)
    out[prefix + "fIsPhysicalPrimary"] = primary.astype(np.int8)
    return out


ALICE = Experiment(
    name="alice", tree="O2pidtracks", config_type=AliceSimConfig, generate=generate_alice,
    run_base=500_000,
)
