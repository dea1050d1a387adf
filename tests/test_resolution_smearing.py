"""The truth-free resolution smearing: MC tracker charges given Data's charge resolution.

The simulated Data's layer-charge resolution is 15 % wider than MC's (``simulate/ams.py``,
``charge.sigma_scale``), which no gain calibration fixes. The smearing must find that
from the residuals (layer charge minus the event's truncated mean) of both domains,
widen MC's to Data's, leave Data and the second track alone, and give an event the same
charges whatever frame it is in.
"""

from __future__ import annotations

import numpy as np
import pytest

from autopid.calibration.gains import (
    ChargeCalibration,
    fit_charge_calibration,
    fit_resolution_smearing,
    truncated_mean,
)
from autopid.calibration.resolution import normal_draws
from autopid.calibration.noise import row_keys
from autopid.data import PreprocessedDataset
from autopid.data.mda import MDADataset
from autopid.publish.mda_inputs import events

SIM_RATIO = 1.15  # Data/MC charge resolution (simulator defaults)


@pytest.fixture(scope="module")
def cal(ams_ds: PreprocessedDataset) -> ChargeCalibration:
    return fit_charge_calibration(ams_ds, noise_overlay=False, hit_removal=False)  # the smearing alone


@pytest.fixture(scope="module")
def plain(ams_ds: PreprocessedDataset) -> ChargeCalibration:
    return fit_charge_calibration(ams_ds, noise_overlay=False, hit_removal=False, resolution_smearing=False)


def _main(ds: PreprocessedDataset) -> list[str]:
    return [c for c in ds.feature_columns("trk_charge") if c.startswith("trk_charge[0]")]


def test_the_estimate_finds_the_wider_data_resolution(ams_ds: PreprocessedDataset, cal: ChargeCalibration) -> None:
    sm = cal.smearing
    assert sm is not None and len(sm.extra) == 16  # the MDA's charge layers L1-L8, both sides, main track
    widths = sm.info["relative_width"]
    ratio = np.array([widths[c]["data"] / widths[c]["mc"] for c in sm.extra])
    assert abs(np.median(ratio) - SIM_RATIO) < 0.07, ratio
    assert sum(v > 0 for v in sm.extra.values()) >= 12, ratio  # a small sample: a few columns may come out at 1


def _synthetic(n: int, sigma: float, rng: np.random.Generator, broken: float) -> np.ndarray:
    """Calibrated main-track charges [n, 8 layers, 2 sides] of Z = 15, a share ``broken``
    one charge higher in L1 (broke up below it), 2 % of hits with a delta-ray tail."""
    q = 15.0 + sigma * rng.standard_normal((n, 8, 2))
    q[rng.random(n) < broken, 0] += 1.0
    q += (rng.random(q.shape) < 0.02) * rng.exponential(3 * sigma, q.shape)
    return q


def test_smeared_mc_has_the_data_residual_width() -> None:
    rng = np.random.default_rng(2)
    mc, data = _synthetic(40_000, 0.30, rng, 0.05), _synthetic(20_000, 0.36, rng, 0.25)
    names = np.array([[f"q{li}{si}" for si in range(2)] for li in range(8)])
    sm = fit_resolution_smearing(mc, data, names, ["key"])
    # the same sample on both sides: nothing to add
    assert max(fit_resolution_smearing(mc, mc, names, ["key"]).extra.values()) == 0.0
    # Data narrower than MC: a resolution is not improved
    assert max(fit_resolution_smearing(data, mc, names, ["key"]).extra.values()) == 0.0
    cols = {"key": rng.random(len(mc)), **{str(names[li, si]): mc[:, li, si] for li, si in np.ndindex(8, 2)}}
    noise = sm.noise(cols, slice(None))
    smeared = mc + np.stack([np.stack([noise[str(names[li, si])] for si in range(2)], axis=1)
                             for li in range(8)], axis=1)

    def core_width(q: np.ndarray) -> np.ndarray:  # 16-84 % of the residual, L2-L8 (no broken nuclei)
        r = q - truncated_mean(q.mean(axis=2))[:, None, None]
        lo, hi = np.percentile(r[:, 1:], [16, 84], axis=0)
        return (hi - lo) / 2

    w_mc, w_data, w_smeared = core_width(mc), core_width(data), core_width(smeared)
    dev = np.abs(w_smeared / w_data - 1)
    assert np.all(dev < 0.06) and dev.mean() < 0.03, w_smeared / w_data
    assert np.all(w_data / w_mc - 1 > 0.15)  # what was there to correct


