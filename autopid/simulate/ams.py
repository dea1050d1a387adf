"""AMS-like nuclei crossing a 9-layer silicon tracker, a TOF and a magnet.

Every number of the AMS table in ``physics.md`` is a configuration field; values marked
"(default)" in a description are reasonable choices, not published ones. MC ("source
domain") and Data ("target domain") share the generator and differ in the ``mc`` and
``data`` sections; Data also drifts from period to period (``drift``).

The physics that matters for the phosphorus selection: a nucleus may interact above L1
(every detector from L1 down sees the fragment; its light, collimated companions are not
seen apart from it: irreducible by construction, ``fragments.visibility_above_l1`` = 0),
in the TRD and upper TOF between L1 and L2 (L1 sees the parent, L2-L8 the fragment, and a
kink spoils the inner+L1 rigidity), or deeper in the inner tracker. The fragment charge is
Z - 1 (25%), Z - 2 (15%) or lower (60%); the fragment takes its own mass (the most abundant
stable isotope, ``interactions.fragment_mass_numbers``) and the parent's velocity, so its
rigidity is R (A_F/A)(Z/Z_F). The other fragments (lumped, charge Z - Z_F) leave hits only
where they are resolved from the main track (``fragments.merge_distance_cm``); they are
reconstructed as a second track with an efficiency rising with their charge (light p and
alpha rarely), and leave debris clusters in the next layers and on-time TOF clusters in
proportion to their charge. The layer charges share a per-track component with a rare
exponential high excursion (``tracker.event_*``): a Landau-like tail that survives the
truncated mean, through which Si leaks into the P window (~2.2% of the MC P-selection
background).

Branches (``n`` entries each; float32 unless said; ``MISSING`` = -9999.0 where absent):

* ``trk_charge`` (n, 2, 9, 2): charge per [track (0 main, 1 second), layer L1..L9,
  side (0 = X/n-side, 1 = Y/p-side, bending)], calibrated so that MC gives ~Z. The second
  track is filled only when reconstructed (a fragment, or a low-charge noise track).
* ``trk_pos`` (n, 2, 9, 2): hit position (cm), x on side 0, y (bending) on side 1.
* ``trk_nclusters`` (n, 9, 2) int32: clusters per layer and side.
* ``rig_inner``, ``rig_inner_l1``: signed rigidity (GV) of the inner and inner+L1 fits.
* ``tof_beta``, ``tof_charge_upper``, ``tof_charge_lower``, ``tof_charge_p1``,
  ``tof_charge_p2``; ``tof_ontime_p1``, ``tof_ontime_p2``, ``tof_nused`` (int32).
* ``trk_charge_l1`` (mean of the L1 sides), ``trk_charge_inner`` (truncated mean of
  L2-L8, both sides): the standard-selection charges.
* ``trk_l1_ladder`` (int32): ladder of the main-track L1 hit (the ladder indexing of the
  charge gains, from x), -1 without an L1 hit; ``trk_nsecond`` (int32, 0 or 1):
  reconstructed second tracks; ``trk_extra_clusters`` (int32): clusters in L2-L4 not on
  the main track, both sides summed.
* truth: ``mc_Z`` (int32), ``mc_Z_l1``, ``mc_Z_inner`` (int32), ``mc_frag`` (int8: 0 none,
  1 above L1, 2 between L1 and L2, 3 deeper) in MC; the same content named ``hidden_Z``,
  ``hidden_Z_l1``, ``hidden_Z_inner``, ``hidden_frag`` in Data (evaluation only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from autopid.config._loader import StrictModel
from autopid.physics.ams import (
    BENDING_CONSTANT,
    GOLDHABER_SIGMA0_GEV,
    LAMBDA_POWER,
    LAMBDA_REF_A,
    LAMBDA_REF_GCM2,
    LAYER_CHARGE_SIGMA_CONST,
    LAYER_CHARGE_SIGMA_SLOPE,
    LAYER_Z_CM,
    MS_COEFFICIENT,
    N_LAYERS,
    NUCLEI,
    SPEED_OF_LIGHT_CM_PER_PS,
    STABLE_MASS_NUMBER,
    TOF_SIGMA_CONST_PS,
    TOF_SIGMA_Z_PS,
    bending_power,
    beta_from_rigidity,
    fragment_mass_number,
    fragment_rigidity,
    goldhaber_pt_sigma,
    interaction_length,
    interaction_probability,
    inverse_rigidity_sigma,
    layer_charge_sigma,
    momentum_gev,
    tof_time_sigma_ps,
)
from autopid.simulate._common import HIDDEN_PREFIX, Experiment

MISSING: Final[float] = -9999.0
N_SIDES: Final[int] = 2
N_TRACKS: Final[int] = 2
N_TOF_PLANES: Final[int] = 4
INNER_LAYERS: Final[slice] = slice(1, 8)  # L2..L8

FRAG_NONE: Final[int] = 0
FRAG_ABOVE_L1: Final[int] = 1
FRAG_L1_L2: Final[int] = 2
FRAG_DEEP: Final[int] = 3

DEFAULT_SPECIES: tuple[str, ...] = ("silicon", "phosphorus", "sulfur", "chlorine")


# --------------------------------------------------------------------------- config


class SpectrumConfig(StrictModel):
    """Rigidity spectrum of the primary nuclei."""

    shape: Literal["log_flat", "power_law"] = Field(
        "log_flat",
        description="log_flat: dN/dlogR flat in [r_min, r_max]; power_law: R^-index above a "
                    "per-event cutoff uniform in [cutoff_min, cutoff_max]",
    )
    r_min_gv: float = Field(2.0, gt=0, description="lowest rigidity (GV)")
    r_max_gv: float = Field(2000.0, gt=0, description="highest rigidity (GV)")
    index: float = Field(2.7, gt=1, description="spectral index of power_law, dN/dR ~ R^-index")
    cutoff_min_gv: float = Field(
        3.0, gt=0, description="lowest geomagnetic cutoff of power_law (GV)"
    )
    cutoff_max_gv: float = Field(
        15.0, gt=0, description="highest geomagnetic cutoff of power_law (GV)"
    )

    @model_validator(mode="after")
    def _check(self) -> SpectrumConfig:
        if self.r_min_gv >= self.r_max_gv:
            raise ValueError("r_min_gv must be below r_max_gv")
        if not self.cutoff_min_gv <= self.cutoff_max_gv < self.r_max_gv:
            raise ValueError("need cutoff_min_gv <= cutoff_max_gv < r_max_gv")
        return self


class ChargeCalibrationConfig(StrictModel):
    """Tracker charge calibration of one domain (charge units)."""

    ladder_gain_rms: float = Field(
        0.0, ge=0, description="rms of the per-ladder, per-side relative charge gain, fixed "
                               "per period"
    )
    layer_gain_spread: float = Field(
        0.0, ge=0, description="per-layer relative gain, uniform in +-spread, fixed per period"
    )
    sigma_scale: float = Field(1.0, gt=0, description="factor on the layer charge resolution")
    y_nonlinearity: float = Field(
        0.003, ge=0,
        description="residual Y-side (p-side) non-linearity c: the Y charge is lowered by "
                    "c (Z - onset)^2 above tracker.y_nonlinearity_onset_z (default)",
    )


def _mc_composition() -> dict[str, float]:
    return {name: 1.0 for name in NUCLEI}


def _data_composition() -> dict[str, float]:
    return {"silicon": 100.0, "phosphorus": 3.0, "sulfur": 16.0, "chlorine": 3.0,
            "argon": 5.0, "potassium": 3.0, "calcium": 7.0, "iron": 80.0}


class DomainConfig(StrictModel):
    """The values that differ between MC and Data."""

    composition: dict[str, float] = Field(
        default_factory=_mc_composition,
        description="relative abundance per species (only the species in use count)",
    )
    spectrum: SpectrumConfig = Field(
        default_factory=SpectrumConfig, description="rigidity spectrum"
    )
    charge: ChargeCalibrationConfig = Field(
        default_factory=ChargeCalibrationConfig, description="tracker charge calibration"
    )
    hit_efficiency: float = Field(
        0.98, ge=0, le=1, description="probability of a hit per layer and side"
    )
    noise_clusters_mean: float = Field(
        0.1, ge=0, description="mean of the Poisson number of noise clusters per layer and side"
    )
    noise_track_prob: float = Field(
        0.01, ge=0, le=1,
        description="probability of a low-charge noise second track when no fragment "
                    "track is there (default)",
    )
    cross_section_scale: float = Field(
        1.0, gt=0, description="factor on the nuclear interaction cross section (1/lambda)"
    )
    above_l1_prob: float = Field(
        0.03, ge=0, le=1, description="probability of an interaction above L1 (irreducible)"
    )
    tof_charge_scale: float = Field(1.0, gt=0, description="factor on the TOF charge")
    tof_time_sigma_scale: float = Field(
        1.0, gt=0, description="factor on the TOF time resolution (default)"
    )
    rigidity_sigma_scale: float = Field(
        1.0, gt=0, description="factor on the rigidity resolution sigma(1/R)"
    )
    rigidity_offset_per_tv: float = Field(
        0.0, description="offset of the measured 1/R of both fits (1/TV; alignment)"
    )

    @field_validator("composition")
    @classmethod
    def _known_species(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(NUCLEI))
        if unknown:
            raise ValueError(f"unknown species {unknown}; known: {sorted(NUCLEI)}")
        if any(w < 0 for w in value.values()):
            raise ValueError("abundances must be >= 0")
        return value


def _data_defaults() -> DomainConfig:
    return DomainConfig(
        composition=_data_composition(),
        spectrum=SpectrumConfig(shape="power_law"),
        charge=ChargeCalibrationConfig(
            ladder_gain_rms=0.025, layer_gain_spread=0.01, sigma_scale=1.15,
            y_nonlinearity=0.005,
        ),
        hit_efficiency=0.96,
        noise_clusters_mean=0.2,
        noise_track_prob=0.02,
        cross_section_scale=1.08,
        above_l1_prob=0.035,
        tof_charge_scale=1.02,
        rigidity_sigma_scale=1.05,
        rigidity_offset_per_tv=0.03,
    )


class DriftConfig(StrictModel):
    """Per-period random drift of the Data calibration (all runs of a period share it)."""

    layer_gain_sigma: float = Field(
        0.005, ge=0, description="rms of the per-layer relative charge gain drift (default)"
    )
    tof_charge_scale_sigma: float = Field(
        0.005, ge=0, description="rms of the relative TOF charge scale drift (default)"
    )
    rigidity_offset_sigma_per_tv: float = Field(
        0.01, ge=0, description="rms of the 1/R offset drift (1/TV, default)"
    )


class GeometryConfig(StrictModel):
    layer_z_cm: tuple[float, ...] = Field(
        LAYER_Z_CM, description="z of layers L1..L9 (cm), top to bottom"
    )
    l1_half_width_cm: float = Field(
        45.0, gt=0, description="tracks enter L1 uniformly in |x|, |y| < this (default)"
    )
    l9_half_width_cm: float = Field(
        45.0, gt=0, description="tracks cross L9 uniformly in |x|, |y| < this (default)"
    )
    layer_half_width_cm: float = Field(
        60.0, gt=0, description="sensitive half width of a layer, for second tracks (default)"
    )
    ladders_per_layer: int = Field(
        8, ge=1, le=64, description="ladders per layer and side, side by side along x (default)"
    )
    magnet_z_top_cm: float = Field(40.0, description="top of the uniform field region (cm)")
    magnet_z_bottom_cm: float = Field(
        -40.0, description="bottom of the uniform field region (cm)"
    )
    field_t: float = Field(0.14, gt=0, description="magnetic field along x (T)")
    tof_plane_z_cm: tuple[float, float, float, float] = Field(
        (65.0, 62.0, -62.0, -65.0), description="z of TOF planes 1-4 (cm, default)"
    )
    trd_z_cm: tuple[float, float] = Field(
        (80.0, 150.0), description="(bottom, top) of the TRD (cm, default)"
    )
    position_sigma_x_um: float = Field(
        30.0, gt=0, description="hit resolution of the X (n) side (micron, default)"
    )
    position_sigma_y_um: float = Field(
        10.0, gt=0, description="hit resolution of the Y (p, bending) side (micron, default)"
    )

    @model_validator(mode="after")
    def _check(self) -> GeometryConfig:
        z = np.asarray(self.layer_z_cm)
        if z.size != N_LAYERS or np.any(np.diff(z) >= 0):
            raise ValueError(f"layer_z_cm needs {N_LAYERS} values decreasing from L1 to L9")
        if not self.magnet_z_bottom_cm < self.magnet_z_top_cm:
            raise ValueError("magnet_z_bottom_cm must be below magnet_z_top_cm")
        p1, p2, p3, p4 = self.tof_plane_z_cm
        if not (z[0] > self.trd_z_cm[1] > self.trd_z_cm[0] > p1 > p2 > z[1]
                and z[7] > p3 > p4 > z[8]):
            raise ValueError("need L1 > TRD > TOF planes 1, 2 > L2 and L8 > TOF planes 3, 4 > L9")
        return self


class TrackerConfig(StrictModel):
    charge_sigma_const: float = Field(
        LAYER_CHARGE_SIGMA_CONST, gt=0, description="a of sigma(Z) = sqrt(a^2 + (b Z)^2)"
    )
    charge_sigma_slope: float = Field(
        LAYER_CHARGE_SIGMA_SLOPE, ge=0, description="b of sigma(Z) = sqrt(a^2 + (b Z)^2)"
    )
    l1_sigma_factor: float = Field(1.2, gt=0, description="L1 charge resolution factor")
    tail_fraction: float = Field(
        0.03, ge=0, le=1, description="fraction of layer charges with a high (delta-ray) tail"
    )
    tail_scale_sigma: float = Field(
        3.0, gt=0, description="mean of the exponential high tail, in units of sigma (default)"
    )
    event_sigma_fraction: float = Field(
        0.1, ge=0, lt=1,
        description="share of the layer-charge variance common to all layers and sides of a "
                    "track (path length, velocity correction, temperature), so the truncated "
                    "mean averages less of it away (default)",
    )
    event_tail_prob: float = Field(
        0.013, ge=0, le=1,
        description="probability of a high excursion common to all layer charges of a track "
                    "(Landau-like tail that survives the truncated mean; tuned so Si is ~2.2% "
                    "of the MC phosphorus-selection background, default)",
    )
    event_tail_scale_sigma: float = Field(
        1.6, gt=0,
        description="mean of that exponential excursion, in units of the layer sigma(Z) "
                    "(default)",
    )
    y_nonlinearity_onset_z: float = Field(
        12.0, ge=0, description="Z above which the Y-side non-linearity starts (default)"
    )


class InteractionConfig(StrictModel):
    l1_l2_material_gcm2: float = Field(
        5.0, ge=0, description="grammage between L1 and L2 (TRD + upper TOF), g/cm^2"
    )
    inner_material_gcm2: float = Field(
        0.9, ge=0,
        description="grammage from L2 to L8 for deeper interactions (default: ~4% for Si)",
    )
    deep_first_layer: int = Field(
        3, ge=3, le=9, description="first layer that can see a deeper interaction's fragment"
    )
    deep_last_layer: int = Field(
        8, ge=3, le=9, description="last layer that can be the first to see it (default)"
    )
    lambda_ref_gcm2: float = Field(
        LAMBDA_REF_GCM2, gt=0, description="lambda(A) = lambda_ref (A_ref/A)^power: lambda_ref"
    )
    lambda_ref_a: float = Field(LAMBDA_REF_A, gt=0, description="A_ref")
    lambda_power: float = Field(LAMBDA_POWER, description="power")
    above_l1_height_cm: float = Field(
        30.0, gt=0, description="interactions above L1 happen uniformly up to this height (default)"
    )
    above_utof_fraction: float = Field(
        0.5, ge=0, le=1,
        description="fraction of L1-L2 interactions in the TRD, above the upper TOF (which then "
                    "sees the fragment); the rest happen below it (default)",
    )
    dz1_prob: float = Field(0.25, ge=0, le=1, description="fragment charge Z - 1")
    dz2_prob: float = Field(0.15, ge=0, le=1, description="fragment charge Z - 2")
    dz_large_prob: float = Field(
        0.60, ge=0, le=1, description="fragment charge Z - dZ, dZ uniform in 3..min(dz_max, Z-2)"
    )
    dz_max: int = Field(8, ge=3, description="largest charge change of a fragment")
    fragment_mass_numbers: tuple[int, ...] = Field(
        STABLE_MASS_NUMBER,
        description="mass number of a fragment of charge Z (entry Z - 1): the most abundant "
                    "stable isotope, capped at the parent's A less one nucleon per removed "
                    "charge; the fragment keeps the parent's velocity, so R_F = R (A_F/A)(Z/Z_F)",
    )
    goldhaber_sigma0_gev: float = Field(
        GOLDHABER_SIGMA0_GEV, ge=0,
        description="Goldhaber sigma0 of the fragment transverse momentum (GeV/c, default)",
    )

    @model_validator(mode="after")
    def _check(self) -> InteractionConfig:
        if abs(self.dz1_prob + self.dz2_prob + self.dz_large_prob - 1.0) > 1e-6:
            raise ValueError("dz1_prob + dz2_prob + dz_large_prob must be 1")
        if self.deep_first_layer > self.deep_last_layer:
            raise ValueError("deep_first_layer must not exceed deep_last_layer")
        z_max = max(z for z, _ in NUCLEI.values())
        table = self.fragment_mass_numbers
        if len(table) < z_max or any(a < z for z, a in enumerate(table, start=1)):
            raise ValueError(f"fragment_mass_numbers needs at least {z_max} entries (Z = 1..) "
                             "with A >= Z")
        return self


class FragmentsConfig(StrictModel):
    """What the tracker and the TOF see of an interaction's other fragments (all but the
    tracked one, lumped into one track of charge Z - Z_F).

    A second track is reconstructed with probability visibility(location) x
    eff(Z_other) when at least ``min_y_hits`` of its bending-side hits are resolved from the
    main track (farther than ``merge_distance_cm``): collimated fragments of a fast nucleus
    merge with it. Resolved hits of an unreconstructed fragment still count as clusters."""

    visibility_above_l1: float = Field(
        0.0, ge=0, le=1,
        description="share of interactions above L1 whose other fragments reach the tracker "
                    "and the TOF apart from the main track (hits, debris, second track, "
                    "on-time clusters); 0: the light, collimated fragments are lost or merged, "
                    "the interaction is irreducible by construction (default)",
    )
    visibility_l1_l2: float = Field(
        1.0, ge=0, le=1, description="the same for interactions between L1 and L2 (default)"
    )
    visibility_deep: float = Field(
        1.0, ge=0, le=1, description="the same for interactions in the inner tracker (default)"
    )
    merge_distance_cm: float = Field(
        0.15, ge=0,
        description="a fragment hit closer than this to the main track's on a side merges "
                    "into the main cluster (heavy-ion cluster and delta-ray halo, default)",
    )
    track_eff_max: float = Field(
        0.9, ge=0, le=1,
        description="track-finding efficiency of a resolved, high-charge second track (default)",
    )
    track_eff_z_half: float = Field(
        3.0, gt=0,
        description="other-fragment charge at which the finding efficiency is half of "
                    "track_eff_max; logistic in the charge (default)",
    )
    track_eff_z_width: float = Field(
        0.8, gt=0, description="width of that logistic in charge units (default)"
    )
    min_y_hits: int = Field(
        3, ge=2, le=N_LAYERS, description="resolved Y hits a second track needs (default)"
    )

    def visibility(self, frag: np.ndarray) -> np.ndarray:
        """Per-event visibility of the other fragments from the interaction category."""
        table = np.array([0.0, self.visibility_above_l1, self.visibility_l1_l2,
                          self.visibility_deep])
        return table[frag]

    def track_efficiency(self, z_other: np.ndarray) -> np.ndarray:
        """Finding efficiency of a resolved second track of charge ``z_other`` (0: none)."""
        z = np.asarray(z_other, dtype=np.float64)
        eff = self.track_eff_max / (1.0 + np.exp(-(z - self.track_eff_z_half)
                                                 / self.track_eff_z_width))
        return np.where(z > 0, eff, 0.0)


class ClustersConfig(StrictModel):
    debris_per_charge_min: float = Field(
        0.2, ge=0,
        description="least mean debris clusters per side in the first layer after a visible "
                    "interaction, per unit of other-fragment charge Z - Z_F (uniform per "
                    "event); dZ = 8 gives the table's 1.5-3 (default)",
    )
    debris_per_charge_max: float = Field(
        0.375, ge=0, description="largest mean debris clusters per side there, per unit charge"
    )
    fragment_fade: float = Field(
        0.5, ge=0, le=1, description="factor on the extra clusters per layer deeper (default)"
    )
    fragment_layers: int = Field(
        3, ge=1, le=N_LAYERS, description="layers with extra clusters (L2-L4 for L1-L2)"
    )
    noise_track_hit_prob: float = Field(
        0.7, ge=0, le=1, description="hit probability per layer and side of a noise track (default)"
    )
    noise_track_charge: float = Field(
        1.0, gt=0, description="true charge of a noise track (default)"
    )

    @model_validator(mode="after")
    def _check(self) -> ClustersConfig:
        if self.debris_per_charge_min > self.debris_per_charge_max:
            raise ValueError("debris_per_charge_min must not exceed debris_per_charge_max")
        return self


class TofConfig(StrictModel):
    time_sigma_z_ps: float = Field(
        TOF_SIGMA_Z_PS, ge=0, description="sigma_t = sqrt((a/Z)^2 + b^2): a (ps)"
    )
    time_sigma_const_ps: float = Field(TOF_SIGMA_CONST_PS, ge=0, description="b (ps)")
    charge_sigma: float = Field(0.35, gt=0, description="charge resolution of one plane")
    plane_efficiency: float = Field(
        0.98, ge=0, le=1, description="probability of a cluster per plane (default)"
    )
    min_planes: int = Field(
        3, ge=2, le=4, description="planes required by the trigger (3 of 4)"
    )
    outlier_nsigma: float = Field(
        3.5, gt=0, description="a plane this far from the others is not used for the charge"
    )
    ontime_noise_mean: float = Field(
        0.05, ge=0, description="mean extra on-time clusters per plane, Poisson (default)"
    )
    ontime_per_fragment_charge: float = Field(
        0.25, ge=0,
        description="mean extra on-time clusters on a plane below a visible interaction, per "
                    "unit of other-fragment charge (default)",
    )


class RigidityConfig(StrictModel):
    mdr_inner_tv: float = Field(0.4, gt=0, description="MDR of the inner fit (TV)")
    mdr_inner_l1_tv: float = Field(1.5, gt=0, description="MDR of the inner+L1 fit (TV)")
    ms_coefficient: float = Field(
        MS_COEFFICIENT, ge=0, description="c of sigma(1/R) = sqrt(MDR^-2 + (c/(beta R))^2)"
    )
    kink_weight_l1: float = Field(
        0.5, ge=0,
        description="share of a L1-L2 kink's L1 displacement absorbed into the inner+L1 "
                    "curvature (default)",
    )
    kink_weight_inner: float = Field(
        0.3, ge=0, description="share of a deeper kink absorbed into the curvature (default)"
    )


class AmsSimConfig(StrictModel):
    """Configuration of the AMS-like nuclei simulator (physics.md, AMS table)."""

    species: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SPECIES),
        description=f"nuclei to generate, from {sorted(NUCLEI)}",
    )
    mc: DomainConfig = Field(
        default_factory=DomainConfig,
        description="MC: balanced composition, flat in log R 2-2000 GV, efficiency 98%",
    )
    data: DomainConfig = Field(
        default_factory=_data_defaults,
        description="Data: Si:P:S:Cl 100:3:16:3, R^-2.7 above a 3-15 GV cutoff, ladder gains "
                    "2.5%, layers +-1%, sigma x1.15, efficiency 96%, noise 0.2, cross "
                    "section x1.08, above-L1 3.5%, TOF charge +2%, rigidity x1.05 and +0.03/TV",
    )
    drift: DriftConfig = Field(default_factory=DriftConfig, description="per-period Data drift")
    geometry: GeometryConfig = Field(
        default_factory=GeometryConfig, description="layout, field, hit resolution"
    )
    tracker: TrackerConfig = Field(
        default_factory=TrackerConfig, description="layer charge response"
    )
    interactions: InteractionConfig = Field(
        default_factory=InteractionConfig, description="nuclear interactions and fragments"
    )
    fragments: FragmentsConfig = Field(
        default_factory=FragmentsConfig,
        description="visibility and reconstruction of the other fragments",
    )
    clusters: ClustersConfig = Field(
        default_factory=ClustersConfig, description="extra clusters and noise tracks"
    )
    tof: TofConfig = Field(default_factory=TofConfig, description="TOF time and charge")
    rigidity: RigidityConfig = Field(
        default_factory=RigidityConfig, description="rigidity resolution"
    )

    @model_validator(mode="after")
    def _check(self) -> AmsSimConfig:
        if not self.species:
            raise ValueError("species must not be empty")
        unknown = sorted(set(self.species) - set(NUCLEI))
        if unknown:
            raise ValueError(f"unknown species {unknown}; known: {sorted(NUCLEI)}")
        if len(set(self.species)) != len(self.species):
            raise ValueError("species must not repeat")
        for name, dom in (("mc", self.mc), ("data", self.data)):
            missing = [s for s in self.species if s not in dom.composition]
            if missing:
                raise ValueError(f"{name}.composition has no abundance for {missing}")
            if sum(dom.composition[s] for s in self.species) <= 0:
                raise ValueError(f"{name}.composition: the species in use have no abundance")
        return self


# --------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class PeriodDraws:
    """Random numbers of one period, drawn before any event (MC draws them too)."""

    ladder: np.ndarray  # (layers, ladders, sides) standard normals
    layer: np.ndarray  # (layers,) uniform in [-1, 1]
    drift_layer: np.ndarray  # (layers,) standard normals
    drift_tof: float
    drift_rigidity: float


def draw_period_values(cfg: AmsSimConfig, period_rng: np.random.Generator) -> PeriodDraws:
    """Always the same draws for a configuration, whatever the domain or the run size."""
    ladder = period_rng.standard_normal((N_LAYERS, cfg.geometry.ladders_per_layer, N_SIDES))
    layer = period_rng.uniform(-1.0, 1.0, N_LAYERS)
    drift = period_rng.standard_normal(N_LAYERS + 2)
    return PeriodDraws(ladder, layer, drift[:N_LAYERS], float(drift[N_LAYERS]),
                       float(drift[N_LAYERS + 1]))


@dataclass(frozen=True)
class Calibration:
    """The calibration a run actually has."""

    domain: DomainConfig
    gain: np.ndarray  # (layers, ladders, sides) relative charge gain
    tof_charge_scale: float
    inv_rigidity_offset: float  # 1/GV


def resolve_calibration(
    cfg: AmsSimConfig, domain: Literal["mc", "data"], period_rng: np.random.Generator
) -> Calibration:
    """``cfg.mc`` or ``cfg.data`` with the period's ladder and layer gains (and, for Data,
    the period drift)."""
    if domain not in ("mc", "data"):
        raise ValueError(f"domain must be 'mc' or 'data', got {domain!r}")
    draws = draw_period_values(cfg, period_rng)  # for MC too: the same use of period_rng
    dom = cfg.mc if domain == "mc" else cfg.data
    layer_gain = 1.0 + dom.charge.layer_gain_spread * draws.layer
    tof_scale = dom.tof_charge_scale
    offset_tv = dom.rigidity_offset_per_tv
    if domain == "data":
        layer_gain = layer_gain * (1.0 + cfg.drift.layer_gain_sigma * draws.drift_layer)
        tof_scale *= 1.0 + cfg.drift.tof_charge_scale_sigma * draws.drift_tof
        offset_tv += cfg.drift.rigidity_offset_sigma_per_tv * draws.drift_rigidity
    gain = (1.0 + dom.charge.ladder_gain_rms * draws.ladder) * layer_gain[:, None, None]
    return Calibration(dom, gain, float(tof_scale), offset_tv / 1000.0)


# --------------------------------------------------------------------------- pieces


@dataclass(frozen=True)
class Primaries:
    z: np.ndarray  # int64
    a: np.ndarray  # int64
    rigidity: np.ndarray  # GV, true, positive
    beta: np.ndarray


@dataclass(frozen=True)
class Interactions:
    frag: np.ndarray  # int8 category, FRAG_*
    z_int: np.ndarray  # z of the interaction (cm); -inf without one
    z_frag: np.ndarray  # charge after the interaction (Z without one)
    a_frag: np.ndarray  # its own mass number (A without one)
    rigidity_frag: np.ndarray  # GV, true, of the tracked fragment (the primary's without one)
    z_other: np.ndarray  # charge of the other fragments, lumped (0 without one)
    theta: np.ndarray  # (n, 2) kink of the main track in x and y (rad)
    theta_other: np.ndarray  # (n, 2) direction change of the other fragment (rad)
    rigidity_other: np.ndarray  # GV (inf without one)
    visible: np.ndarray  # bool: the other fragments reach the detectors apart from the main


def _draw_primaries(
    cfg: AmsSimConfig, dom: DomainConfig, n: int, rng: np.random.Generator
) -> Primaries:
    weights = np.array([dom.composition[s] for s in cfg.species], dtype=np.float64)
    idx = rng.choice(len(cfg.species), size=n, p=weights / weights.sum())
    za = np.array([NUCLEI[s] for s in cfg.species], dtype=np.int64)
    z, a = za[idx, 0], za[idx, 1]
    rig = _draw_rigidity(dom.spectrum, n, rng)
    return Primaries(z, a, rig, beta_from_rigidity(rig, z, a))


def _draw_rigidity(spec: SpectrumConfig, n: int, rng: np.random.Generator) -> np.ndarray:
    """Inverse-CDF sampling: flat in log R, or R^-index between the event's cutoff and r_max."""
    u = rng.random(n)
    if spec.shape == "log_flat":
        return spec.r_min_gv * (spec.r_max_gv / spec.r_min_gv) ** u
    cutoff = rng.uniform(spec.cutoff_min_gv, spec.cutoff_max_gv, n)
    lo = np.maximum(cutoff, spec.r_min_gv)
    g = 1.0 - spec.index
    return (lo**g + u * (spec.r_max_gv**g - lo**g)) ** (1.0 / g)


