"""AMS-like simulator: real ROOT files, read back with uproot and checked like a physicist.

The numbers tested are those of the AMS table in physics.md, as configured by default in
``AmsSimConfig``; the Data period drift is on (it does not touch what is tested tightly).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import uproot

from autopid.config._loader import dump_yaml, validate_config
from autopid.errors import ConfigError
from autopid.physics.ams import (
    LAYER_Z_CM,
    NUCLEI,
    bending_power,
    beta_from_rigidity,
    goldhaber_pt_sigma,
    interaction_length,
    interaction_probability,
    inverse_rigidity_sigma,
    layer_charge_sigma,
    tof_time_sigma_ps,
)
from autopid.simulate._common import read_period_manifest, simulate_period
from autopid.simulate.ams import (
    AMS,
    FRAG_ABOVE_L1,
    FRAG_L1_L2,
    FRAG_NONE,
    MISSING,
    AmsSimConfig,
    DriftConfig,
    SpectrumConfig,
    generate_ams,
    resolve_calibration,
    truncated_mean,
)

Arrays = dict[str, np.ndarray]

CFG = AmsSimConfig()
EVENTS = 20_000
TRUTH = ("Z", "Z_l1", "Z_inner", "frag")
RECO = {
    "trk_charge": ((2, 9, 2), np.float32), "trk_pos": ((2, 9, 2), np.float32),
    "trk_nclusters": ((9, 2), np.int32), "rig_inner": ((), np.float32),
    "rig_inner_l1": ((), np.float32), "tof_beta": ((), np.float32),
    "tof_charge_upper": ((), np.float32), "tof_charge_lower": ((), np.float32),
    "tof_charge_p1": ((), np.float32), "tof_charge_p2": ((), np.float32),
    "tof_ontime_p1": ((), np.int32), "tof_ontime_p2": ((), np.int32),
    "tof_nused": ((), np.int32), "trk_charge_l1": ((), np.float32),
    "trk_charge_inner": ((), np.float32), "trk_l1_ladder": ((), np.int32),
    "trk_nsecond": ((), np.int32), "trk_extra_clusters": ((), np.int32),
}


def read_run(path: Path) -> Arrays:
    with uproot.open(path) as fh:
        return fh[AMS.tree].arrays(library="np")


def read_domain(period_dir: Path, domain: str) -> Arrays:
    """All runs of one domain, concatenated."""
    parts = [read_run(p) for p in sorted((period_dir / domain).glob("run*.root"))]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def truth(a: Arrays, name: str) -> np.ndarray:
    return a["mc_" + name] if "mc_" + name in a else a["hidden_" + name]


def robust_sigma(x: np.ndarray) -> float:
    q25, q75 = np.percentile(x, [25, 75])
    return float((q75 - q25) / 1.349)


def binomial_tol(p: float, n: int, k: float = 4.0) -> float:
    return k * np.sqrt(p * (1 - p) / n)


def gain_profile(a: Arrays) -> np.ndarray:
    """Mean measured/true charge of the main track per layer and side, unfragmented events."""
    keep = truth(a, "frag") == FRAG_NONE
    q = a["trk_charge"][keep, 0].astype(np.float64)
    ratio = q / truth(a, "Z")[keep, None, None]
    hit = q != MISSING
    return np.where(hit, ratio, 0.0).sum(axis=0) / hit.sum(axis=0)


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ams")


@pytest.fixture(scope="module")
def period(out: Path) -> Path:
    return simulate_period(AMS, CFG, out, "P2026a", runs=2, events_per_run=EVENTS, seed=1)


@pytest.fixture(scope="module")
def mc(period: Path) -> Arrays:
    return read_domain(period, "mc")


@pytest.fixture(scope="module")
def data(period: Path) -> Arrays:
    return read_domain(period, "data")


@pytest.fixture(scope="module", params=["mc", "data"])
def domain(request: pytest.FixtureRequest, mc: Arrays, data: Arrays) -> tuple[str, Arrays]:
    return request.param, mc if request.param == "mc" else data


# --------------------------------------------------------------------------- layout


def test_period_files_branches_and_truth(period: Path, mc: Arrays, data: Arrays) -> None:
    manifest = read_period_manifest(period)
    assert manifest is not None and manifest["tree"] == "amstree"
    assert len(manifest["files"]) == 4
    runs = np.unique(mc["run"])
    assert runs.size == 2 and runs[0] > 1_600_000_000
    for arrays in (mc, data):
        for name, (shape, dtype) in RECO.items():
            assert arrays[name].shape == (2 * EVENTS, *shape), name
            assert arrays[name].dtype == dtype, name
    # truth: visible in MC, hidden (evaluation only) in Data
    assert {"mc_" + t for t in TRUTH} <= set(mc)
    assert not any(k.startswith("hidden_") for k in mc)
    assert {"hidden_" + t for t in TRUTH} <= set(data)
    assert not any(k.startswith("mc_") for k in data)
    assert mc["mc_Z"].dtype == np.int32 and mc["mc_frag"].dtype == np.int8
    assert set(np.unique(mc["mc_frag"])) == {0, 1, 2, 3}


def test_missing_values_are_the_sentinel(domain: tuple[str, Arrays]) -> None:
    _, a = domain
    for name, value in a.items():
        if value.dtype.kind == "f":
            assert np.isfinite(value).all(), name
    charge, pos = a["trk_charge"], a["trk_pos"]
    assert np.array_equal(charge == MISSING, pos == MISSING)
    assert np.all(np.abs(pos[pos != MISSING]) < 70.0)
    assert np.all(charge[charge != MISSING] > -3.0)
    # most events have no second track; the unfragmented ones mostly never
    second = (charge[:, 1] != MISSING).any(axis=(1, 2))
    unfragmented = truth(a, "frag") == FRAG_NONE
    assert 0.002 < second[unfragmented].mean() < 0.04
    # the inner+L1 fit needs the bending-side L1 hit
    assert np.array_equal(a["rig_inner_l1"] == MISSING, charge[:, 0, 0, 1] == MISSING)
    assert not (a["rig_inner"] == MISSING).any() and not (a["trk_charge_inner"] == MISSING).any()
    l1_absent = (charge[:, 0, 0] == MISSING).all(axis=1)
    assert np.array_equal(a["trk_charge_l1"] == MISSING, l1_absent)


# --------------------------------------------------------------------------- tracker charge


def test_layer_charge_resolution_at_phosphorus(mc: Arrays) -> None:
    sel = (mc["mc_Z"] == 15) & (mc["mc_frag"] == FRAG_NONE)
    q = mc["trk_charge"][sel, 0]
    expected = layer_charge_sigma(15)
    assert expected == pytest.approx(0.27, abs=0.005)
    sigma = np.empty((9, 2))
    for layer in range(9):
        for side in range(2):
            x = q[:, layer, side]
            x = x[x != MISSING]
            assert np.median(x) == pytest.approx(15.0, abs=0.05)
            sigma[layer, side] = robust_sigma(x)
    # the 3% high tail widens the core a little
    assert sigma[1:] == pytest.approx(np.full((8, 2), expected), rel=0.07)
    assert sigma[0].mean() / sigma[1:].mean() == pytest.approx(1.2, abs=0.07)


def test_l1_charge_above_inner_charge_after_l1_l2_fragmentation(mc: Arrays) -> None:
    l1, inner = mc["trk_charge_l1"], mc["trk_charge_inner"]
    has = l1 != MISSING
    frag = mc["mc_frag"]
    z, z_l1, z_inner = mc["mc_Z"], mc["mc_Z_l1"], mc["mc_Z_inner"]
    f2 = has & (frag == FRAG_L1_L2)
    assert np.array_equal(z_l1[frag == FRAG_L1_L2], z[frag == FRAG_L1_L2])
    assert np.all(z_inner[frag == FRAG_L1_L2] < z[frag == FRAG_L1_L2])
    diff = (l1 - inner)[f2]
    assert np.mean(diff > 0.5) > 0.95
    assert diff.mean() == pytest.approx((z_l1 - z_inner)[f2].mean(), abs=0.05)
    # unfragmented: the same charge within the resolution of L1 and of the inner mean
    f0 = has & (frag == FRAG_NONE)
    diff0 = (l1 - inner)[f0]
    assert abs(np.median(diff0)) < 0.03
    assert robust_sigma(diff0) < 1.2 * layer_charge_sigma(17) / np.sqrt(2) + 0.05
    assert np.median(np.abs(inner[f0] - z[f0])) < 0.1
    # above L1 the fragment is all a tracker sees: irreducible
    f1 = frag == 1
    assert np.all(z_l1[f1] < z[f1]) and np.array_equal(z_l1[f1], z_inner[f1])


def test_fragment_charge_changes(mc: Arrays) -> None:
    f2 = mc["mc_frag"] == FRAG_L1_L2
    dz = (mc["mc_Z"] - mc["mc_Z_inner"])[f2]
    n = dz.size
    assert np.mean(dz == 1) == pytest.approx(0.25, abs=binomial_tol(0.25, n))
    assert np.mean(dz == 2) == pytest.approx(0.15, abs=binomial_tol(0.15, n))
    assert dz.min() >= 1 and dz.max() <= 8


# --------------------------------------------------------------------------- interactions


@pytest.mark.parametrize("name", ["mc", "data"])
def test_sulfur_fragments_between_l1_and_l2_as_1_minus_exp(
    name: str, mc: Arrays, data: Arrays
) -> None:
    a = mc if name == "mc" else data
    dom = CFG.mc if name == "mc" else CFG.data
    z_s, a_s = NUCLEI["sulfur"]
    sulfur = truth(a, "Z") == z_s
    lam = interaction_length(a_s) / dom.cross_section_scale
    p = (1 - dom.above_l1_prob) * interaction_probability(5.0, lam)
    assert interaction_length(32) == pytest.approx(20.3, abs=0.1)
    got = np.mean(truth(a, "frag")[sulfur] == FRAG_L1_L2)
    assert got == pytest.approx(p, abs=binomial_tol(p, int(sulfur.sum())))
    above = np.mean(truth(a, "frag") == 1)
    assert above == pytest.approx(dom.above_l1_prob, abs=binomial_tol(dom.above_l1_prob, a["run"].size))


def test_data_cross_section_scaled_by_1_08(data: Arrays) -> None:
    dom = CFG.data
    a_of_z = {z: a for z, a in NUCLEI.values()}
    mass = np.array([a_of_z[z] for z in data["hidden_Z"]])
    p = (1 - dom.above_l1_prob) * interaction_probability(5.0, interaction_length(mass) / 1.08)
    got = np.mean(data["hidden_frag"] == FRAG_L1_L2)
    # 3.5 standard errors: about half the effect of the 8% larger cross section
    assert got == pytest.approx(p.mean(), abs=3.5 * np.sqrt(np.sum(p * (1 - p))) / p.size)


def test_extra_clusters_in_l2_to_l4_after_fragmentation(mc: Arrays, data: Arrays) -> None:
    ncl, frag = mc["trk_nclusters"], mc["mc_frag"]
    dz = mc["mc_Z"] - mc["mc_Z_inner"]
    f0 = ncl[frag == FRAG_NONE].mean(axis=(0, 2))

    def excess(keep: np.ndarray) -> np.ndarray:
        return ncl[keep].mean(axis=(0, 2)) - f0

    f2 = excess(frag == FRAG_L1_L2)
    assert abs(f2[0]) < 0.05  # L1 sits before the interaction
    # debris + resolved hits of the other fragments: most in L2, fading with depth
    assert f2[1] > 0.8 and f2[1] > f2[2] > f2[3]
    # growing with the charge the other fragments carry: the table's 1.5-3 at dZ = 8
    light, heavy = excess((frag == FRAG_L1_L2) & (dz == 1)), excess((frag == FRAG_L1_L2) & (dz >= 6))
    assert light[1] < 0.6 and heavy[1] > 1.5
    # above L1: the other fragments are not seen apart from the main track
    assert np.abs(excess(frag == FRAG_ABOVE_L1)).max() < 0.05
    # noise clusters: Poisson 0.1 (MC) and 0.2 (Data) on top of the hit
    for a, noise in ((mc, 0.1), (data, 0.2)):
        keep = truth(a, "frag") == FRAG_NONE
        lone = (a["trk_charge"][keep, 1] == MISSING) & (a["trk_charge"][keep, 0] != MISSING)
        assert np.mean(a["trk_nclusters"][keep][lone]) == pytest.approx(1 + noise, abs=0.01)


def test_scalar_track_branches(domain: tuple[str, Arrays]) -> None:
    _, a = domain
    charge, ncl = a["trk_charge"], a["trk_nclusters"]
    main_hit, second_hit = charge[:, 0] != MISSING, charge[:, 1] != MISSING
    assert np.array_equal(a["trk_nsecond"], second_hit.any(axis=(1, 2)).astype(np.int32))
    extra = ncl[:, 1:4].sum(axis=(1, 2)) - main_hit[:, 1:4].sum(axis=(1, 2))
    assert np.array_equal(a["trk_extra_clusters"], extra)
    assert a["trk_extra_clusters"].min() >= 0
    ladder = a["trk_l1_ladder"]
    assert np.array_equal(ladder == -1, a["trk_charge_l1"] == MISSING)
    used = set(np.unique(ladder).tolist())
    assert -1 in used and used <= {-1, *range(CFG.geometry.ladders_per_layer)}
    assert len(used) >= 7  # tracks enter L1 within +-45 cm: ladders 1-6 of 0-7
    # the ladder follows the L1 x position (8 ladders of 15 cm side by side from -60 cm)
    x1 = charge[:, 0, 0, 0] != MISSING
    expected = np.floor((a["trk_pos"][x1, 0, 0, 0] + 60.0) / 15.0)
    assert np.mean(ladder[x1] == expected) > 0.999


def test_second_track_is_the_other_fragment() -> None:
    quiet = {"noise_track_prob": 0.0}
    cfg = CFG.model_copy(update={"mc": CFG.mc.model_copy(update=quiet)})
    mc = generate_ams(cfg, 40_000, domain="mc", rng=np.random.default_rng(4),
                      period_rng=np.random.default_rng(5))
    f2 = mc["mc_frag"] == FRAG_L1_L2
    second = mc["trk_charge"][f2, 1]
    assert np.all(second[:, 0] == MISSING)  # born below L1
    present = (second[:, 1:8] != MISSING).any(axis=(1, 2))
    assert np.array_equal(present, mc["trk_nsecond"][f2] == 1)
    # found only part of the time: light fragments merge with the main track or are missed
    assert 0.05 < present.mean() < 0.5
    other = (mc["mc_Z"] - mc["mc_Z_inner"])[f2][present]
    q = second[present][:, 1:8]
    hit = q != MISSING
    mean_q = np.where(hit, q, 0.0).sum(axis=(1, 2)) / hit.sum(axis=(1, 2))
    assert np.median(mean_q - other) == pytest.approx(0.0, abs=0.05)
    # it leaves the interaction point and diverges from the main track, farther than the
    # merge distance wherever it has a hit
    pos = mc["trk_pos"][f2][present]
    both = (pos[:, :, 1:8, 1] != MISSING).all(axis=1)
    gap = np.abs(pos[:, 0, 1:8, 1] - pos[:, 1, 1:8, 1])
    assert np.median(gap[both[:, 0] & both[:, -1], -1]) > np.median(gap[both[:, 0] & both[:, -1], 0])
    assert np.all(gap[both] > CFG.fragments.merge_distance_cm - 0.01)
    # no second track, no debris, no fragment from an interaction above L1
    assert not mc["trk_nsecond"][mc["mc_frag"] == FRAG_ABOVE_L1].any()


# --------------------------------------------------------------------------- composition, spectra


def test_composition_balanced_mc_and_shifted_data(mc: Arrays, data: Arrays) -> None:
    zs = [NUCLEI[s][0] for s in ("silicon", "phosphorus", "sulfur", "chlorine")]
    n = mc["run"].size
    for z in zs:
        assert np.mean(mc["mc_Z"] == z) == pytest.approx(0.25, abs=binomial_tol(0.25, n))
    weights = np.array([100.0, 3.0, 16.0, 3.0])
    for z, p in zip(zs, weights / weights.sum()):
        assert np.mean(data["hidden_Z"] == z) == pytest.approx(p, abs=binomial_tol(p, n))


def _log_slope(r: np.ndarray, lo: float, hi: float, bins: int = 10) -> tuple[float, np.ndarray]:
    edges = np.geomspace(lo, hi, bins + 1)
    counts, _ = np.histogram(r, edges)
    centre = np.sqrt(edges[1:] * edges[:-1])
    slope = np.polyfit(np.log(centre), np.log(counts / np.diff(edges)), 1, w=np.sqrt(counts))[0]
    return float(slope), counts


def test_rigidity_spectra(mc: Arrays, data: Arrays) -> None:
    # the inner+L1 fit resolves 5-150 GV well enough to see the true spectral shape
    r_mc = mc["rig_inner_l1"][mc["mc_frag"] == FRAG_NONE]
    slope, counts = _log_slope(r_mc, 5.0, 150.0, bins=6)
    assert slope == pytest.approx(-1.0, abs=0.1)  # flat in log R: dN/dR ~ 1/R
    assert counts.max() / counts.min() < 1.15
    assert np.mean(np.abs(mc["rig_inner"]) > 300) > 0.05  # MC reaches TV rigidities
    r_data = data["rig_inner_l1"][data["hidden_frag"] == FRAG_NONE]
    slope, _ = _log_slope(r_data, 20.0, 150.0)
    assert slope == pytest.approx(-2.7, abs=0.2)
    # nothing below the geomagnetic cutoffs (3-15 GV) but the resolution tail
    assert np.mean((data["rig_inner"] > 0) & (data["rig_inner"] < 2.5)) < 0.01
    assert np.mean((mc["rig_inner"] > 0) & (mc["rig_inner"] < 2.5)) > 0.03


def fixed_rigidity_config(r_gv: float) -> AmsSimConfig:
    """Phosphorus at one rigidity (within 0.1%), in both domains."""
    spectrum = SpectrumConfig(shape="log_flat", r_min_gv=0.999 * r_gv, r_max_gv=1.001 * r_gv,
                              cutoff_min_gv=0.5 * r_gv, cutoff_max_gv=0.5 * r_gv)
    only_p = {"phosphorus": 1.0}
    return AmsSimConfig(
        species=["phosphorus"],
        mc=CFG.mc.model_copy(update={"spectrum": spectrum, "composition": only_p}),
        data=CFG.data.model_copy(update={"spectrum": spectrum, "composition": only_p}),
    )


@pytest.mark.parametrize("r_gv", [3.0, 100.0])
def test_rigidity_resolution_follows_mdr_and_multiple_scattering(r_gv: float) -> None:
    cfg = fixed_rigidity_config(r_gv)
    z, a = NUCLEI["phosphorus"]
    beta = beta_from_rigidity(r_gv, z, a)
    sigma: dict[str, dict[str, float]] = {}
    for domain in ("mc", "data"):
        out = generate_ams(cfg, 20_000, domain=domain, rng=np.random.default_rng(2),
                           period_rng=np.random.default_rng(3))
        keep = truth(out, "frag") == FRAG_NONE
        keep_l1 = keep & (out["rig_inner_l1"] != MISSING)
        inv_in = 1 / out["rig_inner"][keep].astype(np.float64)
        inv_l1 = 1 / out["rig_inner_l1"][keep_l1].astype(np.float64)
        sigma[domain] = {"inner": robust_sigma(inv_in), "inner_l1": robust_sigma(inv_l1)}
        # unbiased within 4 standard errors of the median (plus the Data offset ~3e-5/GV)
        stat = 1.2533 * sigma[domain]["inner"] / np.sqrt(inv_in.size)
        assert np.median(inv_in) == pytest.approx(1 / r_gv, abs=4 * stat + 1e-4)
    for fit, mdr in (("inner", 0.4), ("inner_l1", 1.5)):
        expected = float(inverse_rigidity_sigma(r_gv, beta, mdr))
        assert sigma["mc"][fit] == pytest.approx(expected, rel=0.05), fit
        assert sigma["data"][fit] / sigma["mc"][fit] == pytest.approx(1.05, abs=0.03), fit


def test_inner_and_inner_l1_agree_unless_a_kink(mc: Arrays) -> None:
    # nested fits: their difference has the variance sigma_inner^2 - sigma_inner_l1^2,
    # in which multiple scattering cancels
    z, a = NUCLEI["phosphorus"]
    unfragmented = (mc["mc_frag"] == FRAG_NONE) & (mc["rig_inner_l1"] != MISSING)
    band = unfragmented & (mc["rig_inner"] > 40) & (mc["rig_inner"] < 60)
    diff = 1 / mc["rig_inner"][band] - 1 / mc["rig_inner_l1"][band]
    beta = beta_from_rigidity(50.0, z, a)
    expected = np.sqrt(inverse_rigidity_sigma(50.0, beta, 0.4) ** 2
                       - inverse_rigidity_sigma(50.0, beta, 1.5) ** 2)
    assert robust_sigma(diff) == pytest.approx(float(expected), rel=0.1)
    # fragmentation between L1 and L2 kinks the track: the inner+L1 fit disagrees more
    width = {}
    for frag in (FRAG_NONE, FRAG_L1_L2):
        keep = (mc["mc_frag"] == frag) & (mc["rig_inner_l1"] != MISSING)
        keep &= (mc["rig_inner"] > 10) & (mc["rig_inner"] < 30)
        width[frag] = robust_sigma(1 / mc["rig_inner_l1"][keep] - 1 / mc["rig_inner"][keep])
    assert width[FRAG_L1_L2] > 1.5 * width[FRAG_NONE]


# --------------------------------------------------------------------------- efficiency, TOF


def test_hit_efficiency(domain: tuple[str, Arrays]) -> None:
    name, a = domain
    eff = (CFG.mc if name == "mc" else CFG.data).hit_efficiency
    present = a["trk_charge"][:, 0] != MISSING
    assert present.mean() == pytest.approx(eff, abs=0.003)
    assert present.mean(axis=0) == pytest.approx(np.full((9, 2), eff), abs=0.006)


def test_tof(mc: Arrays, data: Arrays) -> None:
    frag, z = mc["mc_frag"], mc["mc_Z"]
    f0 = frag == FRAG_NONE
    assert np.median(mc["tof_charge_upper"][f0] - z[f0]) == pytest.approx(0.0, abs=0.02)
    assert np.median(mc["tof_charge_lower"][f0] - z[f0]) == pytest.approx(0.0, abs=0.02)
    # the upper TOF sits between L1 and L2: parent or fragment, about half and half
    f2 = frag == FRAG_L1_L2
    utof = mc["tof_charge_upper"][f2]
    parent_like = np.abs(utof - z[f2]) < np.abs(utof - mc["mc_Z_inner"][f2])
    assert parent_like.mean() == pytest.approx(0.5, abs=0.05)
    assert np.mean(mc["tof_ontime_p2"][f2]) > np.mean(mc["tof_ontime_p2"][f0]) + 0.3
    for a in (mc, data):
        assert set(np.unique(a["tof_nused"])) <= {2, 3, 4}
        fast = (a["rig_inner"] > 100) & (truth(a, "frag") == FRAG_NONE)
        assert np.median(a["tof_beta"][fast]) == pytest.approx(1.0, abs=0.005)
    slow = f0 & (mc["rig_inner_l1"] > 2.5) & (mc["rig_inner_l1"] < 3.5) & (z == 15)
    assert np.median(mc["tof_beta"][slow]) == pytest.approx(
        float(beta_from_rigidity(3.0, 15, 31)), abs=0.02)
    # Data TOF charge scale +2% (the period drift is 0.5%)
    d0 = data["hidden_frag"] == FRAG_NONE
    ratio = np.median(data["tof_charge_upper"][d0] / data["hidden_Z"][d0])
    assert ratio == pytest.approx(1.02, abs=0.015)


# --------------------------------------------------------------------------- calibration, seeds


def test_data_calibration_shared_by_runs_and_drifting_between_periods(
    period: Path, out: Path
) -> None:
    runs = [read_run(p) for p in sorted((period / "data").glob("run*.root"))]
    first, second = gain_profile(runs[0]), gain_profile(runs[1])
    assert np.abs(first - second).max() < 0.003
    assert np.abs(first - 1.0).max() > 0.01  # ladder and layer gains: not calibrated
    other = simulate_period(AMS, CFG, out, "P2026b", runs=1, events_per_run=EVENTS, seed=1)
    assert np.abs(gain_profile(read_domain(other, "data")) - first).max() > 0.01
    # MC is calibrated in every period
    assert np.abs(gain_profile(read_domain(other, "mc")) - 1.0).max() < 0.01


def test_period_values_do_not_depend_on_the_run() -> None:
    cal = resolve_calibration(CFG, "data", np.random.default_rng(5))
    again = resolve_calibration(CFG, "data", np.random.default_rng(5))
    assert np.array_equal(cal.gain, again.gain)
    relative = cal.gain / cal.gain.mean(axis=(1, 2), keepdims=True)
    assert 0.015 < relative.std() < 0.035  # ladder gains 2.5% rms
    assert np.all(resolve_calibration(CFG, "mc", np.random.default_rng(5)).gain == 1.0)
    # the period draws come first: the events of a run do not change them
    small = generate_ams(CFG, 10, domain="data", rng=np.random.default_rng(1),
                         period_rng=np.random.default_rng(5))
    large = generate_ams(CFG, 500, domain="data", rng=np.random.default_rng(1),
                         period_rng=np.random.default_rng(5))
    assert small["trk_charge"].shape == (10, 2, 9, 2)
    assert large["trk_charge"].shape == (500, 2, 9, 2)
    prng = np.random.default_rng(5)
    resolve_calibration(CFG, "mc", prng)
    after_mc = prng.random()
    prng = np.random.default_rng(5)
    resolve_calibration(CFG, "data", prng)
    assert prng.random() == after_mc


def test_drift_moves_the_data_calibration_only() -> None:
    drift = CFG.drift
    still = AmsSimConfig(drift=DriftConfig(layer_gain_sigma=0.0, tof_charge_scale_sigma=0.0,
                                           rigidity_offset_sigma_per_tv=0.0))
    layer, tof, offset = [], [], []
    for seed in range(40):
        moved = resolve_calibration(CFG, "data", np.random.default_rng(seed))
        fixed = resolve_calibration(still, "data", np.random.default_rng(seed))
        ratio = moved.gain / fixed.gain
        assert np.allclose(ratio, ratio[:, :1, :1])  # a drift of whole layers
        layer.append(ratio[:, 0, 0] - 1)
        tof.append(moved.tof_charge_scale / fixed.tof_charge_scale - 1)
        offset.append(1000 * (moved.inv_rigidity_offset - fixed.inv_rigidity_offset))
        assert fixed.inv_rigidity_offset == pytest.approx(0.03e-3)
        mc_moved = resolve_calibration(CFG, "mc", np.random.default_rng(seed))
        mc_fixed = resolve_calibration(still, "mc", np.random.default_rng(seed))
        assert np.array_equal(mc_moved.gain, mc_fixed.gain)
        assert mc_moved.tof_charge_scale == mc_fixed.tof_charge_scale == 1.0
    assert np.std(layer) == pytest.approx(drift.layer_gain_sigma, rel=0.15)
    assert np.std(tof) == pytest.approx(drift.tof_charge_scale_sigma, rel=0.3)
    assert np.std(offset) == pytest.approx(drift.rigidity_offset_sigma_per_tv, rel=0.3)


def test_same_seed_same_events_other_seed_other_events(tmp_path: Path) -> None:
    def run(seed: int, where: str) -> Arrays:
        d = simulate_period(AMS, CFG, tmp_path / where, "P2026a", runs=1, events_per_run=500,
                            seed=seed)
        return read_domain(d, "data")

    a, b, c = run(3, "a"), run(3, "b"), run(4, "c")
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name
    assert not np.array_equal(a["trk_charge"], c["trk_charge"])
    assert not np.array_equal(a["rig_inner"], c["rig_inner"])


# --------------------------------------------------------------------------- config, helpers


def test_config_round_trip_and_validation() -> None:
    import yaml

    again = validate_config(yaml.safe_load(dump_yaml(CFG)), AmsSimConfig)
    assert again == CFG
    assert CFG.data.cross_section_scale == 1.08 and CFG.mc.hit_efficiency == 0.98
    with pytest.raises(ConfigError, match="unknown species"):
        validate_config({"species": ["unobtainium"]}, AmsSimConfig)
    with pytest.raises(ConfigError, match="must be 1"):
        validate_config({"interactions": {"dz1_prob": 0.5}}, AmsSimConfig)
    heavy = AmsSimConfig(species=["iron", "argon"])
    out = generate_ams(heavy, 200, domain="mc", rng=np.random.default_rng(0),
                       period_rng=np.random.default_rng(0))
    assert set(np.unique(out["mc_Z"])) == {18, 26}


def test_physics_formulas() -> None:
    assert layer_charge_sigma(np.array([1, 15, 26])) == pytest.approx(
        [0.15074813, 0.27041634, 0.41785165])
    assert interaction_length(28) == pytest.approx(22.0)
    assert interaction_probability(5.0, 22.0) == pytest.approx(0.20330, abs=1e-5)
    # p = 150 GeV/c, m = 31 * 0.9315 GeV
    assert beta_from_rigidity(10.0, 15, 31) == pytest.approx(0.9819696, abs=1e-6)
    assert inverse_rigidity_sigma(100.0, 1.0, 0.4) == pytest.approx(np.hypot(1 / 400, 0.001))
    assert inverse_rigidity_sigma(2.0, 0.5, 1.5) == pytest.approx(np.hypot(1 / 1500, 0.1))
    assert tof_time_sigma_ps(16) == pytest.approx(np.hypot(10.0, 40.0))
    assert goldhaber_pt_sigma(32, 31) == pytest.approx(0.09)
    assert goldhaber_pt_sigma(32, 32) == 0.0
    assert bending_power(0.14, 80.0) == pytest.approx(0.299792458 * 0.14 * 0.8)
    assert LAYER_Z_CM[0] > LAYER_Z_CM[1] > 0 > LAYER_Z_CM[-1] and len(LAYER_Z_CM) == 9


def test_truncated_mean_drops_extremes() -> None:
    values = np.array([[1.0, 2.0, 3.0, 100.0, -50.0], [1.0, 2.0, 9.0, 0.0, 0.0],
                       [15.0, 15.2, 14.8, MISSING, 15.0]])
    mask = np.array([[True] * 5, [True, True, True, False, False], [True, True, True, False, True]])
    got = truncated_mean(values, mask)
    assert got[0] == pytest.approx(2.0) and got[1] == pytest.approx(4.0)
    assert got[2] == pytest.approx(15.0)  # an absent value is neither dropped nor averaged
    assert truncated_mean(values[:1], np.zeros((1, 5), bool))[0] == MISSING