def test_mc_rows_are_smeared_data_rows_are_not_and_each_event_keeps_its_draws(
        ams_ds: PreprocessedDataset, cal: ChargeCalibration, plain: ChargeCalibration) -> None:
    main = _main(ams_ds)
    second = [c for c in ams_ds.feature_columns("trk_charge") if c.startswith("trk_charge[1]")]
    mc = ams_ds.frame("validation", "mc")
    cols = {c: mc[c].to_numpy(np.float64) for c in mc.columns}
    out, ref = cal.calibrate(cols, ams_ds, "mc"), plain.calibrate(cols, ams_ds, "mc")
    for c in main:
        d = out[c] - ref[c]
        ok = np.isfinite(ref[c])
        np.testing.assert_array_equal(np.isfinite(out[c]), ok)  # a missing charge stays missing
        if cal.smearing.extra.get(c, 0.0) > 0:  # type: ignore[union-attr]
            assert np.std(d[ok]) == pytest.approx(cal.smearing.extra[c], rel=0.15)  # type: ignore[union-attr]
            assert abs(np.mean(d[ok])) < 0.2 * cal.smearing.extra[c]  # type: ignore[union-attr]
    for c in second:
        np.testing.assert_array_equal(out[c], ref[c])
    as_data = cal.calibrate(cols, ams_ds, "data")
    for c in [*main, *second]:
        np.testing.assert_array_equal(as_data[c], plain.calibrate(cols, ams_ds, "data")[c])
    # independent draws per column
    smeared = [c for c in main if cal.smearing.extra.get(c, 0.0) > 0]  # type: ignore[union-attr]
    d0, d1 = (out[c] - ref[c] for c in smeared[:2])
    ok = np.isfinite(d0) & np.isfinite(d1)
    assert abs(np.corrcoef(d0[ok], d1[ok])[0, 1]) < 0.1
    # another order, a subset, per-row codes, and the stored JSON: the same charges
    order = np.random.default_rng(0).permutation(len(mc))[: len(mc) // 2]
    sub = cal.calibrate({c: v[order] for c, v in cols.items()}, ams_ds, "mc")
    codes = np.arange(len(mc)) % 2
    mixed = cal.calibrate(cols, ams_ds, codes)
    stored = cal.to_dict()
    assert stored["format"] == 3
    again = ChargeCalibration.from_dict(stored).calibrate(cols, ams_ds, "mc")
    for c in main:
        np.testing.assert_array_equal(sub[c], out[c][order])
        np.testing.assert_array_equal(mixed[c][codes == 0], out[c][codes == 0])
        np.testing.assert_array_equal(mixed[c][codes == 1], as_data[c][codes == 1])
        np.testing.assert_array_equal(again[c], out[c])
    del stored["resolution_smearing"]
    assert ChargeCalibration.from_dict(stored).smearing is None


def test_training_and_inference_read_the_same_smeared_charges(ams_ds: PreprocessedDataset,
                                                              cal: ChargeCalibration,
                                                              plain: ChargeCalibration) -> None:
    mc = ams_ds.frame("validation", "mc").head(600).reset_index(drop=True)
    built = MDADataset(mc, ams_ds, calibration=cal, domain="mc")
    assert not np.array_equal(built.charge, MDADataset(mc, ams_ds, calibration=plain, domain="mc").charge)
    cols = {c: mc[c].to_numpy(np.float64) for c in mc.columns}
    np.testing.assert_allclose(events(cols, ams_ds, domain="mc", calibration=cal).charge, built.charge, rtol=1e-6)


def test_normal_draws_are_standard_and_depend_only_on_key_and_salt() -> None:
    keys = row_keys({"a": np.linspace(0.0, 1.0, 200_000)}, ["a"])
    z = normal_draws(keys, "x")
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01 and np.all(np.isfinite(z))
    assert abs(np.mean(np.abs(z) > 2) - 0.0455) < 0.003
    np.testing.assert_array_equal(normal_draws(keys[::-1], "x"), z[::-1])
    assert abs(np.corrcoef(normal_draws(keys, "y"), z)[0, 1]) < 0.01
