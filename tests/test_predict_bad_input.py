"""Bad input to ``predict`` and to an exported model: one message naming the file (or the
input) and the real cause. tests/BAD_INPUT.md lists every class with its test."""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pandas as pd
import pytest
import uproot
from test_predict_models import fse_dir, mda_dir  # noqa: F401 - fixtures

from autopid.cli import main
from autopid.data import PreprocessedDataset
from autopid.errors import ConfigError, InputError
from autopid.publish.predict import Prediction, Predictor, predict
from autopid.publish.registry import Registry
from autopid.simulate._common import write_root

ALICE = "O2pidtracks"


def _data_file(ds: PreprocessedDataset) -> Path:
    return Path(next(i["path"] for i in ds.manifest["inputs"] if i["domain"] == "data"))


def _arrays(ds: PreprocessedDataset, tree: str) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in uproot.open(_data_file(ds))[tree].arrays(library="np").items()}


def _ttree(path: Path, arrays: dict[str, Any], tree: str = ALICE) -> Path:
    write_root(path, tree, arrays)  # a TTree, as the simulator writes
    return path


def _message(fn: Any, kind: type[Exception] = InputError) -> str:
    with pytest.raises(kind) as err:
        fn()
    return str(err.value)


def _copy(directory: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(directory, tmp_path / "model"))


def _edit_json(path: Path, edit: Any) -> None:
    obj = json.loads(path.read_text())
    edit(obj)
    path.write_text(json.dumps(obj))


@pytest.fixture
def warnings_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    log = logging.getLogger("autopid")
    log.addHandler(caplog.handler)  # the CLI may have stopped propagation to the root logger
    try:
        with caplog.at_level(logging.WARNING, logger="autopid"):
            yield caplog
    finally:
        log.removeHandler(caplog.handler)


# -- the ROOT file ---------------------------------------------------------------------------------


