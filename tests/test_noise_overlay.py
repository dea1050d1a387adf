"""The truth-free noise overlay: Data's noise clusters added to MC counts.

The simulated Data has 0.2 noise clusters per tracker layer and side against MC's 0.1
(``simulate/ams.py``), so the overlay must add about 0.1 per column to MC, leave Data
alone, give an event the same draws whatever frame it is in, and reach every consumer
of the calibration: the MDA's cluster image and the classic selection's veto.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from autopid.baselines.ams import ClassicAmsSelection, SecondTrackVeto, with_overlay
from autopid.baselines.roles import role_sample
from autopid.calibration.gains import (
    ChargeCalibration,
    fit_charge_calibration,
    overlay_counts,
)
from autopid.calibration.noise import fit_noise_overlay, poisson_draws, row_keys
from autopid.data import PreprocessedDataset
from autopid.errors import ConfigError
from autopid.publish.mda_inputs import events
from autopid.testing import mda_datasets_three_ways

SIM_EXCESS = 0.2 - 0.1  # Data minus MC noise clusters per layer and side (simulator defaults)


@pytest.fixture(scope="module")
def cal(ams_ds: PreprocessedDataset) -> ChargeCalibration:
    # the overlay alone (hit removal: test_hit_removal.py; smearing: test_resolution_smearing.py)
    return fit_charge_calibration(ams_ds, hit_removal=False, resolution_smearing=False)


def _cluster_columns(ds: PreprocessedDataset) -> list[str]:
    return ds.feature_columns(ds.manifest["mda"]["clusters"]["branch"])


def test_the_estimate_finds_the_data_noise_excess_and_nothing_between_equal_samples(
        ams_ds: PreprocessedDataset, cal: ChargeCalibration) -> None:
    assert cal.overlay is not None
    extra = np.array([cal.overlay.extra[c] for c in _cluster_columns(ams_ds)])
    assert np.all(extra >= 0)
    assert abs(extra.mean() - SIM_EXCESS) < 0.04, extra
    # the same sample on both sides: no excess anywhere
    counts, second = overlay_counts(ams_ds)
    mc = ams_ds.frame("train", "mc", sorted({*counts, *ams_ds.feature_columns("trk_charge"), *second}))
    cols = {c: mc[c].to_numpy(np.float64) for c in mc.columns}
    same = fit_noise_overlay(cols, cols, counts, second, ams_ds.feature_columns("trk_charge"))
    assert max(same.extra.values()) == 0.0


def test_without_the_overlay_the_calibration_leaves_counts_alone(ams_ds: PreprocessedDataset) -> None:
    plain = fit_charge_calibration(ams_ds, noise_overlay=False, hit_removal=False, resolution_smearing=False)
    assert plain.overlay is None and plain.overlay_columns == [] and plain.count_columns == []
    mc = ams_ds.frame("validation", "mc")
    out = plain.calibrate({c: mc[c].to_numpy(np.float64) for c in mc.columns}, ams_ds, "mc")
    assert not set(_cluster_columns(ams_ds)) & set(out)


def test_mc_rows_get_the_noise_data_rows_do_not_and_each_event_keeps_its_draws(
        ams_ds: PreprocessedDataset, cal: ChargeCalibration) -> None:
    ncols = _cluster_columns(ams_ds)
    mc = ams_ds.frame("validation", "mc")
    raw = mc[ncols].to_numpy(np.float64)
    cols = {c: mc[c].to_numpy(np.float64) for c in mc.columns}
    as_mc = np.stack([cal.calibrate(cols, ams_ds, "mc")[c] for c in ncols], axis=1)
    as_data = np.stack([cal.calibrate(cols, ams_ds, "data")[c] for c in ncols], axis=1)
    np.testing.assert_array_equal(as_data, raw)
    added = as_mc - raw
    assert np.all(added >= 0) and np.all(added == np.round(added))
    expected = np.mean([cal.overlay.extra[c] for c in ncols])  # type: ignore[union-attr]
    assert abs(added.mean() - expected) < 0.03
    # per-row domain codes: the same rows drawn the same way
    codes = np.arange(len(mc)) % 2
    mixed = np.stack([cal.calibrate(cols, ams_ds, codes)[c] for c in ncols], axis=1)
    np.testing.assert_array_equal(mixed[codes == 0], as_mc[codes == 0])
    np.testing.assert_array_equal(mixed[codes == 1], raw[codes == 1])
    # another frame order (or a subset) gives every event the same counts
    order = np.random.default_rng(0).permutation(len(mc))[: len(mc) // 2]
    sub = {c: v[order] for c, v in cols.items()}
    np.testing.assert_array_equal(np.stack([cal.calibrate(sub, ams_ds, "mc")[c] for c in ncols], axis=1),
                                  as_mc[order])
    # stored with the model as JSON, it draws the same
    again = ChargeCalibration.from_dict(cal.to_dict())
    np.testing.assert_array_equal(np.stack([again.calibrate(cols, ams_ds, "mc")[c] for c in ncols], axis=1), as_mc)
    # a calibration stored before the overlay existed still loads, without one; an older
    # autopid refuses one with an overlay (format 2) instead of dropping it silently
    old = cal.to_dict()
    assert old["format"] == 2
    del old["noise_overlay"]
    old["format"] = 1
    assert ChargeCalibration.from_dict(old).overlay is None
    # a column's draws do not depend on which other count columns are at hand
    few = {c: v for c, v in cols.items() if c not in ncols[:-1]}
    np.testing.assert_array_equal(cal.calibrate(few, ams_ds, "mc")[ncols[-1]], as_mc[:, -1])


def test_the_overlay_brings_mc_counts_to_data_on_noise_only_rows(ams_ds: PreprocessedDataset,
                                                                  cal: ChargeCalibration) -> None:
    # clusters beyond the main track's own in L1-L3 (the least fragment debris), rows with
    # no second track
    counts, _ = overlay_counts(ams_ds)
    ncols = _cluster_columns(ams_ds)[:6]
    second = [c for c in ams_ds.feature_columns("trk_charge") if c.startswith("trk_charge[1]")]
    means = {}
    for name in ("mc", "data"):
        f = ams_ds.frame("validation", name)
        quiet = ~np.isfinite(f[second].to_numpy(np.float64)).any(axis=1)
        cols = {c: f[c].to_numpy(np.float64)[quiet] for c in f.columns}
        own = np.stack([np.isfinite(cols[counts[c][0]]) for c in ncols], axis=1)
        means[name] = np.mean(np.stack([cols[c] for c in ncols], axis=1) - own)
        if name == "mc":
            over = cal.calibrate(cols, ams_ds, "mc")
            means["mc_overlaid"] = np.mean(np.stack([over[c] for c in ncols], axis=1) - own)
    assert means["data"] - means["mc"] > 0.07, means  # the shift is there ...
    assert abs(means["data"] - means["mc_overlaid"]) < 0.4 * (means["data"] - means["mc"]), means  # ... mostly gone


def test_the_mda_cluster_image_reads_the_overlaid_counts(ams_ds: PreprocessedDataset, cal: ChargeCalibration) -> None:
    mc = ams_ds.frame("validation", "mc").head(500).reset_index(drop=True)
    plain, as_mc, as_data = mda_datasets_three_ways(mc, ams_ds, cal)
    np.testing.assert_array_equal(as_data.image, plain.image)
    assert (as_mc.image > plain.image).any() and not (as_mc.image < plain.image).any()
    # the inference path (exports, evaluation of MC) draws the same image as training
    cols = {c: mc[c].to_numpy(np.float64) for c in mc.columns}
    for domain, built in (("mc", as_mc), ("data", as_data)):
        np.testing.assert_allclose(events(cols, ams_ds, domain=domain, calibration=cal).image, built.image,
                                   rtol=1e-6)


def test_poisson_draws_have_the_asked_mean_and_depend_only_on_key_and_salt() -> None:
    keys = row_keys({"a": np.linspace(0.0, 1.0, 200_000)}, ["a"])
    draws = poisson_draws(keys, 0.6, salt=1)
    assert abs(draws.mean() - 0.6) < 0.01 and abs(draws.var() - 0.6) < 0.02
    np.testing.assert_array_equal(poisson_draws(keys[::-1], 0.6, salt=1), draws[::-1])
    assert not np.array_equal(poisson_draws(keys, 0.6, salt=2), draws)


@pytest.mark.parametrize("cls", [ClassicAmsSelection, SecondTrackVeto])
def test_the_classic_veto_is_set_on_mc_with_the_data_noise(ams_ds: PreprocessedDataset, cls: type) -> None:
    train, y = role_sample(ams_ds, "train", "mc", species="phosphorus", max_rows=20000, seed=0)
    val, y_val = role_sample(ams_ds, "validation", "mc", species="phosphorus", max_rows=20000, seed=0)
    data = role_sample(ams_ds, "train", "data", max_rows=20000, seed=0)[0]
    kwargs = {"z": 15} if cls is ClassicAmsSelection else {}
    sel = cls(**kwargs).fit(train, y, validation=(val, y_val), data=data)
    assert sel.overlay is not None
    # the role counts extra clusters in L2-L4: 6 layer sides with 0.1 more noise in Data
    assert 0.3 < sel.overlay.extra["extra_clusters"] < 0.9
    raw = val["extra_clusters"].to_numpy(np.float64)
    added = with_overlay(val, sel.overlay, "mc")["extra_clusters"].to_numpy(np.float64) - raw
    assert np.all(added >= 0) and abs(added.mean() - sel.overlay.extra["extra_clusters"]) < 0.1
    np.testing.assert_array_equal(with_overlay(val, sel.overlay, "data")["extra_clusters"].to_numpy(), raw)
    # its MC scores are those of the overlaid rows
    bare = copy.copy(sel)
    bare.overlay = None
    np.testing.assert_array_equal(sel.predict(val, "mc"), bare.predict(with_overlay(val, sel.overlay, "mc"), "mc"))
    # ... and its cut was chosen on them: the validation efficiency it reports is theirs
    eff = np.mean(sel.predict(val, "mc")[np.asarray(y_val, bool)] >= sel.threshold)
    assert eff == pytest.approx(sel.windows["efficiency_validation"], abs=1e-9)
    assert cls(**kwargs).fit(train, y, validation=(val, y_val), data=None).overlay is None
    # an MC frame without the roles that seed the draws, or an unknown domain: a clear error
    with pytest.raises(ConfigError, match="l1_charge"):
        sel.predict(val.drop(columns=["l1_charge"]), "mc")
    with pytest.raises(ValueError, match="domain"):
        sel.predict(val, "MC")
    if cls is SecondTrackVeto:
        return  # it needs the second-track count anyway
    # without the second-track count, fragments would read as noise: no overlay
    assert cls(**kwargs).fit(train.drop(columns=["second_tracks"]), y,
                             validation=(val.drop(columns=["second_tracks"]), y_val),
                             data=data.drop(columns=["second_tracks"])).overlay is None


def test_the_estimate_ignores_fragments_and_pile_ups_the_domains_have_at_different_rates() -> None:
    """Synthetic counts on one layer: noise per side (0.10 MC, 0.25 Data), fragments that
    leave a cluster on both sides (5 % MC, 20 % Data) and one-sided pile-ups of 3
    clusters (2 % MC, 16 % Data). Only the noise excess, 0.15, may be overlaid."""
    rng = np.random.default_rng(3)

    def domain(noise: float, fragments: float, pile_ups: float, n: int = 60_000) -> dict[str, np.ndarray]:
        hit = rng.random((n, 2)) < 0.95
        counts = hit + rng.poisson(noise, (n, 2)) + (rng.random(n) < fragments)[:, None]
        side = rng.integers(0, 2, n)
        counts[np.arange(n), side] += 3 * (rng.random(n) < pile_ups)
        cols = {f"n{s}": counts[:, s].astype(np.float64) for s in range(2)}
        cols |= {f"q{s}": np.where(hit[:, s], 15.0 + rng.normal(0, 0.3, n), np.nan) for s in range(2)}
        cols["second"] = np.where(rng.random(n) < 0.05, 1.0, np.nan)
        return cols

    mc, data = domain(0.10, 0.05, 0.02), domain(0.25, 0.20, 0.16)
    overlay = fit_noise_overlay(mc, data, {"n0": ("q0", "n1"), "n1": ("q1", "n0")}, ["second"], ["q0", "q1"])
    for c in ("n0", "n1"):
        assert overlay.extra[c] == pytest.approx(0.15, abs=0.02), overlay.info
