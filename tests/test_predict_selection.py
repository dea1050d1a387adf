"""``predict`` applies the selection the model was trained under: the kept entries are the
ones preprocessing kept, the cut flow is counted independently here, ``--no-selection``
scores everything, and the CLI prints and writes it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import uproot
from test_predict_models import fse_dir, mda_dir  # noqa: F401 - fixtures

from autopid.cli import main
from autopid.config.dataset import DatasetConfig
from autopid.data import PreprocessedDataset
from autopid.errors import InputError
from autopid.publish.predict import Predictor, predict
from autopid.publish.registry import Registry


def _data_file(ds: PreprocessedDataset) -> Path:
    return Path(next(i["path"] for i in ds.manifest["inputs"] if i["domain"] == "data"))


def _cutflow(arrays: dict[str, np.ndarray], cfg: DatasetConfig) -> tuple[np.ndarray, list[int], list[int]]:
    """Keep mask, dropped and dropped-as-missing per step of the config's required features
    and cuts, in plain NumPy."""
    def value(b: str) -> np.ndarray:
        v = arrays[b].astype(np.float64)
        return np.where(np.isin(v, cfg.sentinels), np.nan, v)

    keep = np.ones(len(arrays["run"]), dtype=bool)
    dropped, missing = [], []
    steps = [(value(b), np.isfinite(value(b))) for b in cfg.required]
    for c in cfg.selection:
        v, x = value(c.branch), c.value
        with np.errstate(invalid="ignore"):
            if c.op == "between":
                ok = (v >= x[0]) & (v <= x[1])
            elif c.op == "abs<":
                ok = np.abs(v) < x
            else:
                ok = v > x if c.op == ">" else v >= x
        assert c.op in ("between", "abs<", ">", ">="), c.op  # what the built-in datasets use
        steps.append((v, ok))
    for v, ok in steps:
        dropped.append(int((keep & ~ok).sum()))
        missing.append(int((keep & ~ok & np.isnan(v)).sum()))
        keep &= ok
    return keep, dropped, missing


def test_mda_predict_keeps_what_preprocessing_kept(mda_dir: Path, ams_ds: PreprocessedDataset,  # noqa: F811
                                                   ams_cfg: DatasetConfig) -> None:
    path = _data_file(ams_ds)
    arrays = uproot.open(path)["amstree"].arrays(library="np")
    keep, dropped, _ = _cutflow(arrays, ams_cfg)
    assert 0.1 * len(keep) < keep.sum() < 0.9 * len(keep)  # the cuts matter on this file

    res = predict(mda_dir, path, threads=1, batch_size=700)
    rep = res.selection
    assert rep is not None and rep.recorded and rep.applied
    np.testing.assert_array_equal(res.entry, np.flatnonzero(keep))
    assert (rep.entries, rep.kept) == (len(keep), int(keep.sum())) and len(res.score) == rep.kept
    assert [c.dropped for c in rep.cuts] == dropped and sum(dropped) + rep.kept == rep.entries
    assert [c.label for c in rep.cuts][-1] == "trk_charge_inner between [13.5, 17.5]"
    # the same events as the cache holds for this file's run (all splits)
    run = int(arrays["run"][0])
    cache = pd.concat([ams_ds.frame(s, "data", ["run", "event"]) for s in ("train", "validation", "test")])
    cached = set(cache.loc[cache["run"] == run, "event"].tolist())
    assert cached == set(res.extra["event"].tolist())

    # scores of the kept entries do not depend on what else was in the batch
    everything = predict(mda_dir, path, threads=1, apply_selection=False)
    assert len(everything.score) == len(keep) and everything.selection.kept == len(keep)
    assert np.abs(everything.score[res.entry] - res.score).max() <= 1e-6


def test_fse_cut_flow_on_branches_the_model_does_not_read(fse_dir: Path, alice_ds: PreprocessedDataset,  # noqa: F811
                                                          alice_cfg: DatasetConfig, tmp_path: Path) -> None:
    arrays = {k: v for k, v in uproot.open(_data_file(alice_ds))["O2pidtracks"].arrays(library="np").items()}
    # make every cut bite, on a model input (fDcaZ) and on branches it never reads (fEta, crossed rows)
    n = len(arrays["run"])
    rng = np.random.default_rng(1)
    arrays["fEta"] = rng.uniform(-1.2, 1.2, n).astype(np.float32)
    arrays["fDcaZ"][rng.random(n) < 0.1] = 3.5
    arrays["fEta"][:50] = np.nan  # missing: fails the cut, counted as missing
    keep, dropped, missing = _cutflow(arrays, alice_cfg)
    assert all(d > 0 for d in dropped[-3:]) and missing[-2] > 40
    path = tmp_path / "cut.root"
    with uproot.recreate(path) as fh:
        fh.mktree("O2pidtracks", {k: v.dtype for k, v in arrays.items()})
        fh["O2pidtracks"].extend(arrays)

    res = Predictor(fse_dir, threads=1).predict(path, batch_size=1000)
    rep = res.selection
    np.testing.assert_array_equal(res.entry, np.flatnonzero(keep))
    assert [c.dropped for c in rep.cuts] == dropped and [c.missing for c in rep.cuts] == missing
    assert rep.cuts[-3].label == "fTPCNClsCrossedRows >= 70.0"
    text = rep.summary()
    assert text.startswith(f"selection: kept {keep.sum()} of {n} entries")
    assert f"fEta abs< 0.8: dropped {dropped[-2]} (" in text and f"{missing[-2]} with 'fEta' missing)" in text
    # a DataFrame of the raw branches is selected the same way
    frame = pd.DataFrame(arrays)
    same = predict(fse_dir, frame, threads=1)
    np.testing.assert_array_equal(same.entry, res.entry)
    np.testing.assert_allclose(same.score, res.score, atol=1e-6)


def test_tables_without_the_cut_branches(fse_dir: Path, alice_ds: PreprocessedDataset,  # noqa: F811
                                         caplog: pytest.LogCaptureFixture) -> None:
    import logging

    arrays = uproot.open(_data_file(alice_ds))["O2pidtracks"].arrays(library="np")
    pred = Predictor(fse_dir, threads=1)
    cols = pred.spec["columns"]
    frame = pd.DataFrame({k: arrays[k] for k in ["run", "event", *cols]})
    # the model's columns only (as the cache stores rows): taken as already selected, with a warning
    log = logging.getLogger("autopid")
    log.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="autopid"):
            res = pred.predict(frame)
    finally:
        log.removeHandler(caplog.handler)
    assert len(res.score) == len(frame) and not res.selection.applied
    assert "holds only the model's columns, not 'fTPCNClsCrossedRows', 'fEta'" in caplog.text
    assert "cannot be applied" in res.selection.notes[0]
    # any other input must hold every branch the selection tests
    with pytest.raises(InputError, match=r"input: no branch 'fTPCNClsCrossedRows' .*'fEta' .*; tested by the model's "
                                         r"selection \(.*fEta abs< 0\.8.*--no-selection"):
        pred.predict(frame.assign(fPhi=arrays["fPhi"]))
    quiet = pred.predict(frame.assign(fPhi=arrays["fPhi"]), apply_selection=False)
    assert len(quiet.score) == len(frame) and "on request" in quiet.selection.notes[0]
    np.testing.assert_array_equal(quiet.score, res.score)


def test_cli_prints_the_cut_flow_and_scores_everything_on_request(mda_dir: Path, ams_ds: PreprocessedDataset,  # noqa: F811
                                                                  tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = _data_file(ams_ds)
    run = int(uproot.open(path)["amstree"]["run"].array(library="np", entry_stop=1)[0])
    reg = Registry(tmp_path / "reg")
    v = reg.publish(mda_dir, {"experiment": "ams", "species": "phosphorus", "family": "mda",
                              "validity": {"runs": [run, run]}})
    out = tmp_path / "scores.parquet"
    args = ["predict", "--species", "phosphorus", "--run", str(run), "--input", str(path), "--out", str(out),
            "--registry", str(reg.root), "--threads", "1"]
    assert main(args) == 0
    text = capsys.readouterr().out
    expected = Predictor(v.path, threads=1).predict(path)
    rep = expected.selection
    assert f"selection: kept {rep.kept} of {rep.entries} entries" in text
    assert f"  trk_charge_inner between [13.5, 17.5]: dropped {rep.cuts[-1].dropped} (" in text
    assert f"scored {rep.kept} of {rep.entries} entries with {v.id}" in text
    frame = pd.read_parquet(out)
    assert list(frame.columns) == ["entry", "run", "event", "score", "selected"]
    np.testing.assert_array_equal(frame["entry"], expected.entry)
    np.testing.assert_array_equal(frame["score"], expected.score)

    assert main([*args, "--no-selection", "--out", str(tmp_path / "all.csv")]) == 0
    text = capsys.readouterr().out
    assert "selection not applied" in text and "on request" in text
    assert len(pd.read_csv(tmp_path / "all.csv")) == rep.entries


def test_progress_bar_on_request(fse_dir: Path, alice_ds: PreprocessedDataset,  # noqa: F811
                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = _data_file(alice_ds)
    Predictor(fse_dir, threads=1).predict(path, batch_size=500, progress=True)
    assert "entries" in capsys.readouterr().err
    Predictor(fse_dir, threads=1).predict(path, batch_size=500)  # not a terminal: no bar
    assert capsys.readouterr().err == ""


def test_selection_is_recorded_as_json(mda_dir: Path) -> None:  # noqa: F811
    sel = json.loads((mda_dir / "preprocessing.json").read_text())["selection"]
    assert sel["required"] == ["rig_inner", "trk_charge_inner"]
    assert "required features present, then each cut in turn" in sel["order"]
