"""``predict`` reads RNTuple (what uproot >= 5.7 writes for ``file[name] = {...}``) like
TTree: scalar branches (ALICE) and fixed-size array branches (AMS ``float[2][9][2]``,
written as ``std::array``), the same entries kept and the same scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import uproot
from test_predict_models import fse_dir, mda_dir  # noqa: F401 - fixtures

from autopid.cli import main
from autopid.data import PreprocessedDataset
from autopid.publish.predict import Predictor


def _as_rntuple(src: Path, tree: str, dst: Path, name: str | None = None) -> Path:
    arrays = uproot.open(src)[tree].arrays(library="np")
    with uproot.recreate(dst) as fh:
        fh[name or tree] = arrays  # a dict assignment writes an RNTuple in uproot 5.7
    with uproot.open(dst) as fh:
        assert fh.classname_of(name or tree) == "ROOT::RNTuple"
    return dst


def _data_file(ds: PreprocessedDataset) -> Path:
    return Path(next(i["path"] for i in ds.manifest["inputs"] if i["domain"] == "data"))


@pytest.mark.parametrize("family", ["fse", "mda"])
def test_rntuple_scores_equal_ttree(family: str, fse_dir: Path, mda_dir: Path,  # noqa: F811
                                    alice_ds: PreprocessedDataset, ams_ds: PreprocessedDataset, tmp_path: Path) -> None:
    directory, ds, tree = (fse_dir, alice_ds, "O2pidtracks") if family == "fse" else (mda_dir, ams_ds, "amstree")
    ttree = _data_file(ds)
    rntuple = _as_rntuple(ttree, tree, tmp_path / "rn.root")
    if family == "mda":
        with uproot.open(rntuple) as fh:
            assert "std::array" in str(fh[tree]["trk_pos"].typename)
    pred = Predictor(directory, threads=1)
    for apply in (True, False):
        a = pred.predict(ttree, batch_size=900, apply_selection=apply)
        b = pred.predict(rntuple, batch_size=900, apply_selection=apply)
        assert len(a.score) > 100 and a.selection.to_dict() == b.selection.to_dict()
        np.testing.assert_array_equal(a.entry, b.entry)
        np.testing.assert_array_equal(a.score, b.score)
        for k in ("run", "event"):
            np.testing.assert_array_equal(a.extra[k], b.extra[k])
    assert a.selection.kept == a.selection.entries  # the second pass: every entry scored


def test_cli_on_an_rntuple_with_another_name(mda_dir: Path, ams_ds: PreprocessedDataset, tmp_path: Path,  # noqa: F811
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from autopid.publish.registry import Registry

    path = _as_rntuple(_data_file(ams_ds), "amstree", tmp_path / "renamed.root", name="events")
    reg = Registry(tmp_path / "reg")
    v = reg.publish(mda_dir, {"experiment": "ams", "species": "phosphorus", "family": "mda",
                              "validity": {"runs": [1, 2_000_000_000]}})
    out = tmp_path / "s.parquet"
    args = ["predict", "--model", str(v.id), "--input", str(path), "--out", str(out), "--registry", str(reg.root)]
    assert main(args) == 1  # the model's tree is amstree
    assert f"{path}: no tree 'amstree' (trees in file: events)" in capsys.readouterr().err
    assert main([*args, "--tree", "events"]) == 0
    expected = Predictor(v.path).predict(_data_file(ams_ds))
    assert f"scored {len(expected.score)} of {expected.selection.entries} entries" in capsys.readouterr().out
