"""Small exported models for the ``test_predict_*`` files, and what an export records.

The models are trained once per session (1 epoch on a few hundred rows of the conftest
caches, without Ray) and shared through :func:`exported`: the other files import it
(``from test_predict_models import exported``). Scores need not be good, only the same
everywhere.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from autopid.config.dataset import DatasetConfig
from autopid.data import PreprocessedDataset
from autopid.publish.onnx_export import export_model
from autopid.publish.predict import Predictor
from autopid.train import artifacts
from autopid.train.config import TrainConfig
from autopid.train.fit import fit

PARAMS = {
    "fse": {"embed_channels": [32, 16], "ff_channels": 32, "num_layers": 1, "pool_channels": 16,
            "classifier_channels": 16},
    "mda": {"token_channels": 16, "gnn_hidden": 16, "gnn_layers": 2, "cnn_channels": 4, "mlp_hidden": 16,
            "classifier_channels": 16},
}
SPECIES = {"fse": "proton", "mda": "phosphorus"}
_DONE: dict[tuple[str, str], Path] = {}


def exported(family: str, ds: PreprocessedDataset, factory: pytest.TempPathFactory) -> Path:
    """The export directory of a small model of ``family`` trained on ``ds`` (made once)."""
    key = (family, str(ds.path))
    if key not in _DONE:
        torch.set_num_threads(1)
        name = "alice" if family == "fse" else "ams"
        cfg = TrainConfig(dataset=name, species=SPECIES[family], model={"family": family, "params": PARAMS[family]},
                          training={"epochs": 1, "max_train_rows": 600, "max_eval_rows": 300, "batch_size": 64,
                                    "lambda_max": 0.3})
        model, _ = fit(cfg, ds)
        work = factory.mktemp(f"predict-{family}")
        artifacts.save_atomic(artifacts.model_payload(model, cfg, ds), work / "model.pt")
        _DONE[key] = export_model(work / "model.pt", ds, work / "export", threads=1).directory
    return _DONE[key]


def old_export(directory: Path, dest: Path) -> Path:
    """A copy of ``directory`` as an export made before selections were recorded."""
    shutil.copytree(directory, dest)
    spec_path = dest / "preprocessing.json"
    spec = json.loads(spec_path.read_text())
    del spec["selection"]
    spec["format"] = 1
    spec_path.write_text(json.dumps(spec))
    return dest


@pytest.fixture(scope="module")
def fse_dir(alice_ds: PreprocessedDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return exported("fse", alice_ds, tmp_path_factory)


@pytest.fixture(scope="module")
def mda_dir(ams_ds: PreprocessedDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return exported("mda", ams_ds, tmp_path_factory)


def test_export_records_the_selection(fse_dir: Path, mda_dir: Path, alice_cfg: DatasetConfig,
                                      ams_cfg: DatasetConfig) -> None:
    for d, cfg in ((fse_dir, alice_cfg), (mda_dir, ams_cfg)):
        spec = json.loads((d / "preprocessing.json").read_text())
        sel = spec["selection"]
        # the conftest caches' own cuts (AMS: a wide charge window and no rigidity cut), in order
        assert sel["cuts"] == [c.model_dump(mode="json") for c in cfg.selection] and sel["cuts"]
        assert sel["required"] == list(cfg.required) and spec["format"] == 2
        assert json.loads((d / "export.json").read_text())["selection"] == sel
        assert Predictor(d).selection is not None


def test_mda_graph_uses_row_scatters(mda_dir: Path) -> None:
    import onnx

    ops = {n.op_type for n in onnx.load(str(mda_dir / "model.onnx")).graph.node}
    # ScatterElements (one index per element) made the graph 5x slower in ONNX Runtime
    assert "ScatterND" in ops and "ScatterElements" not in ops


def test_old_export_without_selection_still_scores_everything(fse_dir: Path, alice_ds: PreprocessedDataset,
                                                              tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    old = old_export(fse_dir, tmp_path / "old")
    path = Path(alice_ds.manifest["inputs"][0]["path"])
    pred = Predictor(old, threads=1)
    assert pred.selection is None
    log = logging.getLogger("autopid")
    log.addHandler(caplog.handler)  # the CLI may have stopped propagation to the root logger
    try:
        with caplog.at_level(logging.WARNING, logger="autopid"):
            res = pred.predict(path)
    finally:
        log.removeHandler(caplog.handler)
    assert "carries no selection" in caplog.text
    rep = res.selection
    assert rep is not None and not rep.recorded and not rep.applied and "carries no selection" in rep.notes[0]
    assert rep.entries == rep.kept == len(res.score) and np.array_equal(res.entry, np.arange(rep.entries))
    new = Predictor(fse_dir, threads=1).predict(path, apply_selection=False)
    np.testing.assert_array_equal(res.score, new.score)
