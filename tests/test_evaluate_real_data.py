"""Data without hidden truth (real Data) is evaluated truth-free: the metrics a decision
reads are there, and no hidden-truth block is made up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from autopid.config.dataset import DatasetConfig
from autopid.data import PreprocessedDataset
from autopid.evaluate import HIDDEN_TRUTH_KEY, evaluate, held_out_frames
from autopid.preprocess import preprocess


def test_data_without_hidden_truth_is_evaluated_truth_free(ams_cfg: DatasetConfig, tmp_path: Path) -> None:
    truth = ams_cfg.truth.model_copy(update={
        "label": ams_cfg.truth.label.model_copy(update={"data": None}), "extra": {}})
    real = ams_cfg.model_copy(update={"truth": truth})
    ds = PreprocessedDataset(preprocess(real, cache_root=tmp_path / "cache").path)
    assert "hidden_label" not in ds.evaluation_truth("test", "data")

    mc, data = held_out_frames(ds, "phosphorus", roles=True)
    assert len(data) > 0 and "y" not in data and "y" in mc

    def score(frame: pd.DataFrame) -> np.ndarray:  # an inner-charge window: leaves L1 to the fit
        return -np.abs(frame["trk_charge_inner"].to_numpy(np.float64) - 15.0)

    res = evaluate(score, -0.3, mc, data, ds=ds, species="phosphorus")
    assert HIDDEN_TRUTH_KEY not in res
    assert res["data"]["n"] == len(data) and 0 < res["data"]["n_selected"] < len(data)
    assert "gap" in res and ("gap" in res["gap"])
