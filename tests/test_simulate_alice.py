"""ALICE-like simulator: real ROOT files, read back with uproot and checked like a physicist.

The calibration checks use a configuration without period drift so that the Data values
of physics.md can be tested tightly; the drift has its own tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import uproot

from autopid.physics.alice import SPECIES, beta_from_p, expected_tpc_signal, tof_expected_time_ps
from autopid.simulate._common import read_period_manifest, simulate_period
from autopid.simulate.alice import (
    ALICE,
    FEATURES,
    AliceSimConfig,
    DriftConfig,
    generate_alice,
    resolve_calibration,
)

Arrays = dict[str, np.ndarray]

NO_DRIFT = AliceSimConfig(drift=DriftConfig(
    mip_rel_sigma=0.0, tpc_sigma0_rel_sigma=0.0, tof_resolution_sigma_ps=0.0,
    tof_eps_max_sigma=0.0,
))
EVENTS = 20_000
MASS_BY_PDG = {code: mass for code, mass in SPECIES.values()}
HADRONS = ("pion", "kaon", "proton")


def read_domain(period_dir: Path, domain: str) -> Arrays:
    """All runs of one domain, concatenated."""
    parts: list[Arrays] = []
    for path in sorted((period_dir / domain).glob("run*.root")):
        with uproot.open(path) as fh:
            parts.append(fh[ALICE.tree].arrays(library="np"))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def pdg(arrays: Arrays) -> np.ndarray:
    return arrays["fPdgCode"] if "fPdgCode" in arrays else arrays["hidden_fPdgCode"]


def is_species(arrays: Arrays, species: str) -> np.ndarray:
    return np.abs(pdg(arrays)) == SPECIES[species][0]


def robust_sigma(x: np.ndarray) -> float:
    q25, q75 = np.percentile(x, [25, 75])
    return float((q75 - q25) / 1.349)


@pytest.fixture(scope="module")
def period(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("alice")
    return simulate_period(ALICE, NO_DRIFT, out, "LHC26a", runs=2, events_per_run=EVENTS, seed=1)


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


def test_period_files_and_branches(period: Path, mc: Arrays, data: Arrays) -> None:
    manifest = read_period_manifest(period)
    assert manifest is not None and manifest["tree"] == "O2pidtracks"
    assert len(manifest["files"]) == 4
    assert mc["fP"].size == data["fP"].size == 2 * EVENTS
    for arrays in (mc, data):
        for name in FEATURES:
            assert arrays[name].dtype == np.float32, name
        assert arrays["fTPCNClsCrossedRows"].dtype.kind == "i"
        assert arrays["event"].dtype == np.int64
    # truth: visible in MC, hidden (evaluation only) in Data
    assert {"fPdgCode", "fIsPhysicalPrimary"} <= set(mc)
    assert not any(k.startswith("hidden_") for k in mc)
    assert {"hidden_fPdgCode", "hidden_fIsPhysicalPrimary"} <= set(data)
    assert "fPdgCode" not in data and "fIsPhysicalPrimary" not in data
    assert mc["fPdgCode"].dtype == np.int32 and mc["fIsPhysicalPrimary"].dtype == np.int8


def test_collision_index_groups_tracks(mc: Arrays) -> None:
    event = mc["event"][:EVENTS]
    tracks_per_collision = NO_DRIFT.collisions.tracks_per_collision
    assert np.array_equal(event, np.arange(EVENTS) // tracks_per_collision)
    # tracks at the vertex (type 0): fZ - fDcaZ is the collision's vertex z, shared
    sel = mc["fTrackType"][:EVENTS] == 0
    ev, vz = event[sel], (mc["fZ"] - mc["fDcaZ"])[:EVENTS][sel].astype(np.float64)
    starts = np.flatnonzero(np.r_[True, ev[1:] != ev[:-1]])
    spread = np.maximum.reduceat(vz, starts) - np.minimum.reduceat(vz, starts)
    assert spread.max() < 1e-3
    assert np.std(vz[starts]) == pytest.approx(NO_DRIFT.collisions.vertex_z_sigma_cm, rel=0.1)


# --------------------------------------------------------------------------- kinematics


def test_kinematics_consistent(domain: tuple[str, Arrays]) -> None:
    _, a = domain
    pt = np.hypot(a["fPx"], a["fPy"])
    assert np.allclose(pt, a["fPt"], rtol=1e-5)
    assert np.allclose(np.sqrt(pt**2 + a["fPz"] ** 2), a["fP"], rtol=1e-5)
    assert np.all(np.abs(a["fEta"]) < 0.8)
    assert 0.09 < a["fPt"].min() and a["fPt"].max() < 5.3
    assert set(np.unique(a["fSign"])) == {-1.0, 1.0}
    # softer pions than protons (Levy C rising with mass)
    assert np.median(a["fPt"][is_species(a, "pion")]) < np.median(a["fPt"][is_species(a, "proton")])


def test_charge_sign_matches_pdg_convention(mc: Arrays) -> None:
    code, sign = mc["fPdgCode"], mc["fSign"]
    hadron = np.isin(np.abs(code), [211, 321, 2212])
    lepton = np.isin(np.abs(code), [11, 13])
    assert np.all(np.sign(code[hadron]) == sign[hadron])
    assert np.all(np.sign(code[lepton]) == -sign[lepton])
    assert lepton.sum() > 0


def test_sector_frame_and_track_types(mc: Arrays) -> None:
    alpha = mc["fAlpha"].astype(np.float64)
    assert np.all((alpha >= -np.pi) & (alpha < np.pi))
    width = 2 * np.pi / 18
    assert np.allclose(np.mod(alpha, width), width / 2, atol=1e-5)
    dphi = np.angle(np.exp(1j * (mc["fPhi"] - alpha)))
    assert np.all(np.abs(dphi) <= width / 2 + 1e-5)
    other = mc["fTrackType"] != 0
    assert 0.01 < other.mean() < 0.06
    at_vertex = ~other & (mc["fIsPhysicalPrimary"] == 1)
    assert np.all(np.abs(mc["fX"][at_vertex]) < 0.1)
    assert np.all(np.abs(mc["fY"][at_vertex]) < 0.5)
    radius = NO_DRIFT.tracking.innermost_radius_cm
    assert np.median(mc["fX"][other]) == pytest.approx(radius, abs=0.1)


def test_dca_primaries_narrow_secondaries_broad(mc: Arrays) -> None:
    prim = mc["fIsPhysicalPrimary"] == 1
    bin_ = prim & (mc["fPt"] > 1.0) & (mc["fPt"] < 1.2)
    expected = 0.0015 + 0.0050 / 1.1**1.1
    assert robust_sigma(mc["fDcaXY"][bin_]) == pytest.approx(expected, rel=0.1)
    assert robust_sigma(mc["fDcaXY"][~prim]) > 10 * expected
    assert np.all(np.abs(mc["fDcaZ"]) < 2.0)
    # more secondaries among protons (weak decays) than among kaons
    frac = {s: 1 - mc["fIsPhysicalPrimary"][is_species(mc, s)].mean() for s in HADRONS}
    assert frac["proton"] > frac["kaon"]


def test_crossed_rows_cut_removes_a_few_tracks(mc: Arrays) -> None:
    rows = mc["fTPCNClsCrossedRows"]
    assert rows.max() <= 159
    assert 0.005 < np.mean(rows < 70) < 0.05
    assert np.all(mc["fTPCNClsShared"] <= rows)


# --------------------------------------------------------------------------- TPC


@pytest.mark.parametrize("species", HADRONS)
def test_tpc_band_follows_bethe_bloch(domain: tuple[str, Arrays], species: str) -> None:
    name, a = domain
    cal = NO_DRIFT.mc if name == "mc" else NO_DRIFT.data
    sel = is_species(a, species)
    ratio = a["fTPCSignal"] / expected_tpc_signal(a["fP"], SPECIES[species][1], mip=cal.tpc.mip)
    for lo, hi in ((0.4, 0.6), (0.9, 1.1), (1.7, 2.5)):
        in_bin = sel & (a["fP"] > lo) & (a["fP"] < hi)
        assert in_bin.sum() > 100
        # 2%, or 4 standard errors of the median where the bin is small
        stat = 1.2533 * robust_sigma(ratio[in_bin]) / np.sqrt(in_bin.sum())
        assert np.median(ratio[in_bin]) == pytest.approx(1.0, abs=max(0.02, 4 * stat)), (lo, hi)


def test_tpc_resolution_as_configured(domain: tuple[str, Arrays]) -> None:
    name, a = domain
    cal = NO_DRIFT.mc if name == "mc" else NO_DRIFT.data
    sel = is_species(a, "pion") & (a["fP"] > 0.4) & (a["fP"] < 0.7)
    ratio = a["fTPCSignal"][sel] / expected_tpc_signal(a["fP"][sel], SPECIES["pion"][1],
                                                        mip=cal.tpc.mip)
    scaled = (ratio - 1) / np.sqrt(159 / a["fTPCNClsFound"][sel])  # the clusters of the dE/dx
    assert robust_sigma(scaled) == pytest.approx(cal.tpc.sigma0, rel=0.06)


def test_data_mip_shifted_by_two_and_a_half_percent(mc: Arrays, data: Arrays) -> None:
    def mip_scale(a: Arrays) -> float:
        sel = is_species(a, "pion") & (a["fP"] > 0.4) & (a["fP"] < 0.7)
        return float(np.median(a["fTPCSignal"][sel] / expected_tpc_signal(
            a["fP"][sel], SPECIES["pion"][1], mip=1.0)))

    assert mip_scale(mc) == pytest.approx(50.0, rel=0.004)
    assert mip_scale(data) / mip_scale(mc) - 1 == pytest.approx(0.025, abs=0.004)


def test_electron_plateau_separated_from_pions(mc: Arrays) -> None:
    sel = (mc["fP"] > 0.4) & (mc["fP"] < 0.6)
    e = np.median(mc["fTPCSignal"][sel & is_species(mc, "electron")])
    pi = np.median(mc["fTPCSignal"][sel & is_species(mc, "pion")])
    assert e == pytest.approx(88.0, rel=0.03)
    assert pi == pytest.approx(47.7, rel=0.02)


# --------------------------------------------------------------------------- missing values


def test_tof_and_trd_missing_below_momentum_thresholds(domain: tuple[str, Arrays]) -> None:
    _, a = domain
    for name in ("fTOFSignal", "fBeta"):
        assert np.all(np.isnan(a[name][a["fP"] < 0.5])), name
    for name in ("fTRDSignal", "fTRDPattern"):
        assert np.all(np.isnan(a[name][a["fP"] < 0.8])), name
    assert np.array_equal(np.isnan(a["fTOFSignal"]), np.isnan(a["fBeta"]))
    assert np.array_equal(np.isnan(a["fTRDSignal"]), np.isnan(a["fTRDPattern"]))
    # both detectors present for a good share of high-momentum tracks
    high = a["fP"] > 1.0
    assert 0.5 < np.mean(~np.isnan(a["fTOFSignal"][high])) < 0.8
    assert 0.6 < np.mean(~np.isnan(a["fTRDSignal"][high])) < 0.9
    for name in ("fTPCSignal", "fP", "fDcaXY", "fX", "fAlpha"):
        assert not np.isnan(a[name]).any(), name


def test_trd_pattern_has_layers(mc: Arrays) -> None:
    pattern = mc["fTRDPattern"][~np.isnan(mc["fTRDPattern"])]
    assert np.all(pattern == np.round(pattern))
    assert pattern.min() >= 1 and pattern.max() <= 63
    assert np.mean(pattern == 63) > 0.3  # most tracks have all 6 layers


def test_trd_electrons_above_pions(mc: Arrays) -> None:
    sel = (mc["fP"] > 1.0) & (mc["fP"] < 2.0) & ~np.isnan(mc["fTRDSignal"])
    e = np.median(mc["fTRDSignal"][sel & is_species(mc, "electron")])
    pi = mc["fTRDSignal"][sel & is_species(mc, "pion")]
    assert e > np.percentile(pi, 95)
    assert robust_sigma(pi) / np.median(pi) == pytest.approx(0.15, abs=0.03)


def test_tof_matching_efficiency(mc: Arrays, data: Arrays) -> None:
    for a, cal in ((mc, NO_DRIFT.mc), (data, NO_DRIFT.data)):
        sel = (a["fPt"] > 1.0) & (a["fPt"] < 2.0)
        turn_on = np.mean(1 - np.exp(-(a["fPt"][sel] - 0.3) / 0.2))
        expected = cal.tof.eps_max * turn_on * (1 - cal.detector_loss)
        assert np.mean(~np.isnan(a["fTOFSignal"][sel])) == pytest.approx(expected, abs=0.02)
    plateau_mc = np.mean(~np.isnan(mc["fTOFSignal"][(mc["fPt"] > 1) & (mc["fPt"] < 2)]))
    plateau_data = np.mean(~np.isnan(data["fTOFSignal"][(data["fPt"] > 1) & (data["fPt"] < 2)]))
    assert plateau_mc - plateau_data > 0.05
    # missing not at random: the matching turns on with pT
    low = (mc["fPt"] > 0.45) & (mc["fPt"] < 0.55) & (mc["fP"] >= 0.5)
    assert np.mean(~np.isnan(mc["fTOFSignal"][low])) < 0.75 * plateau_mc


# --------------------------------------------------------------------------- TOF


@pytest.mark.parametrize("species", HADRONS)
def test_tof_beta_matches_true_beta(domain: tuple[str, Arrays], species: str) -> None:
    _, a = domain
    mass = SPECIES[species][1]
    sel = is_species(a, species) & ~np.isnan(a["fBeta"])
    for lo, hi in ((0.6, 0.8), (1.0, 1.5), (1.5, 2.5)):
        in_bin = sel & (a["fP"] > lo) & (a["fP"] < hi)
        assert in_bin.sum() > 50
        true = beta_from_p(a["fP"][in_bin], mass)
        assert np.median(a["fBeta"][in_bin] / true) == pytest.approx(1.0, abs=0.003), (lo, hi)


def test_tof_time_resolution_and_tail(mc: Arrays, data: Arrays) -> None:
    def residual(a: Arrays) -> np.ndarray:
        sel = is_species(a, "pion") & (a["fP"] > 0.6) & (a["fP"] < 1.2) & ~np.isnan(a["fTOFSignal"])
        length = 3.7 * np.cosh(a["fEta"][sel])
        return a["fTOFSignal"][sel] - tof_expected_time_ps(a["fP"][sel], SPECIES["pion"][1], length)

    r_mc, r_data = residual(mc), residual(data)
    for r in (r_mc, r_data):
        core = r[np.abs(r) < 1000]
        hist, edges = np.histogram(core, bins=np.arange(-300, 301, 20))
        assert abs(edges[np.argmax(hist)] + 10) <= 30  # the peak sits at the expected time
        assert np.mean(core > 150) > np.mean(core < -150)  # exponential tail to later times
    assert 60 < robust_sigma(r_mc) < 85
    assert robust_sigma(r_data) / robust_sigma(r_mc) > 1.2
    # mismatched hits: the Data has more tracks far from the expected time
    assert np.mean(np.abs(r_data) > 1000) > np.mean(np.abs(r_mc) > 1000)


# --------------------------------------------------------------------------- composition


def test_particle_ratios(mc: Arrays, data: Arrays) -> None:
    for a, kpi, ppi in ((mc, 0.11, 0.05), (data, 0.13, 0.065)):
        n_pi = is_species(a, "pion").sum()
        assert is_species(a, "kaon").sum() / n_pi == pytest.approx(kpi, abs=0.007)
        assert is_species(a, "proton").sum() / n_pi == pytest.approx(ppi, abs=0.005)
        assert 0.005 < is_species(a, "electron").mean() < 0.02


def test_both_charges_present(mc: Arrays) -> None:
    for s in HADRONS:
        sign = mc["fSign"][is_species(mc, s)]
        assert np.mean(sign > 0) == pytest.approx(0.5, abs=0.04)


# --------------------------------------------------------------------------- reproducibility


def _small_period(root: Path, cfg: AliceSimConfig, period: str, seed: int) -> Path:
    return simulate_period(ALICE, cfg, root, period, runs=1, events_per_run=3000, seed=seed)


def test_same_seed_identical_other_seed_different(tmp_path: Path) -> None:
    a = read_domain(_small_period(tmp_path / "a", NO_DRIFT, "LHC26a", 1), "data")
    b = read_domain(_small_period(tmp_path / "b", NO_DRIFT, "LHC26a", 1), "data")
    c = read_domain(_small_period(tmp_path / "c", NO_DRIFT, "LHC26a", 2), "data")
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f"), k
    assert not np.array_equal(a["fTPCSignal"], c["fTPCSignal"])
    assert not np.array_equal(a["hidden_fPdgCode"], c["hidden_fPdgCode"])


def test_period_rng_use_does_not_depend_on_n() -> None:
    cfg = AliceSimConfig()
    states = []
    for n in (1, 1000):
        prng = np.random.default_rng(7)
        generate_alice(cfg, n, domain="data", rng=np.random.default_rng(n), period_rng=prng)
        states.append(prng.bit_generator.state)
    assert states[0] == states[1]


def test_drift_shared_within_period_only_in_data() -> None:
    cfg = AliceSimConfig()
    same = [resolve_calibration(cfg, "data", np.random.default_rng(3)) for _ in range(2)]
    other = resolve_calibration(cfg, "data", np.random.default_rng(4))
    assert same[0] == same[1]
    assert other.tpc.mip != same[0].tpc.mip
    assert other.tof.resolution_ps != same[0].tof.resolution_ps
    assert resolve_calibration(cfg, "mc", np.random.default_rng(3)) == cfg.mc
    assert abs(same[0].tpc.mip / cfg.data.tpc.mip - 1) < 0.05


def test_periods_differ_in_data_calibration(tmp_path: Path) -> None:
    """Measured MIP of each run: runs of one period agree, periods differ (Data only)."""
    cfg = AliceSimConfig(drift=DriftConfig(mip_rel_sigma=0.05))
    scales: dict[tuple[str, str], list[float]] = {}
    for period in ("LHC26a", "LHC26b"):
        pdir = simulate_period(ALICE, cfg, tmp_path, period, runs=2, events_per_run=10_000, seed=1)
        for domain in ("mc", "data"):
            for path in sorted((pdir / domain).glob("run*.root")):
                with uproot.open(path) as fh:
                    a = fh[ALICE.tree].arrays(library="np")
                sel = is_species(a, "pion") & (a["fP"] > 0.3) & (a["fP"] < 1.0)
                ratio = a["fTPCSignal"][sel] / expected_tpc_signal(
                    a["fP"][sel], SPECIES["pion"][1], mip=1.0)
                scales.setdefault((period, domain), []).append(float(np.median(ratio)))
    for key, (r1, r2) in scales.items():
        assert r1 == pytest.approx(r2, rel=0.004), key  # one period, one calibration
    mc_a, mc_b = scales[("LHC26a", "mc")][0], scales[("LHC26b", "mc")][0]
    assert mc_a == pytest.approx(mc_b, rel=0.004)  # MC does not drift
    data_a, data_b = scales[("LHC26a", "data")][0], scales[("LHC26b", "data")][0]
    assert abs(data_a / data_b - 1) > 0.01


# --------------------------------------------------------------------------- config


def test_config_defaults_round_trip_and_strictness() -> None:
    import yaml

    from autopid.config._loader import dump_yaml, validate_config
    from autopid.errors import ConfigError

    cfg = AliceSimConfig()
    assert validate_config(yaml.safe_load(dump_yaml(cfg)), AliceSimConfig) == cfg
    assert (cfg.mc.tof.eps_max, cfg.data.tof.eps_max) == (0.70, 0.65)
    assert cfg.data.tpc.mip == pytest.approx(1.025 * cfg.mc.tpc.mip)
    assert (cfg.data.tof.resolution_ps, cfg.data.tof.tail_ps) == (80.0, 70.0)
    with pytest.raises(ConfigError, match="mc.tpc.mipp"):
        validate_config({"mc": {"tpc": {"mipp": 51}}}, AliceSimConfig)
    with pytest.raises(ConfigError, match="pt_min"):
        validate_config({"kinematics": {"pt_min": 6.0}}, AliceSimConfig)
