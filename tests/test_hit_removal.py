"""The truth-free hit removal: MC tracker hits dropped down to Data's hit efficiency.

The simulated Data keeps 96 % of the tracker hits per layer and side against MC's 98 %
(``simulate/ams.py``), so MC must lose about 1 - 0.96/0.98 = 2 % of its main-track hits
(charge and position missing, one cluster fewer), Data nothing, each event the same hits
whatever frame it is in, and every consumer of the calibration (the MDA's graph in
training and in inference) must see the same hits.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from autopid.calibration.gains import (
    ChargeCalibration,
    fit_charge_calibration,
    removal_slots,
)
from autopid.calibration.hits import fit_hit_removal
from autopid.config.dataset import DatasetConfig
from autopid.data import PreprocessedDataset
from autopid.data.mda import MDADataset
from autopid.preprocess import preprocess
from autopid.publish.mda_inputs import events
from autopid.testing import dataset_for, mda_datasets_three_ways

SIM_DROP = 1 - 0.96 / 0.98  # simulator defaults: hit efficiency Data 0.96, MC 0.98


@pytest.fixture(scope="module")
def cal(ams_ds: PreprocessedDataset) -> ChargeCalibration:
    return fit_charge_calibration(ams_ds, noise_overlay=False, resolution_smearing=False)  # the removal alone


def _main(ds: PreprocessedDataset, branch: str) -> list[str]:
    return [c for c in ds.feature_columns(branch) if c.startswith(f"{branch}[0]")]


def test_the_estimate_finds_the_data_inefficiency_and_nothing_between_equal_samples(
        ams_ds: PreprocessedDataset, cal: ChargeCalibration) -> None:
    assert cal.removal is not None
    slots = removal_slots(ams_ds)
    # the MDA's charge layers (L1-L8), both sides, of the main track only
    assert len(slots) == 16 and all(c.startswith("trk_charge[0]") for c in slots)
    assert slots["trk_charge[0][2][1]"] == ("trk_pos[0][2][1]", "trk_nclusters[2][1]")
    drop = np.array([cal.removal.drop[c] for c in slots])
    assert np.all(drop >= 0)
    assert abs(drop.mean() - SIM_DROP) < 0.01, drop
    # the inner+L1 rigidity exists only with the L1 y hit (side 1): it goes with that hit alone
    assert cal.removal.blank["trk_charge[0][0][1]"] == ["trk_pos[0][0][1]", "rig_inner_l1"]
    assert all(v == [slots[c][0]] for c, v in cal.removal.blank.items() if c != "trk_charge[0][0][1]")
    mc = ams_ds.frame("train", "mc", list(slots))
    cols = {c: mc[c].to_numpy(np.float64) for c in mc.columns}
    same = fit_hit_removal(cols, cols, slots, list(slots))
    assert max(same.drop.values()) == 0.0


def test_fit_hit_removal_drops_down_to_the_lower_efficiency_only() -> None:
    rng = np.random.default_rng(1)
    n = 50_000

    def domain(eff: float) -> dict[str, np.ndarray]:
        return {"q": np.where(rng.random(n) < eff, 15.0, np.nan), "key": rng.random(n)}

    mc, data = domain(0.98), domain(0.90)
    rem = fit_hit_removal(mc, data, {"q": (None, None)}, ["key"])
    assert rem.drop["q"] == pytest.approx(1 - 0.90 / 0.98, abs=0.005)
    gone = rem.dropped(mc, slice(None))["q"]
    kept = np.isfinite(mc["q"]) & ~gone
    assert kept.mean() == pytest.approx(0.90, abs=0.005)
    assert not (gone & ~np.isfinite(mc["q"])).any()  # only hits that are there are dropped
    # MC less efficient than Data: nothing can be added, nothing is dropped
    assert fit_hit_removal(data, mc, {"q": (None, None)}, ["key"]).drop["q"] == 0.0
    # a column missing exactly without the hit, in both domains, is blanked with it; one
    # tied in a single domain, or missing without reason, is not
    for d in (mc, data):
        d["fit"] = np.where(np.isfinite(d["q"]), 1.0, np.nan)
        d["other"] = np.where(rng.random(n) < 0.3, np.nan, 1.0)
        # mostly missing anyway (a second track's value): not evidence of a tie
        d["rare"] = np.where(np.isfinite(d["q"]) & (rng.random(n) < 0.01), 1.0, np.nan)
    mc["mc_only"] = mc["fit"]
    data["mc_only"] = np.ones(n)
    rem = fit_hit_removal(mc, data, {"q": ("pos", None)}, ["key"], others=["fit", "other", "mc_only", "rare"])
    assert rem.blank["q"] == ["pos", "fit"]
    mc["pos"] = np.ones(n)
    out_fit = np.where(rem.dropped(mc, slice(None))["q"], np.nan, mc["fit"])
    assert np.isfinite(out_fit).mean() == pytest.approx(0.90, abs=0.005)
    # too few rows: no estimate, nothing dropped
    few = {c: v[:100] for c, v in data.items()}
    assert fit_hit_removal(mc, few, {"q": (None, None)}, ["key"]).drop["q"] == 0.0


def test_mc_rows_lose_hits_data_rows_do_not_and_each_event_keeps_its_draws(
        ams_ds: PreprocessedDataset, cal: ChargeCalibration) -> None:
    qcols, pcols = _main(ams_ds, "trk_charge")[:16], _main(ams_ds, "trk_pos")[:16]
    ncols = ams_ds.feature_columns("trk_nclusters")[:16]
    mc = ams_ds.frame("validation", "mc")
    cols = {c: mc[c].to_numpy(np.float64) for c in mc.columns}
    out = cal.calibrate(cols, ams_ds, "mc")
    raw_q = np.stack([cols[c] for c in qcols], axis=1)
    q = np.stack([out[c] for c in qcols], axis=1)
    gone = np.isfinite(raw_q) & ~np.isfinite(q)
    assert gone.mean() == pytest.approx(SIM_DROP, abs=0.01)
    assert not (np.isfinite(q) & ~np.isfinite(raw_q)).any()  # nothing added
    # slots draw independently: a row that loses a hit seldom loses another (about 1.2 each)
    per_row = gone.sum(axis=1)
    assert per_row[per_row > 0].mean() < 1.5
    np.testing.assert_array_equal(~np.isfinite(np.stack([out[c] for c in pcols], axis=1)),
                                  ~np.isfinite(np.stack([cols[c] for c in pcols], axis=1)) | gone)
    np.testing.assert_array_equal(np.stack([out[c] for c in ncols], axis=1),
                                  np.stack([cols[c] for c in ncols], axis=1) - gone)
    # a layer whose x hit was removed calibrates its y charge as a Data hit without x does:
    # with the (layer, side) gain, not the gain of the x bin it no longer has
    xq, yq, xp = "trk_charge[0][3][0]", "trk_charge[0][3][1]", "trk_pos[0][3][0]"
    lost_x = np.isfinite(cols[xq]) & ~np.isfinite(out[xq]) & np.isfinite(cols[yq])
    assert lost_x.any()
    plain = fit_charge_calibration(ams_ds, noise_overlay=False, hit_removal=False, resolution_smearing=False)
    no_x = plain.calibrate({**cols, xp: np.where(lost_x, np.nan, cols[xp])}, ams_ds, "mc")
    np.testing.assert_allclose(out[yq][lost_x], no_x[yq][lost_x])
    assert not np.allclose(out[yq][lost_x], plain.calibrate(cols, ams_ds, "mc")[yq][lost_x])
    # the missing-hit fraction of MC now matches Data's
    data = ams_ds.frame("validation", "data", qcols)
    miss_data = (~np.isfinite(data.to_numpy(np.float64))).mean()
    assert abs((~np.isfinite(q)).mean() - miss_data) < abs((~np.isfinite(raw_q)).mean() - miss_data)
    # Data rows stay as they are
    as_data = cal.calibrate(cols, ams_ds, "data")
    for c in [*pcols, *ncols]:
        np.testing.assert_array_equal(as_data[c], cols[c])
    np.testing.assert_array_equal(~np.isfinite(np.stack([as_data[c] for c in qcols], axis=1)), ~np.isfinite(raw_q))
    # per-row codes, another order, a subset: every event loses the same hits
    codes = np.arange(len(mc)) % 2
    mixed = cal.calibrate(cols, ams_ds, codes)
    gone_mixed = np.isfinite(raw_q) & ~np.isfinite(np.stack([mixed[c] for c in qcols], axis=1))
    np.testing.assert_array_equal(gone_mixed, gone & (codes == 0)[:, None])
    order = np.random.default_rng(0).permutation(len(mc))[: len(mc) // 2]
    sub = cal.calibrate({c: v[order] for c, v in cols.items()}, ams_ds, "mc")
    np.testing.assert_array_equal(np.isfinite(np.stack([sub[c] for c in qcols], axis=1)), np.isfinite(q[order]))
    # stored with the model as JSON (format 3, which older readers refuse), it drops the same
    stored = cal.to_dict()
    assert stored["format"] == 3
    again = ChargeCalibration.from_dict(stored)
    np.testing.assert_array_equal(np.isfinite(np.stack([again.calibrate(cols, ams_ds, "mc")[c] for c in qcols],
                                                       axis=1)), np.isfinite(q))
    del stored["hit_removal"]
    stored["format"] = 1
    assert ChargeCalibration.from_dict(stored).removal is None
    with pytest.raises(ValueError, match="format"):
        ChargeCalibration.from_dict({**cal.to_dict(), "format": 4})


def test_training_and_inference_build_the_same_graphs_of_mc(ams_ds: PreprocessedDataset,
                                                           cal: ChargeCalibration) -> None:
    mc = ams_ds.frame("validation", "mc").head(800).reset_index(drop=True)
    plain, as_mc, as_data = mda_datasets_three_ways(mc, ams_ds, cal)
    np.testing.assert_array_equal(as_data.hit, plain.hit)
    lost = plain.hit & ~as_mc.hit
    assert lost.any() and not (as_mc.hit & ~plain.hit).any()
    assert lost[:, 1:].sum() == 0  # the second track keeps its hits
    assert as_mc.node_count.sum() == plain.node_count.sum() - lost.sum()
    # the (normalised) cluster image is lower exactly where a main-track hit was lost
    np.testing.assert_array_equal(as_mc.image < plain.image, lost[:, :1])
    assert not (as_mc.image > plain.image).any()
    # rows whose L1 y hit was dropped lose their inner+L1 rigidity too (its presence flag)
    l1y = lost[:, 0, 0, 1]
    flag = len(ams_ds.manifest["mda"]["rigidity"]) + 1  # [values..., presence flags...]: rig_inner_l1's flag
    assert l1y.any() and not as_mc.rigidity[l1y, flag].any() and plain.rigidity[l1y, flag].all()
    np.testing.assert_array_equal(as_mc.rigidity[~l1y], plain.rigidity[~l1y])
    cols = {c: mc[c].to_numpy(np.float64) for c in mc.columns}
    for domain, built in (("mc", as_mc), ("data", as_data)):
        ev = events(cols, ams_ds, domain=domain, calibration=cal)
        np.testing.assert_array_equal(ev.hit, built.hit)
        np.testing.assert_allclose(ev.charge, built.charge, rtol=1e-6)
        np.testing.assert_allclose(ev.image, built.image, rtol=1e-6)
        np.testing.assert_allclose(ev.rigidity, built.rigidity, rtol=1e-6)


AMS_RENAMED = {"trk_charge": "hit_q", "trk_pos": "hit_xy", "trk_nclusters": "n_clusters",
               "rig_inner": "rigidity_in", "rig_inner_l1": "rigidity_full", "tof_beta": "beta"}


def test_other_branch_names_and_a_tree_autopid_did_not_write(ams_root: Path, tmp_path: Path) -> None:
    """The slots, their positions and counts, and the column tied to a hit come from the
    dataset's layout and from the data, not from autopid's own branch names."""
    import uproot

    from autopid.simulate._common import write_root

    for path in sorted(ams_root.glob("P2026a/*/*.root")):
        with uproot.open(path) as fh:
            arrays = fh["amstree"].arrays(library="np")
        write_root(tmp_path / "files" / path.parent.name / path.name, "nuclei",
                   {AMS_RENAMED.get(k, k): v for k, v in arrays.items()})
    text = json.dumps(dataset_for("ams", ams_root, chunk_size=4000, selection=[
        {"branch": "trk_charge_inner", "op": "between", "value": [13.5, 17.5]}]).model_dump(mode="json",
                                                                                       exclude_none=True))
    for old, new in AMS_RENAMED.items():
        text = text.replace(f'"{old}"', f'"{new}"')
    raw = json.loads(text)
    raw["sources"] = [{"domain": d, "files": [str(tmp_path / "files" / d / "*.root")], "tree": "nuclei"}
                      for d in ("mc", "data")]
    ds = PreprocessedDataset(preprocess(DatasetConfig.model_validate(raw), cache_root=tmp_path / "cache").path)
    cal = fit_charge_calibration(ds)
    assert cal.removal is not None and cal.smearing is not None and cal.overlay is not None
    assert cal.removal.blank["hit_q[0][0][1]"] == ["hit_xy[0][0][1]", "rigidity_full"]
    assert cal.removal.count["hit_q[0][3][0]"] == "n_clusters[3][0]"
    assert set(cal.smearing.extra) == {f"hit_q[0][{li}][{si}]" for li in range(8) for si in range(2)}
    mc = ds.frame("validation", "mc").head(500).reset_index(drop=True)
    built = MDADataset(mc, ds, calibration=cal, domain="mc")
    ev = events({c: mc[c].to_numpy(np.float64) for c in mc.columns}, ds, domain="mc", calibration=cal)
    np.testing.assert_array_equal(ev.hit, built.hit)
    np.testing.assert_allclose(ev.charge, built.charge, rtol=1e-6)
