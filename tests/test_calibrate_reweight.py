"""Calibrate, reweight, then adapt: the tracker gain calibration recovers the simulator's
gains, travels with the model into an export and ``predict``; the rigidity weights give
MC the Data spectrum; the class-matched domain accuracy is 0.5 for domains that differ
only in class mix, and not for shifted ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_predict_models import mda_dir  # noqa: F401 - fixture

from autopid.calibration.gains import ChargeCalibration, GainMap, fit_gain_map
from autopid.calibration.label_shift import (
    class_matched_domain_accuracy,
    class_matched_weights,
    estimate_signal_fraction,
    label_weights,
)
from autopid.calibration.reweight import RigidityReweighter, log_rigidity
from autopid.data import PreprocessedDataset
from autopid.metrics import domain_classifier_accuracy

CHARGE_LAYERS = [2, 3, 4, 5, 6, 7, 8]


def _simulated(domain: str, n: int, period_seed: int = 123):  # type: ignore[no-untyped-def]
    from autopid.simulate.ams import AmsSimConfig, generate_ams, resolve_calibration

    cfg = AmsSimConfig()
    true = resolve_calibration(cfg, domain, np.random.default_rng(period_seed)).gain  # (layers, ladders, sides)
    ev = generate_ams(cfg, n, domain=domain, rng=np.random.default_rng(1), period_rng=np.random.default_rng(period_seed))
    charge = np.where(ev["trk_charge"] == -9999.0, np.nan, ev["trk_charge"]).astype(np.float64)
    pos = np.where(ev["trk_pos"] == -9999.0, np.nan, ev["trk_pos"]).astype(np.float64)
    return cfg, true, charge, pos


def _at_ladder_centres(m: GainMap, cfg, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """Fitted and true gains of the ladders whose centre lies inside the fitted x range,
    each normalised to mean 1 per side."""
    geo = cfg.geometry
    centres = -geo.layer_half_width_cm + (np.arange(geo.ladders_per_layer) + 0.5) * 2 * geo.layer_half_width_cm \
        / geo.ladders_per_layer
    fit, tru = [], []
    for k, layer in enumerate(m.layers):
        inside = (centres > m.edges[k][0] + 2.0) & (centres < m.edges[k][-1] - 2.0)
        fit.append(np.stack([m.cell_gain(k, centres[inside], s) for s in range(2)]))
        tru.append(true[layer - 1][inside].T)
    f, t = np.concatenate(fit, axis=1), np.concatenate(tru, axis=1)  # [sides, cells]
    return f / f.mean(axis=1, keepdims=True), t / t.mean(axis=1, keepdims=True)


def test_gain_calibration_recovers_injected_gains() -> None:
    cfg, true, charge, pos = _simulated("data", 40_000)
    assert np.std(true[1:8]) > 0.02  # the simulator's Data gains: 2.5 % rms per ladder, +-1 % per layer
    m = fit_gain_map(charge, pos, CHARGE_LAYERS)
    assert min(m.info["bins"]) >= 16  # bins chosen from the data, finer than the ladders
    fit, tru = _at_ladder_centres(m, cfg, true)
    err = fit / tru - 1.0
    assert fit.shape[1] >= 20
    assert np.sqrt(np.mean(err**2)) < 0.005, np.sqrt(np.mean(err**2))
    assert np.abs(err).max() < 0.015
    assert np.sqrt(np.mean(err**2)) < 0.25 * np.std(tru)
    # absolute scale: the calibrated charge peak sits at an integer (the dominant Si, Z = 14)
    assert m.info["peak_charge"] in (14.0, 15.0)
    # a calibrated charge is the raw one over the gain of the hit's cell, for every track
    cal = charge.copy()
    m.apply(cal, pos)
    k, s = 3, 1
    x = pos[:, 1, CHARGE_LAYERS[k] - 1, 0]
    ok = np.isfinite(charge[:, 1, CHARGE_LAYERS[k] - 1, s])
    np.testing.assert_allclose(cal[ok, 1, CHARGE_LAYERS[k] - 1, s],
                               charge[ok, 1, CHARGE_LAYERS[k] - 1, s] / m.cell_gain(k, x[ok], s))
    assert np.array_equal(cal[:, :, 0], charge[:, :, 0], equal_nan=True)  # L1 is not an MDA charge input


def test_gain_calibration_of_mc_is_flat_and_the_map_is_json() -> None:
    cfg, true, charge, pos = _simulated("mc", 20_000)
    m = fit_gain_map(charge, pos, CHARGE_LAYERS)
    fit, _ = _at_ladder_centres(m, cfg, true)
    assert np.sqrt(np.mean((fit - 1.0) ** 2)) < 0.004  # MC has no ladder gains
    cal = ChargeCalibration("trk_charge", "trk_pos", {"mc": m, "data": m}, scales={"data": {"tof": 0.98}})
    text = json.dumps(cal.to_dict())  # plain JSON, nothing pickled
    back = ChargeCalibration.from_dict(json.loads(text))
    assert back.to_dict() == cal.to_dict()
    x = np.linspace(-50, 50, 7)
    np.testing.assert_array_equal(back.maps["mc"].cell_gain(2, x, 1), m.cell_gain(2, x, 1))
    with pytest.raises(ValueError, match="format"):
        ChargeCalibration.from_dict({**cal.to_dict(), "format": 99})


def test_gain_map_round_trips_through_export_and_predict(ams_ds: PreprocessedDataset, mda_dir: Path) -> None:  # noqa: F811
    from autopid.publish.inputs import StoredLayout
    from autopid.publish.mda_inputs import calibration_of, events
    from autopid.publish.predict import Predictor
    from autopid.train import artifacts, core

    spec = json.loads((mda_dir / "preprocessing.json").read_text())
    assert spec["mda"]["calibration"]["kind"] == "tracker_charge_gains"
    model, payload = artifacts.load_model(mda_dir / "model.pt", ams_ds)
    assert model.calibration is not None
    assert json.loads(payload["calibration"]) == spec["mda"]["calibration"]
    assert model.calibration.maps["data"].info["split"] == "train"

    # predict on a raw Data file equals the in-process model on the cache's rows of that file
    path = next(i["path"] for i in ams_ds.manifest["inputs"] if i["domain"] == "data")
    pred = Predictor(mda_dir, threads=1).predict(path)
    data = ams_ds.frame("test", "data")
    for split in ("train", "validation"):
        import pandas as pd

        data = pd.concat([data, ams_ds.frame(split, "data")], ignore_index=True)
    keys = pd.DataFrame({"run": pred.extra["run"], "event": pred.extra["event"], "onnx": pred.score})
    both = keys.merge(data, on=["run", "event"], how="inner")
    assert len(both) == len(keys) > 100
    ref = core.predict_frame(model, "mda", both, ams_ds, domain="data")["score"]
    np.testing.assert_allclose(both["onnx"].to_numpy(), ref, atol=1e-5)

    # the calibration acts: without it (or with MC's map) the inputs and scores differ
    layout = StoredLayout.from_dir(mda_dir)
    cols = {c: both[c].to_numpy(np.float64) for c in layout.columns}
    cal = calibration_of(layout)
    assert cal is not None
    ev_data, ev_mc = events(cols, layout), events(cols, layout, domain="mc")
    assert np.abs(ev_data.charge - ev_mc.charge).max() > 1e-3
    uncal = core.predict_frame(_without_calibration(model), "mda", both, ams_ds)["score"]
    assert np.abs(uncal - ref).max() > 1e-6
    # MC rows scored as MC by the predictor and in-process
    mc = ams_ds.frame("test", "mc").iloc[:200]
    got = Predictor(mda_dir, threads=1, apply_selection=False).predict(mc[layout.columns], domain="mc").score
    np.testing.assert_allclose(got, core.predict_frame(model, "mda", mc, ams_ds, domain="mc")["score"], atol=1e-5)


def _without_calibration(model):  # type: ignore[no-untyped-def]
    import copy

    m = copy.deepcopy(model)
    m.calibration = None
    return m


def test_reweighted_mc_rigidity_matches_data() -> None:
    rng = np.random.default_rng(0)
    mc = 2.0 * 1000.0 ** rng.random(40_000)  # flat in log R, 2-2000 GV
    cutoff = rng.uniform(3, 15, 8000)  # R^-2.7 above a 3-15 GV cutoff
    data = cutoff * (1 - rng.random(8000)) ** (-1 / 1.7)
    rw = RigidityReweighter.fit(mc, data)
    w = rw.weights(mc)
    assert abs(w.mean() - 1.0) < 1e-9 and w.max() <= 20.0 + 1e-9
    bins = np.linspace(np.log10(2), np.log10(2000), 16)
    h_d = np.histogram(np.clip(np.log10(data), bins[0], bins[-1]), bins)[0] / len(data)
    h_raw = np.histogram(np.log10(mc), bins)[0] / len(mc)
    h_w = np.histogram(np.log10(mc), bins, weights=w)[0] / w.sum()
    assert np.abs(h_raw - h_d).max() > 0.1  # the spectra differ a lot before
    assert np.abs(h_w - h_d).max() < 0.02  # and match after
    w_med = np.sort(mc)[np.searchsorted(np.cumsum(w[np.argsort(mc)]), w.sum() / 2)]
    assert abs(np.log(w_med / np.median(data))) < 0.05
    # a Data-vs-MC classifier on log R alone: 0.5 once weighted
    lr_mc, lr_d = log_rigidity(mc)[:, None], log_rigidity(data)[:, None]
    assert domain_classifier_accuracy(lr_mc, lr_d) > 0.7
    assert abs(domain_classifier_accuracy(lr_mc, lr_d, mc_weights=w) - 0.5) < 0.04
    # missing rigidities weigh 1; the weights are JSON
    assert rw.weights(np.array([np.nan, 0.0]))[0] == 1.0
    back = RigidityReweighter.from_dict(json.loads(json.dumps(rw.to_dict())))
    np.testing.assert_array_equal(back.weights(mc[:100]), w[:100])


def test_reweighted_mc_rigidity_matches_data_in_the_cache(ams_ds: PreprocessedDataset) -> None:
    from autopid.train import core

    mc_train = ams_ds.frame("train", "mc")
    rw = core.rigidity_reweighter(ams_ds, mc_train)
    col = "rig_inner"
    mc, data = ams_ds.frame("test", "mc")[col].to_numpy(), ams_ds.frame("test", "data")[col].to_numpy()
    w = rw.weights(mc)
    l_mc, l_d = log_rigidity(mc), log_rigidity(data)
    lo, hi = np.nanquantile(l_d, [0.05, 0.95])
    bins = np.linspace(lo, hi, 6)
    h_d = np.histogram(l_d, bins)[0] / np.sum((l_d >= lo) & (l_d <= hi))
    m = (l_mc >= lo) & (l_mc <= hi)
    h_w = np.histogram(l_mc[m], bins, weights=w[m])[0] / w[m].sum()
    assert np.abs(h_w - h_d).max() < 0.06, (h_w, h_d)
    assert np.nanmedian(10**l_mc) > 2 * np.nanmedian(10**l_d)  # MC flat in log R, Data falling


def _two_class(n: int, fraction: float, rng: np.random.Generator, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    y = (rng.random(n) < fraction).astype(float)
    x = rng.normal(size=(n, 4)) + 1.5 * y[:, None]
    x[:, 0] += shift
    return x, y


def _posterior(x: np.ndarray, prior: float) -> np.ndarray:
    """P(y=1 | x) of the two Gaussians at ``prior`` (a well calibrated MC classifier)."""
    llr = 1.5 * x.sum(axis=1) - 4 * 1.5**2 / 2
    return 1 / (1 + np.exp(-(llr + np.log(prior / (1 - prior)))))


@pytest.mark.parametrize("method", ["mlls", "bbse"])
def test_class_matched_domain_accuracy(method: str) -> None:
    rng = np.random.default_rng(3)
    x_mc, y_mc = _two_class(6000, 0.5, rng)
    x_d, _ = _two_class(6000, 0.15, rng)  # same classes, another mix
    est = estimate_signal_fraction(y_mc, _posterior(x_mc, 0.5), _posterior(x_d, 0.5), method=method)
    assert abs(est["fraction"] - 0.15) < 0.03, est
    raw = domain_classifier_accuracy(x_mc, x_d)
    matched = class_matched_domain_accuracy(x_mc, x_d, y_mc, est["fraction"])
    assert raw > 0.6  # the class mix alone tells the domains apart
    assert abs(matched - 0.5) < 0.04, matched
    # a real shift of the features is still seen once the class mix is matched
    x_s, _ = _two_class(6000, 0.15, rng, shift=1.0)
    est_s = estimate_signal_fraction(y_mc, _posterior(x_mc, 0.5), _posterior(x_s, 0.5), method=method)
    assert class_matched_domain_accuracy(x_mc, x_s, y_mc, est_s["fraction"]) > 0.6


def test_class_weights() -> None:
    y = np.r_[np.ones(300), np.zeros(700)]
    w = class_matched_weights(y, 0.6)
    assert abs(np.sum(w * y) / np.sum(w) - 0.6) < 1e-12
    r = np.r_[np.full(300, 2.0), np.full(700, 0.5)]  # rigidity weights change the MC mix first
    w = class_matched_weights(y, 0.6, r)
    assert abs(np.sum(w * y) / np.sum(w) - 0.6) < 1e-12
    lw = label_weights(y, 0.6)  # relative to the training MC's mix
    np.testing.assert_allclose(lw, [0.4 / 0.7, 0.6 / 0.3])


def test_species_weights_give_mc_the_data_composition() -> None:
    from autopid.calibration.species_mix import species_weights

    z = np.r_[np.full(500, 15), np.full(100, 14), np.full(300, 16), np.full(100, 17), np.full(50, 18)]
    base = np.random.default_rng(0).uniform(0.5, 2.0, len(z))  # rigidity weights
    comp = {14: 0.25, 15: 0.45, 16: 0.25, 17: 0.05}
    f = species_weights(z, comp, base)
    w = base * f
    covered = z != 18
    for charge, p in comp.items():  # among the covered charges, the Data fractions
        assert abs(w[z == charge].sum() / w[covered].sum() - p) < 1e-9
    assert abs(w.sum() / base.sum() - 1) < 1e-9  # the mean weight is kept
    # template-fit yields need not sum to 1: only their proportions count
    np.testing.assert_allclose(species_weights(z, {k: 40 * v for k, v in comp.items()}, base), f)
    # a charge MC nearly lacks: its factor is clipped at 50, and the mean weight still kept
    rare = species_weights(np.r_[np.full(999, 15), [14]], {14: 0.5, 15: 0.5})
    assert rare[-1] / rare[0] == pytest.approx(50 / (0.5 / 0.999)) and rare.mean() == pytest.approx(1.0)
    np.testing.assert_allclose(f[z == 18], f[z == 18][0])  # an uncovered charge keeps one factor
    # signed codes (antiparticles) and no base weights work too
    f2 = species_weights(-z, comp)
    assert abs(f2[z == 14].sum() / f2[covered].sum() - 0.25) < 1e-9

def test_adaptation_weights_mc_to_the_data_composition(ams_ds: PreprocessedDataset) -> None:
    """With adaptation, MC is weighted to the Data composition by charge (estimated from the
    L1 charge), which replaces the signal/background label-shift weights; with
    ``species_matching: false`` the label-shift weights come back."""
    import torch

    from autopid.train.config import TrainConfig
    from autopid.train.fit import fit

    torch.set_num_threads(1)
    params = {"token_channels": 8, "gnn_hidden": 8, "gnn_layers": 1, "cnn_channels": 4, "mlp_hidden": 8,
              "classifier_channels": 8}
    states = {}
    for matching in (None, False):
        cfg = TrainConfig(dataset="ams", species="phosphorus", model={"family": "mda", "params": params},
                          training={"epochs": 2, "max_train_rows": 600, "max_eval_rows": 300, "batch_size": 64,
                                    "lambda_max": 0.05, "species_matching": matching})
        _, states[matching] = fit(cfg, ams_ds)
    on, off = states[None], states[False]
    assert on.label_weights is None and off.label_weights is not None
    # the matched signal fraction follows from the composition, not from the model's score
    assert all(np.isfinite(h["domain_accuracy"]) for h in on.history)
    assert on.history[0]["data_signal_fraction_matched"] != off.history[0]["data_signal_fraction_matched"]


def test_shared_dataset_reads_role_columns_it_does_not_hold(ams_ds: PreprocessedDataset) -> None:
    """A search's in-memory dataset holds the features; the auxiliary branches the roles
    read (ladder, second tracks, extra clusters) come from disk."""
    import pandas as pd

    from autopid.search.shared_data import InMemoryDataset

    mem = InMemoryDataset(ams_ds.path)
    for domain in ("mc", "data"):
        pd.testing.assert_frame_equal(mem.role_frame("train", domain), ams_ds.role_frame("train", domain))


def test_species_matching_needs_adaptation() -> None:
    from autopid.train.config import TrainConfig

    with pytest.raises(ValueError, match="species_matching needs training.lambda_max > 0"):
        TrainConfig(dataset="ams", species="phosphorus", model={"family": "mda", "params": {}},
                    training={"species_matching": True})


@pytest.mark.parametrize("broken_fraction", [0.1, 0.3])
def test_layers_that_saw_another_charge_do_not_pull_the_gain(broken_fraction: float) -> None:
    """Nuclei that broke up between L1 and L2 cross L1 one charge higher than the rest of
    the tracker: they measure no L1 gain. Data under a phosphorus selection has 30 % of
    them (MC 10 %); a plain median of the L1 ratios is pulled by about 1 %, the peak of
    the ratios is not."""
    rng = np.random.default_rng(5)
    n, layers = 30_000, 8
    z = np.full((n, layers), 15.0)
    z[rng.random(n) < broken_fraction, 0] = 16.0
    gain = np.ones(layers)
    gain[0] = 1.03
    q = (z * gain)[:, :, None] + 0.35 * rng.standard_normal((n, layers, 2))
    charge = np.full((n, 2, layers, 2), np.nan)
    charge[:, 0] = q
    pos = np.full((n, 2, layers, 2), np.nan)
    pos[:, 0] = rng.uniform(-40, 40, n)[:, None, None]

    def l1_over_inner(m: GainMap) -> float:
        x = np.linspace(-30, 30, 7)
        return float(np.mean(m.cell_gain(0, x, 0)) / np.mean([m.cell_gain(k, x, 0) for k in range(1, layers)]))

    anchored = l1_over_inner(fit_gain_map(charge, pos, list(range(1, layers + 1)), absolute=False))
    median = l1_over_inner(fit_gain_map(charge, pos, list(range(1, layers + 1)), absolute=False, anchor=False))
    assert median - 1.03 > (0.008 if broken_fraction > 0.2 else 0.002)  # what the peak avoids
    assert abs(anchored - 1.03) < min(0.004, 0.5 * (median - 1.03))
