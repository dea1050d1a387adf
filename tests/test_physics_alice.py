"""Detector-response formulas of autopid.physics.alice against physics.md."""

from __future__ import annotations

import numpy as np
import pytest

from autopid.physics.alice import (
    SPECIES,
    beta_from_p,
    beta_from_time,
    bethe_bloch_aleph,
    expected_tpc_signal,
    signed_pdg,
    tof_expected_time_ps,
    tof_length_m,
    tof_match_efficiency,
    tpc_resolution,
)

# physics.md, ALICE section: expected TPC signal at MIP 50
TABLE = [
    (0.5, "pion", 47.7), (0.5, "kaon", 79.6), (0.5, "proton", 200.0),
    (1.0, "pion", 51.0), (1.0, "kaon", 50.8), (1.0, "proton", 75.6),
    (2.0, "pion", 56.8), (2.0, "kaon", 47.9), (2.0, "proton", 50.1),
]


@pytest.mark.parametrize(("p", "species", "value"), TABLE)
def test_expected_tpc_signal_reproduces_table(p: float, species: str, value: float) -> None:
    got = expected_tpc_signal(p, SPECIES[species][1], mip=50.0)
    assert got == pytest.approx(value, rel=0.01)


def test_electron_plateau_and_minimum() -> None:
    me = SPECIES["electron"][1]
    assert expected_tpc_signal(np.array([0.5, 1.0, 3.0]), me) == pytest.approx(88.0, rel=0.01)
    # minimum ionisation near beta*gamma ~ 3.5, about 0.95 MIP
    bg = np.geomspace(0.5, 100.0, 2000)
    f = bethe_bloch_aleph(bg)
    assert 2.5 < bg[np.argmin(f)] < 5.0
    assert 0.9 < f.min() < 1.0


def test_mip_scales_signal_linearly() -> None:
    mp = SPECIES["proton"][1]
    assert expected_tpc_signal(1.0, mp, mip=51.25) == pytest.approx(
        1.025 * expected_tpc_signal(1.0, mp, mip=50.0)
    )


def test_tpc_resolution_scales_with_clusters() -> None:
    assert tpc_resolution(159, 0.052) == pytest.approx(0.052)
    assert tpc_resolution(159 / 4, 0.052) == pytest.approx(0.104)


def test_time_of_flight_kinematics() -> None:
    assert tof_length_m(0.0) == pytest.approx(3.7)
    assert tof_length_m(0.8) == pytest.approx(3.7 * np.cosh(0.8))
    # 3.7 m at the speed of light: 12.342 ns
    assert tof_expected_time_ps(1e6, SPECIES["pion"][1], 3.7) == pytest.approx(12341.8, rel=1e-4)
    mk = SPECIES["kaon"][1]
    assert beta_from_p(mk, mk) == pytest.approx(1 / np.sqrt(2))
    t = tof_expected_time_ps(1.3, mk, 4.2)
    assert beta_from_time(4.2, t) == pytest.approx(beta_from_p(1.3, mk))


def test_kaon_pion_tof_separation_matches_physics_md() -> None:
    """K-pi separation 16 sigma at 1 GeV/c, 4.3 at 2, 1.9 at 3 with 80 ps."""
    p = np.array([1.0, 2.0, 3.0])
    dt = tof_expected_time_ps(p, SPECIES["kaon"][1], 3.7) - tof_expected_time_ps(
        p, SPECIES["pion"][1], 3.7
    )
    assert dt / 80.0 == pytest.approx([16.0, 4.3, 1.9], rel=0.08)


def test_matching_efficiency_turn_on() -> None:
    eff = tof_match_efficiency(np.array([0.2, 0.3, 0.5, 2.0]), 0.7)
    assert eff[0] == 0.0 and eff[1] == 0.0
    assert eff[2] == pytest.approx(0.7 * (1 - np.exp(-1.0)))
    assert eff[3] == pytest.approx(0.7, rel=1e-3)


def test_signed_pdg_follows_convention() -> None:
    codes = np.array([211, 211, 2212, 2212, 11, 11, 13, 13])
    charge = np.array([1, -1, 1, -1, -1, 1, -1, 1])
    assert signed_pdg(codes, charge).tolist() == [211, -211, 2212, -2212, 11, -11, 13, -13]