def _draw_line(
    geo: GeometryConfig, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Straight line through a point of L1 and a point of L9: x1, y1, dx/dz, dy/dz.

    Joining two points inside the L1 and L9 squares keeps every layer in between inside
    the acceptance without a rejection loop."""
    z = geo.layer_z_cm
    top = rng.uniform(-geo.l1_half_width_cm, geo.l1_half_width_cm, (2, n))
    bottom = rng.uniform(-geo.l9_half_width_cm, geo.l9_half_width_cm, (2, n))
    slope = (top - bottom) / (z[0] - z[-1])
    return top[0], top[1], slope[0], slope[1]


def _fragment_charge(
    inter: InteractionConfig, z: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    u = rng.random(z.size)
    high = np.maximum(np.minimum(inter.dz_max, z - 2), 3)
    large = rng.integers(3, high + 1)
    dz = np.where(u < inter.dz1_prob, 1, np.where(u < inter.dz1_prob + inter.dz2_prob, 2, large))
    return np.maximum(z - dz, 1)


def _interaction_z(
    cfg: AmsSimConfig, frag: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Where each category interacts; -inf (below everything) without an interaction."""
    geo, inter = cfg.geometry, cfg.interactions
    z = np.asarray(geo.layer_z_cm)
    n = frag.size
    u = rng.random((3, n))
    above = z[0] + inter.above_l1_height_cm * u[0]
    trd_lo, trd_hi = geo.trd_z_cm
    in_trd = trd_lo + (trd_hi - trd_lo) * u[1]
    # below the upper TOF planes, in their support and the material above L2
    below_utof = z[1] + (geo.tof_plane_z_cm[1] - z[1]) * u[1]
    l1_l2 = np.where(u[2] < inter.above_utof_fraction, in_trd, below_utof)
    # the first layer to see the fragment is uniform in deep_first..deep_last
    first = rng.integers(inter.deep_first_layer - 1, inter.deep_last_layer, n)
    deep = z[first] + (z[first - 1] - z[first]) * u[0]
    return np.select(
        [frag == FRAG_ABOVE_L1, frag == FRAG_L1_L2, frag == FRAG_DEEP],
        [above, l1_l2, deep], default=-np.inf,
    )


def _draw_interactions(
    cfg: AmsSimConfig, dom: DomainConfig, prim: Primaries, rng: np.random.Generator
) -> Interactions:
    """Category of the first interaction, where it happens, the fragments and their kinks."""
    inter = cfg.interactions
    n = prim.z.size
    lam = interaction_length(prim.a, inter.lambda_ref_gcm2, inter.lambda_ref_a,
                             inter.lambda_power) / dom.cross_section_scale
    p_above = dom.above_l1_prob
    p12 = (1.0 - p_above) * interaction_probability(inter.l1_l2_material_gcm2, lam)
    p_deep = (1.0 - p_above) * (1.0 - interaction_probability(inter.l1_l2_material_gcm2, lam)) \
        * interaction_probability(inter.inner_material_gcm2, lam)
    u = rng.random(n)
    frag = np.select([u < p_above, u < p_above + p12, u < p_above + p12 + p_deep],
                     [FRAG_ABOVE_L1, FRAG_L1_L2, FRAG_DEEP], default=FRAG_NONE).astype(np.int8)
    z_int = _interaction_z(cfg, frag, rng)

    has = frag != FRAG_NONE
    z_frag = np.where(has, _fragment_charge(inter, prim.z, rng), prim.z)
    # a fragment has its own mass (a stable isotope) and the parent's velocity: its
    # rigidity follows from its own A/Z
    a_frag = np.where(has, fragment_mass_number(z_frag, prim.z, prim.a,
                                                inter.fragment_mass_numbers), prim.a)
    r_frag = np.where(has, fragment_rigidity(prim.rigidity, prim.z, prim.a, z_frag, a_frag),
                      prim.rigidity)
    a_other = prim.a - a_frag
    z_other = prim.z - z_frag
    p = momentum_gev(prim.rigidity, prim.z)
    pt = goldhaber_pt_sigma(prim.a, a_frag, inter.goldhaber_sigma0_gev)[:, None] \
        * rng.standard_normal((n, 2))
    p_frag = p * a_frag / prim.a
    p_other = p * np.maximum(a_other, 1) / prim.a
    theta = np.where(has[:, None], pt / p_frag[:, None], 0.0)
    # the other fragment balances the transverse momentum
    theta_other = np.where(has[:, None], -pt / p_other[:, None], 0.0)
    rig_other = np.where(z_other > 0, p_other / np.maximum(z_other, 1), np.inf)
    visible = has & (rng.random(n) < cfg.fragments.visibility(frag))
    return Interactions(frag, z_int, z_frag, a_frag, r_frag, z_other, theta, theta_other,
                        rig_other, visible)


def _bend_profile(geo: GeometryConfig, z: np.ndarray) -> np.ndarray:
    """Integral of the uniform-field deflection, in cm^2: y = y_line + curvature * profile.

    Zero above the magnet, u^2/2 inside (u = depth below its top), linear below."""
    length = geo.magnet_z_top_cm - geo.magnet_z_bottom_cm
    depth = geo.magnet_z_top_cm - z
    inside = np.clip(depth, 0.0, length)
    return 0.5 * inside**2 + length * np.maximum(depth - length, 0.0)


def _bend_slope(geo: GeometryConfig, z: np.ndarray) -> np.ndarray:
    """Derivative of ``_bend_profile`` with depth (cm)."""
    length = geo.magnet_z_top_cm - geo.magnet_z_bottom_cm
    return np.clip(geo.magnet_z_top_cm - z, 0.0, length)


def _curvature_per_cm(geo: GeometryConfig, rigidity: np.ndarray) -> np.ndarray:
    """d2y/dz2 in the field (1/cm): K B / R, positive nuclei bending towards +y."""
    return BENDING_CONSTANT * geo.field_t / rigidity / 100.0


@dataclass(frozen=True)
class Track:
    x: np.ndarray  # (n, layers) true positions (cm)
    y: np.ndarray
    hit: np.ndarray  # (n, layers, sides) bool
    charge: np.ndarray  # (n, layers) true charge crossing each layer


def _ladder_index(geo: GeometryConfig, x: np.ndarray) -> np.ndarray:
    width = 2.0 * geo.layer_half_width_cm / geo.ladders_per_layer
    idx = np.floor((x + geo.layer_half_width_cm) / width).astype(np.int64)
    return np.clip(idx, 0, geo.ladders_per_layer - 1)


def _measure_charge(
    cfg: AmsSimConfig, cal: Calibration, track: Track, rng: np.random.Generator
) -> np.ndarray:
    """Charge per layer and side: gain x response + sigma(Z) x (independent Gaussian and
    delta-ray tail per layer and side + a component common to the whole track).

    The common component (a share of the variance plus a rare exponential high excursion)
    correlates the layers, so the truncated mean keeps a Landau-like high tail."""
    trk, dom = cfg.tracker, cal.domain
    z_true = track.charge
    n = z_true.shape[0]
    shape = z_true.shape + (N_SIDES,)
    sigma = layer_charge_sigma(z_true, trk.charge_sigma_const, trk.charge_sigma_slope)
    sigma = sigma * dom.charge.sigma_scale
    sigma[:, 0] *= trk.l1_sigma_factor
    response = np.repeat(z_true[..., None].astype(np.float64), N_SIDES, axis=-1)
    # the p-side (Y) readout saturates at high Z; the calibration leaves a residual
    response[..., 1] -= dom.charge.y_nonlinearity * np.clip(
        z_true - trk.y_nonlinearity_onset_z, 0.0, None) ** 2
    ladder = _ladder_index(cfg.geometry, track.x)
    gain = cal.gain[np.arange(N_LAYERS)[None, :], ladder]  # (n, layers, sides)
    rho = trk.event_sigma_fraction
    noise = np.sqrt(1.0 - rho) * rng.standard_normal(shape)
    tail = (rng.random(shape) < trk.tail_fraction) * rng.exponential(trk.tail_scale_sigma, shape)
    common = np.sqrt(rho) * rng.standard_normal(n) + (
        rng.random(n) < trk.event_tail_prob) * rng.exponential(trk.event_tail_scale_sigma, n)
    return response * gain + sigma[..., None] * (noise + tail + common[:, None, None])


def _measure_position(
    geo: GeometryConfig, track: Track, rng: np.random.Generator
) -> np.ndarray:
    """(n, layers, sides): x on side 0, y on side 1, smeared by the side's resolution."""
    sigma = np.array([geo.position_sigma_x_um, geo.position_sigma_y_um]) * 1e-4
    pos = np.stack([track.x, track.y], axis=-1)
    return pos + sigma * rng.standard_normal(pos.shape)


def _bend_after(
    geo: GeometryConfig, z_int: np.ndarray, lever: np.ndarray
) -> np.ndarray:
    """(n, layers) bending profile from the interaction point on (cm^2): a particle leaving
    it on the parent's line with curvature c' instead of c is displaced by (c' - c) x this."""
    z = np.asarray(geo.layer_z_cm)
    zi = np.where(np.isfinite(z_int), z_int, geo.magnet_z_top_cm)[:, None]
    bend = _bend_profile(geo, z)[None, :]
    return np.where(lever > 0, bend - _bend_profile(geo, zi) - _bend_slope(geo, zi) * lever, 0.0)


def _main_track(
    cfg: AmsSimConfig, dom: DomainConfig, prim: Primaries, inter: Interactions,
    line: tuple[np.ndarray, ...], rng: np.random.Generator,
) -> tuple[Track, np.ndarray, np.ndarray]:
    """The tracked nucleus (kinked after the interaction, then bending with the fragment's
    own rigidity); also returns the lever arm (n, layers) of each layer below the
    interaction point (0 above it) and the bending profile after it."""
    geo = cfg.geometry
    z = np.asarray(geo.layer_z_cm)
    x1, y1, tx, ty = line
    dz = z - z[0]
    after = z[None, :] < inter.z_int[:, None]
    lever = np.where(after, inter.z_int[:, None] - z[None, :], 0.0)
    bend_after = _bend_after(geo, inter.z_int, lever)
    curv = _curvature_per_cm(geo, prim.rigidity)[:, None]
    curv_frag = _curvature_per_cm(geo, inter.rigidity_frag)[:, None]
    bend = _bend_profile(geo, z)
    x = x1[:, None] + tx[:, None] * dz + inter.theta[:, :1] * lever
    y = (y1[:, None] + ty[:, None] * dz + curv * bend + (curv_frag - curv) * bend_after
         + inter.theta[:, 1:] * lever)
    hit = rng.random((prim.z.size, N_LAYERS, N_SIDES)) < dom.hit_efficiency
    charge = np.where(after, inter.z_frag[:, None], prim.z[:, None])
    return Track(x, y, hit, charge), lever, bend_after


def _second_track(
    cfg: AmsSimConfig, dom: DomainConfig, prim: Primaries, inter: Interactions,
    line: tuple[np.ndarray, ...], main: Track, lever: np.ndarray, bend_after: np.ndarray,
    rng: np.random.Generator,
) -> tuple[Track, np.ndarray]:
    """The reconstructed second track and the clusters of other fragments that were not.

    The other fragments (lumped, charge Z - Z_F) diverge from the interaction point when
    visible (``fragments.visibility_*``). A hit of theirs is a cluster of its own only when
    farther than ``merge_distance_cm`` from the main track's on that side; a second track
    is found with ``fragments.track_efficiency(Z - Z_F)`` when ``min_y_hits`` Y hits are
    resolved. Resolved hits of a fragment not found come back as loose clusters. Without
    a found fragment, now and then a low-charge noise track."""
    geo, clu, fr = cfg.geometry, cfg.clusters, cfg.fragments
    n = prim.z.size
    z = np.asarray(geo.layer_z_cm)
    x1, y1, tx, ty = line
    dz = z - z[0]
    bend = _bend_profile(geo, z)
    curv = _curvature_per_cm(geo, prim.rigidity)[:, None]
    curv_other = _curvature_per_cm(geo, inter.rigidity_other)[:, None]
    # the other fragment bends with its own rigidity from the interaction point on
    xf = x1[:, None] + tx[:, None] * dz + inter.theta_other[:, :1] * lever
    yf = (y1[:, None] + ty[:, None] * dz + curv * bend + (curv_other - curv) * bend_after
          + inter.theta_other[:, 1:] * lever)
    half = geo.layer_half_width_cm
    seen = ((lever > 0) & (inter.visible & (inter.z_other > 0))[:, None]
            & (np.abs(xf) < half) & (np.abs(yf) < half))
    gap = np.stack([np.abs(xf - main.x), np.abs(yf - main.y)], axis=-1)
    frag_hit = (seen[..., None] & (gap > fr.merge_distance_cm)
                & (rng.random((n, N_LAYERS, N_SIDES)) < dom.hit_efficiency))
    found = (frag_hit[..., 1].sum(axis=1) >= fr.min_y_hits) & (
        rng.random(n) < fr.track_efficiency(inter.z_other))
    loose = frag_hit & ~found[:, None, None]

    nx1, ny1, ntx, nty = _draw_line(geo, n, rng)
    xn = nx1[:, None] + ntx[:, None] * dz
    yn = ny1[:, None] + nty[:, None] * dz
    noise_hit = rng.random((n, N_LAYERS, N_SIDES)) < clu.noise_track_hit_prob
    has_noise = ~found & (rng.random(n) < dom.noise_track_prob)
    has_noise &= noise_hit[..., 1].sum(axis=1) >= 3

    f, nz = found[:, None], has_noise[:, None]
    x = np.where(f, xf, xn)
    y = np.where(f, yf, yn)
    hit = (f[..., None] & frag_hit) | (nz[..., None] & noise_hit)
    charge = np.where(f, inter.z_other[:, None].astype(np.float64), clu.noise_track_charge)
    return Track(x, y, hit, np.broadcast_to(charge, (n, N_LAYERS)).copy()), loose


def _cluster_counts(
    cfg: AmsSimConfig, dom: DomainConfig, inter: Interactions, lever: np.ndarray,
    hits: np.ndarray, loose: np.ndarray, rng: np.random.Generator,
) -> np.ndarray:
    """Track hits + loose fragment hits + Poisson noise + debris of a visible interaction,
    growing with the other fragments' charge and fading with depth after it."""
    clu = cfg.clusters
    n = inter.frag.size
    after = lever > 0
    first = np.argmax(after, axis=1)
    depth = np.arange(N_LAYERS)[None, :] - first[:, None]
    level = rng.uniform(clu.debris_per_charge_min, clu.debris_per_charge_max, n) \
        * inter.z_other * inter.visible
    near = after & (depth < clu.fragment_layers)
    extra_mean = np.where(near, level[:, None] * clu.fragment_fade ** np.maximum(depth, 0), 0.0)
    extra = rng.poisson(np.repeat(extra_mean[..., None], N_SIDES, axis=-1))
    noise = rng.poisson(dom.noise_clusters_mean, (n, N_LAYERS, N_SIDES))
    return (hits.sum(axis=1) + loose + noise + extra).astype(np.int32)


def _rigidities(
    cfg: AmsSimConfig, cal: Calibration, prim: Primaries, inter: Interactions,
    l1_y_hit: np.ndarray, rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Inner and inner+L1 fits: 1/R smeared by sigma(1/R), plus the kink an interaction
    leaves; a kink turns the track like extra bending, so it shifts the fitted 1/R."""
    rc, geo, dom = cfg.rigidity, cfg.geometry, cal.domain
    n = prim.z.size
    z = geo.layer_z_cm
    in_tracker = (inter.frag == FRAG_ABOVE_L1) | (inter.frag == FRAG_L1_L2)
    r_true = np.where(in_tracker, inter.rigidity_frag, prim.rigidity)
    power = bending_power(geo.field_t, geo.magnet_z_top_cm - geo.magnet_z_bottom_cm)
    centre = 0.5 * (geo.magnet_z_top_cm + geo.magnet_z_bottom_cm)
    theta_y = inter.theta[:, 1]
    # L1 sits on the parent line: its offset from the kinked inner track, seen from the
    # magnet, looks like a change of the bending angle
    l1_arm = np.where(inter.frag == FRAG_L1_L2, (z[0] - inter.z_int) / (z[0] - centre), 0.0)
    kink_l1 = rc.kink_weight_l1 * theta_y * l1_arm / power
    kink_deep = np.where(inter.frag == FRAG_DEEP, rc.kink_weight_inner * theta_y / power, 0.0)
    scale = dom.rigidity_sigma_scale
    s_in = scale * inverse_rigidity_sigma(r_true, prim.beta, rc.mdr_inner_tv, rc.ms_coefficient)
    s_l1 = scale * inverse_rigidity_sigma(r_true, prim.beta, rc.mdr_inner_l1_tv,
                                          rc.ms_coefficient)
    # the inner+L1 fit refines the inner one: as for nested efficient estimators, the
    # covariance of their errors is the smaller variance (they agree where MS dominates)
    rho = np.minimum(s_l1 / s_in, 1.0)
    g = rng.standard_normal((2, n))
    base = 1.0 / r_true + cal.inv_rigidity_offset + kink_deep
    inv_in = base + s_in * g[0]
    inv_l1 = base + kink_l1 + s_l1 * (rho * g[0] + np.sqrt(1.0 - rho * rho) * g[1])
    return 1.0 / inv_in, np.where(l1_y_hit, 1.0 / inv_l1, MISSING)


def _masked_mean(values: np.ndarray, mask: np.ndarray, axis: int) -> np.ndarray:
    count = mask.sum(axis=axis)
    total = np.where(mask, values, 0.0).sum(axis=axis)
    return np.where(count > 0, total / np.maximum(count, 1), MISSING)


def _tof(
    cfg: AmsSimConfig, cal: Calibration, prim: Primaries, inter: Interactions,
    line: tuple[np.ndarray, ...], rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Four planes: per-plane charge and time, beta from upper vs lower times, the charge
    of the upper and lower pairs from the planes that agree."""
    tof, dom = cfg.tof, cal.domain
    n = prim.z.size
    zp = np.asarray(cfg.geometry.tof_plane_z_cm)
    z_seen = np.where(zp[None, :] < inter.z_int[:, None], inter.z_frag[:, None], prim.z[:, None])
    present = rng.random((n, N_TOF_PLANES)) < tof.plane_efficiency
    # the trigger asks for min_planes of 4: keep only events that could have fired it
    present[present.sum(axis=1) < tof.min_planes] = True
    charge = z_seen * cal.tof_charge_scale + tof.charge_sigma * rng.standard_normal(present.shape)

    count = present.sum(axis=1)
    total = np.where(present, charge, 0.0).sum(axis=1)
    others = (total[:, None] - charge) / np.maximum(count[:, None] - 1, 1)
    dev = np.where(present, np.abs(charge - others), -1.0)
    worst = np.argmax(dev, axis=1)
    limit = tof.outlier_nsigma * tof.charge_sigma * np.sqrt(1.0 + 1.0 / np.maximum(count - 1, 1))
    drop = (count >= 3) & (dev[np.arange(n), worst] > limit)
    used = present.copy()
    used[np.flatnonzero(drop), worst[drop]] = False

    def pair_charge(planes: slice) -> np.ndarray:
        has_used = used[:, planes].any(axis=1)
        mask = np.where(has_used[:, None], used[:, planes], present[:, planes])
        return _masked_mean(charge[:, planes], mask, axis=1)

    _, _, tx, ty = line
    secant = np.sqrt(1.0 + tx * tx + ty * ty)
    speed = prim.beta * SPEED_OF_LIGHT_CM_PER_PS
    flight = (zp[0] - zp)[None, :] * (secant / speed)[:, None]
    t_sigma = dom.tof_time_sigma_scale * tof_time_sigma_ps(z_seen, tof.time_sigma_z_ps,
                                                            tof.time_sigma_const_ps)
    time = flight + t_sigma * rng.standard_normal(present.shape)
    up, lo = slice(0, 2), slice(2, 4)
    dt = _masked_mean(time[:, lo], present[:, lo], 1) - _masked_mean(time[:, up], present[:, up], 1)
    zpb = np.broadcast_to(zp, present.shape)
    dzp = _masked_mean(zpb[:, up], present[:, up], 1) - _masked_mean(zpb[:, lo], present[:, lo], 1)
    beta = dzp * secant / (SPEED_OF_LIGHT_CM_PER_PS * dt)

    # visible other fragments of an interaction above a plane fire more of its counters
    below_interaction = zp[None, :2] < inter.z_int[:, None]
    fragment_mean = tof.ontime_per_fragment_charge * inter.z_other * inter.visible
    ontime = (present[:, :2] + rng.poisson(tof.ontime_noise_mean, (n, 2))
              + below_interaction * rng.poisson(np.repeat(fragment_mean[:, None], 2, axis=1)))
    return {
        "tof_beta": beta,
        "tof_charge_upper": pair_charge(up),
        "tof_charge_lower": pair_charge(lo),
        "tof_charge_p1": np.where(present[:, 0], charge[:, 0], MISSING),
        "tof_charge_p2": np.where(present[:, 1], charge[:, 1], MISSING),
        "tof_ontime_p1": ontime[:, 0].astype(np.int32),
        "tof_ontime_p2": ontime[:, 1].astype(np.int32),
        "tof_nused": used.sum(axis=1).astype(np.int32),
    }


def truncated_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over the last axis of the values where ``mask``, without the lowest and the
    highest when at least 4 are there (robust against delta-ray tails); else MISSING."""
    count = mask.sum(axis=-1)
    trim = count >= 4
    total = np.where(mask, values, 0.0).sum(axis=-1)
    high = np.where(mask, values, -np.inf).max(axis=-1, initial=-np.inf)
    low = np.where(mask, values, np.inf).min(axis=-1, initial=np.inf)
    # untrimmed rows subtract nothing (and keep their +-inf out of the sum)
    total = total - np.where(trim, high, 0.0) - np.where(trim, low, 0.0)
    kept = np.where(trim, count - 2, count)
    return np.where(count > 0, total / np.maximum(kept, 1), MISSING)


def _charge_summaries(charge: np.ndarray, hit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """L1 charge (mean of the sides) and the inner truncated mean over per-layer means."""
    l1 = _masked_mean(charge[:, 0], hit[:, 0], axis=1)
    layer_mean = _masked_mean(charge[:, INNER_LAYERS], hit[:, INNER_LAYERS], axis=2)
    inner = truncated_mean(layer_mean, hit[:, INNER_LAYERS].any(axis=2))
    return l1, inner


# --------------------------------------------------------------------------- generator


def generate_ams(
    cfg: AmsSimConfig,
    n: int,
    *,
    domain: Literal["mc", "data"],
    rng: np.random.Generator,
    period_rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Generate ``n`` AMS-like events of one run (see the module docstring)."""
    cal = resolve_calibration(cfg, domain, period_rng)
    dom = cal.domain
    prim = _draw_primaries(cfg, dom, n, rng)
    line = _draw_line(cfg.geometry, n, rng)
    inter = _draw_interactions(cfg, dom, prim, rng)

    main, lever, bend_after = _main_track(cfg, dom, prim, inter, line, rng)
    second, loose = _second_track(cfg, dom, prim, inter, line, main, lever, bend_after, rng)
    tracks = (main, second)
    hit = np.stack([t.hit for t in tracks], axis=1)  # (n, tracks, layers, sides)
    charge = np.stack([_measure_charge(cfg, cal, t, rng) for t in tracks], axis=1)
    pos = np.stack([_measure_position(cfg.geometry, t, rng) for t in tracks], axis=1)
    nclusters = _cluster_counts(cfg, dom, inter, lever, hit, loose, rng)
    rig_inner, rig_inner_l1 = _rigidities(cfg, cal, prim, inter, main.hit[:, 0, 1], rng)
    tof = _tof(cfg, cal, prim, inter, line, rng)
    q_l1, q_inner = _charge_summaries(charge[:, 0], hit[:, 0])

    out: dict[str, np.ndarray] = {
        "trk_charge": np.where(hit, charge, MISSING).astype(np.float32),
        "trk_pos": np.where(hit, pos, MISSING).astype(np.float32),
        "trk_nclusters": nclusters,
        "rig_inner": rig_inner.astype(np.float32),
        "rig_inner_l1": rig_inner_l1.astype(np.float32),
    }
    for name, value in tof.items():
        out[name] = value if value.dtype == np.int32 else value.astype(np.float32)
    out["trk_charge_l1"] = q_l1.astype(np.float32)
    out["trk_charge_inner"] = q_inner.astype(np.float32)
    l1_hit = main.hit[:, 0].any(axis=1)
    out["trk_l1_ladder"] = np.where(
        l1_hit, _ladder_index(cfg.geometry, main.x[:, 0]), -1).astype(np.int32)
    out["trk_nsecond"] = hit[:, 1].any(axis=(1, 2)).astype(np.int32)
    near = slice(1, 4)  # L2-L4
    out["trk_extra_clusters"] = (nclusters[:, near].sum(axis=(1, 2))
                                 - main.hit[:, near].sum(axis=(1, 2))).astype(np.int32)

    prefix = "mc_" if domain == "mc" else HIDDEN_PREFIX
    out[prefix + "Z"] = prim.z.astype(np.int32)
    out[prefix + "Z_l1"] = main.charge[:, 0].astype(np.int32)
    # the charge most of L2-L8 sees: the one at L5, the middle of the seven
    out[prefix + "Z_inner"] = main.charge[:, 4].astype(np.int32)
    out[prefix + "frag"] = inter.frag.astype(np.int8)
    return out


AMS = Experiment(
    name="ams", tree="amstree", config_type=AmsSimConfig, generate=generate_ams,
    run_base=1_600_000_000,
)