def test_file_not_found_not_root_and_truncated(fse_dir: Path, alice_ds: PreprocessedDataset,  # noqa: F811
                                               tmp_path: Path) -> None:
    missing = tmp_path / "nothere.root"
    assert _message(lambda: predict(fse_dir, missing)) == f"{missing}: file not found"
    text = tmp_path / "notes.root"
    text.write_text("this is not ROOT\n" * 100)
    assert _message(lambda: predict(fse_dir, text)).startswith(f"{text}: not a readable ROOT file (")
    data = _data_file(alice_ds).read_bytes()
    cut = tmp_path / "cut.root"
    cut.write_bytes(data[: len(data) // 2])
    assert _message(lambda: predict(fse_dir, cut)) == (
        f"{cut}: the file is truncated ({len(data) // 2} of {len(data)} bytes); re-copy or regenerate it")


def test_corrupt_basket_names_the_branch(fse_dir: Path, alice_ds: PreprocessedDataset,  # noqa: F811
                                         tmp_path: Path) -> None:
    good = _data_file(alice_ds)
    seek = int(uproot.open(good)[ALICE]["fTPCSignal"].member("fBasketSeek")[0])
    data = bytearray(good.read_bytes())
    data[seek + 120: seek + 600] = b"\x07" * 480  # inside the first compressed basket of fTPCSignal
    path = tmp_path / "bad-basket.root"
    path.write_bytes(bytes(data))
    msg = _message(lambda: predict(fse_dir, path))
    assert re.fullmatch(rf"{re.escape(str(path))}:{ALICE}: cannot read branch 'fTPCSignal', entries 0-\d+ "
                        r"\(\w+: .+\); the file is corrupt", msg), msg


def test_wrong_tree_name_and_not_a_tree(fse_dir: Path, alice_ds: PreprocessedDataset,  # noqa: F811
                                        tmp_path: Path) -> None:
    path = _data_file(alice_ds)
    assert _message(lambda: predict(fse_dir, path, tree="tracks")) == (
        f"{path}: no tree 'tracks' (trees in file: {ALICE})")
    hist = tmp_path / "histogram.root"
    with uproot.recreate(hist) as fh:
        fh[ALICE] = np.histogram(np.arange(10.0))
    assert _message(lambda: predict(fse_dir, hist)) == f"{hist}: '{ALICE}' is a TH1D, not a TTree or RNTuple"


def test_missing_feature_branch_with_close_matches(fse_dir: Path, alice_ds: PreprocessedDataset,  # noqa: F811
                                                   tmp_path: Path) -> None:
    arrays = _arrays(alice_ds, ALICE)
    arrays["fBeta2"] = arrays.pop("fBeta")
    path = _ttree(tmp_path / "renamed.root", arrays)
    assert _message(lambda: predict(fse_dir, path)) == (
        f"{path}:{ALICE}: no branch 'fBeta' (close: 'fBeta2', 'fEta'); needed as a model input")


def test_missing_selection_branch_says_how_to_score_anyway(fse_dir: Path, alice_ds: PreprocessedDataset,  # noqa: F811
                                                           tmp_path: Path) -> None:
    arrays = _arrays(alice_ds, ALICE)
    del arrays["fTPCNClsCrossedRows"]
    path = _ttree(tmp_path / "no-rows.root", arrays)
    msg = _message(lambda: predict(fse_dir, path))
    assert msg.startswith(f"{path}:{ALICE}: no branch 'fTPCNClsCrossedRows' (close: 'fTPCNClsShared', 'fTPCNClsFound'); "
                          "tested by "
                          "the model's selection (fTPCSignal, fP, fPt, fSign present; fTPCNClsCrossedRows >= 70.0;")
    assert msg.endswith("pass --no-selection (apply_selection=False) to score every entry instead")
    assert len(predict(fse_dir, path, apply_selection=False).score) == len(arrays["run"])


def test_variable_length_branch_is_refused(fse_dir: Path, alice_ds: PreprocessedDataset,  # noqa: F811
                                           tmp_path: Path) -> None:
    arrays: dict[str, Any] = _arrays(alice_ds, ALICE)
    arrays["fTPCSignal"] = ak.Array([[1.0, 2.0]] * len(arrays["run"]))
    path = tmp_path / "jagged.root"
    with uproot.recreate(path) as fh:
        fh[ALICE] = arrays  # an RNTuple with a std::vector<double> field
    assert _message(lambda: predict(fse_dir, path)) == (
        f"{path}:{ALICE}: branch 'fTPCSignal' has type 'std::vector<double>'; "
        "expected a number or a fixed-size array of numbers")


def test_array_branch_of_another_shape(mda_dir: Path, ams_ds: PreprocessedDataset, tmp_path: Path) -> None:  # noqa: F811
    arrays = _arrays(ams_ds, "amstree")
    arrays["trk_pos"] = np.ascontiguousarray(arrays["trk_pos"][:, :, :8, :])  # 8 layers, not 9
    path = _ttree(tmp_path / "eight.root", arrays, "amstree")
    assert _message(lambda: predict(mda_dir, path)) == (
        f"{path}:amstree: branch 'trk_pos' holds [2, 8, 2] values per entry; the model was trained on "
        "shape [2, 9, 2]")


def test_inf_in_a_feature_names_the_entry(fse_dir: Path, alice_ds: PreprocessedDataset,  # noqa: F811
                                          tmp_path: Path) -> None:
    arrays = _arrays(alice_ds, ALICE)
    kept = predict(fse_dir, _data_file(alice_ds)).entry
    arrays["fDcaXY"][kept[7]] = np.inf
    path = _ttree(tmp_path / "inf.root", arrays)
    assert _message(lambda: predict(fse_dir, path, batch_size=1000)) == (
        f"{path}:{ALICE}: column 'fDcaXY' holds inf (first at entry {kept[7]}); the model was never trained "
        "on inf (preprocessing refuses it)")


def test_nan_only_feature_is_reported(fse_dir: Path, alice_ds: PreprocessedDataset, tmp_path: Path,  # noqa: F811
                                      warnings_log: pytest.LogCaptureFixture) -> None:
    arrays = _arrays(alice_ds, ALICE)
    arrays["fTOFSignal"][:] = np.nan
    path = _ttree(tmp_path / "no-tof.root", arrays)
    res = predict(fse_dir, path)
    note = (f"{path}:{ALICE}: feature 'fTOFSignal' is missing (NaN or a sentinel) in all {len(res.score)} scored "
            "entries; they are scored as if that detector were absent: check the branch mapping")
    assert note in res.selection.notes and note in warnings_log.text
    assert "fBeta" not in " ".join(res.selection.notes)  # only the dead one


def test_nan_only_selection_branch_drops_everything_and_says_why(fse_dir: Path, alice_ds: PreprocessedDataset,  # noqa: F811
                                                                 tmp_path: Path,
                                                                 warnings_log: pytest.LogCaptureFixture) -> None:
    arrays = _arrays(alice_ds, ALICE)
    arrays["fEta"][:] = np.nan
    path = _ttree(tmp_path / "no-eta.root", arrays)
    res = predict(fse_dir, path)
    n = len(arrays["run"])
    assert len(res.score) == 0 and res.selection.kept == 0
    eta = next(c for c in res.selection.cuts if c.branch == "fEta")
    assert eta.dropped == eta.missing > 0.9 * n
    note = (f"{path}:{ALICE}: branch 'fEta', which the selection tests, is missing (NaN or a sentinel) in all {n} "
            "entries, so every entry is dropped; check the branch mapping")
    assert note in res.selection.notes and note in warnings_log.text


def test_empty_tree_says_empty(fse_dir: Path, alice_ds: PreprocessedDataset, tmp_path: Path,  # noqa: F811
                               warnings_log: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "empty.root"
    with uproot.recreate(path) as fh:
        fh.mktree(ALICE, {k: v.dtype for k, v in _arrays(alice_ds, ALICE).items()})
    res = predict(fse_dir, path)
    assert len(res.score) == 0 and res.selection.entries == 0
    assert f"{path}:{ALICE}: the input is empty (0 entries); nothing to score" in warnings_log.text


def test_cut_on_an_array_branch(mda_dir: Path, ams_ds: PreprocessedDataset, tmp_path: Path) -> None:  # noqa: F811
    model = _copy(mda_dir, tmp_path)
    _edit_json(model / "preprocessing.json",
               lambda s: s["selection"]["cuts"].append({"branch": "trk_pos", "op": ">", "value": 0.0}))
    path = _data_file(ams_ds)
    assert _message(lambda: predict(model, path)) == (
        f"{path}:amstree: the selection cuts on 'trk_pos', which holds arrays of shape [2, 9, 2] here; "
        "a cut needs one number per entry")


# -- the model directory ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["scaling_params.json", "preprocessing.json"])
def test_model_directory_missing_a_file(name: str, fse_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    model = _copy(fse_dir, tmp_path)
    (model / name).unlink()
    assert _message(lambda: Predictor(model)) == (
        f"{model / name}: missing; the model directory {model} is incomplete (re-export or re-publish the model)")
    (model / "model.onnx").unlink()
    assert _message(lambda: Predictor(model)) == f"{model}: no model.onnx here (not an exported model directory)"


def test_corrupted_onnx_file(fse_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    model = _copy(fse_dir, tmp_path)
    onnx_path = model / "model.onnx"
    onnx_path.write_bytes(onnx_path.read_bytes()[:5000])
    msg = _message(lambda: Predictor(model))
    assert msg.startswith(f"{onnx_path}: ONNX Runtime cannot load the model (")
    assert msg.endswith("the file is corrupt or not an ONNX model")


def test_broken_side_files(fse_dir: Path, alice_ds: PreprocessedDataset, tmp_path: Path) -> None:  # noqa: F811
    model = _copy(fse_dir, tmp_path)
    spec = model / "preprocessing.json"
    good = spec.read_text()
    spec.write_text(good[:40])
    assert re.fullmatch(rf"{re.escape(str(spec))}: not valid JSON \(.+\); the file is corrupt",
                        _message(lambda: Predictor(model)))
    spec.write_text(good)
    _edit_json(spec, lambda s: s["selection"]["cuts"].append({"branch": "fEta", "op": "~", "value": 1}))
    assert _message(lambda: Predictor(model)).startswith(
        f"{spec}: the selection recorded in preprocessing.json is malformed (")
    spec.write_text(good)
    thr = model / "thresholds.json"
    thr.write_text(json.dumps({"default": "best_f1"}))
    assert _message(lambda: Predictor(model)) == f"{thr}: not a thresholds file (KeyError: 'best_f1')"
    thr.unlink()
    _edit_json(spec, lambda s: s.update(tree=None))
    assert Predictor(model).threshold is None  # no thresholds: scores only
    data = _data_file(alice_ds)
    assert _message(lambda: predict(model, data)) == (
        f"{data}: no tree name given and the model records none; pass --tree")


def test_sha256_mismatch_refuses_the_version(fse_dir: Path, alice_ds: PreprocessedDataset, tmp_path: Path,  # noqa: F811
                                             capsys: pytest.CaptureFixture[str]) -> None:
    reg = Registry(tmp_path / "reg")
    v = reg.publish(fse_dir, {"experiment": "alice", "species": "proton", "family": "fse",
                              "validity": {"runs": [1, 10**9]}})
    onnx_path = v.path / "model.onnx"
    blob = bytearray(onnx_path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # still loads in ONNX Runtime: only the checksum can tell
    onnx_path.write_bytes(bytes(blob))
    for call in (lambda: predict(v.path, _data_file(alice_ds)), lambda: predict(str(v.id), np.ones((1, 19)),
                                                                               registry=reg)):
        assert re.search(r"model\.onnx: sha256 .* corrupted", _message(call))
    code = main(["predict", "--model", str(v.id), "--input", str(_data_file(alice_ds)), "--out",
                 str(tmp_path / "s.parquet"), "--registry", str(reg.root)])
    err = capsys.readouterr().err
    assert code == 1 and "model.onnx: sha256" in err and "Traceback" not in err
    assert not (tmp_path / "s.parquet").exists()


def test_export_needs_the_cache_config(alice_ds: PreprocessedDataset, tmp_path: Path) -> None:
    from autopid.publish.inputs import preprocessing_spec

    copy = Path(shutil.copytree(alice_ds.path, tmp_path / "cache"))
    (copy / "config.yaml").unlink()
    msg = _message(lambda: preprocessing_spec(PreprocessedDataset(copy), "fse"), ConfigError)
    assert msg.startswith(f"{copy / 'config.yaml'}: missing or unreadable, so the selection the cache was made "
                          "with is unknown")


# -- in-memory inputs and the CLI ---------------------------------------------------------------------


def test_in_memory_inputs(fse_dir: Path, alice_ds: PreprocessedDataset) -> None:  # noqa: F811
    arrays = _arrays(alice_ds, ALICE)
    frame = pd.DataFrame(arrays)
    pred = Predictor(fse_dir, threads=1)
    assert _message(lambda: pred.predict(frame.drop(columns=["fBeta"]))) == (
        "input: the model needs columns the input lacks: fBeta")
    assert _message(lambda: pred.predict(frame.to_numpy()[:, :5])) == (
        "input: a NumPy input must be [rows, 19] in the order of columns_for_training.json, got shape "
        f"[{len(frame)}, 5]")
    assert _message(lambda: pred.predict([1.0, 2.0])) == (
        "input: unsupported input type list; pass a NumPy array, pandas DataFrame, awkward Array or a ROOT "
        "file path")
    words = frame.assign(fBeta=frame["fBeta"].astype(str).str.replace(".", ",", regex=False))
    assert _message(lambda: pred.predict(words)).startswith("input: column 'fBeta' is not numeric (")
    words = frame.assign(fEta=frame["fEta"].astype(str).str.replace(".", ",", regex=False))
    assert _message(lambda: pred.predict(words)).startswith(
        "input: branch 'fEta', which the selection tests, is not numeric (")
    short = {**arrays, "fEta": arrays["fEta"][:10]}
    assert _message(lambda: pred.predict(short)).startswith("input: columns have different lengths: run ")
    jagged = ak.Array({**arrays, "fBeta": [[1.0, 2.0]] * (len(frame) - 1) + [[1.0]]})
    assert _message(lambda: pred.predict(jagged)).startswith(
        "input: field 'fBeta' is not a number or a fixed-size array of numbers (")
    pairs = ak.Array({**arrays, "fBeta": [[1.0, 2.0]] * len(frame)})  # regular: a [N, 2] array
    assert _message(lambda: pred.predict(pairs)) == (
        "input: column 'fBeta' holds [2] values per entry; the model was trained on one")
    assert _message(lambda: pred.predict(frame, batch_size=0), ConfigError) == "batch size must be at least 1, got 0"
    assert isinstance(pred.predict(frame.iloc[:0]), Prediction)  # an empty table is an empty result


def _published(fse_dir: Path, tmp_path: Path) -> tuple[Registry, Any]:
    reg = Registry(tmp_path / "reg")
    return reg, reg.publish(fse_dir, {"experiment": "alice", "species": "proton", "family": "fse",
                                      "validity": {"runs": [1, 10**9]}})


def test_cli_bad_parquet_and_batch_size(fse_dir: Path, tmp_path: Path,  # noqa: F811
                                        capsys: pytest.CaptureFixture[str]) -> None:
    reg, v = _published(fse_dir, tmp_path)
    bad = tmp_path / "raw.parquet"
    bad.write_bytes(b"PAR1 not really")
    base = ["predict", "--model", str(v.id), "--out", str(tmp_path / "o.parquet"), "--registry", str(reg.root)]
    assert main([*base, "--input", str(bad)]) == 1
    assert f"{bad}: not a readable Parquet file (" in capsys.readouterr().err
    good = tmp_path / "raw2.parquet"
    pd.DataFrame({"fP": [1.0]}).to_parquet(good)
    assert main([*base, "--input", str(good), "--batch-size", "0"]) == 2
    assert "batch size must be at least 1, got 0" in capsys.readouterr().err


def test_cli_refuses_an_output_it_cannot_write_before_scoring(fse_dir: Path, tmp_path: Path,  # noqa: F811
                                                              alice_ds: PreprocessedDataset,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    reg, v = _published(fse_dir, tmp_path)
    good = _data_file(alice_ds)
    (tmp_path / "outdir").mkdir()
    base = ["predict", "--model", str(v.id), "--input", str(good), "--registry", str(reg.root)]
    for out, what in ((str(tmp_path / "outdir"), "a directory"), (f"{tmp_path / 'new'}/", "a directory"),
                      (str(tmp_path / "scores.txt"), "give a file name ending in .parquet or .csv")):
        assert main([*base, "--out", out]) == 2
        err = capsys.readouterr().err
        assert f"--out {out}: {what}" in err and "scored" not in err, err
    assert not (tmp_path / "new").exists()
    assert main([*base, "--out", str(tmp_path / "S.CSV")]) == 0  # any case; .pq is Parquet too
    assert len(pd.read_csv(tmp_path / "S.CSV")) > 0
