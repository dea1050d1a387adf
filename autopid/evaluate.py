"""Held-out evaluation of a model or baseline on MC and on simulated Data.

The Data side reads the hidden truth of simulated Data: evaluation only, never training.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from autopid.data import PreprocessedDataset
from autopid.metrics import (
    background_rejection,
    binned,
    efficiency_gap,
    efficiency_purity_f1,
    roc_auc,
)

Scorer = Callable[[pd.DataFrame], np.ndarray]

DEFAULT_BINS = {"alice": [0.1, 0.5, 0.8, 1.5, 3.0, 10.0], "ams": [2.0, 5.0, 10.0, 30.0, 100.0, 2000.0]}


def held_out_frames(ds: PreprocessedDataset, species: str, max_rows: int | None = None, seed: int = 0
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """MC test rows with ``y`` from MC truth; Data test rows with ``y`` from hidden truth."""
    codes = ds.species_codes(species)
    mc = ds.frame("test", "mc")
    mc["y"] = np.isin(mc["truth_label"], codes).astype(np.float32)
    mc_truth = ds.evaluation_truth("test", "mc")
    for col in mc_truth.columns:
        if col.startswith("truth_") and col not in mc:
            mc[col] = mc_truth[col].to_numpy()
    data = ds.frame("test", "data")
    hidden = ds.evaluation_truth("test", "data")
    if len(data):
        data["y"] = np.isin(hidden["hidden_label"].to_numpy(), codes).astype(np.float32)
        for col in hidden.columns:
            if col.startswith("hidden_") and col != "hidden_label":
                data[col] = hidden[col].to_numpy()
    rng = np.random.default_rng(seed)
    if max_rows is not None:
        if len(mc) > max_rows:
            mc = mc.iloc[np.sort(rng.choice(len(mc), max_rows, replace=False))].reset_index(drop=True)
        if len(data) > max_rows:
            data = data.iloc[np.sort(rng.choice(len(data), max_rows, replace=False))].reset_index(drop=True)
    return mc, data


def physics_metrics(y: np.ndarray, score: np.ndarray, threshold: float, kinematic: np.ndarray | None = None,
                    bins: list[float] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"auc": roc_auc(y, score), "n": int(len(y)), "n_signal": int(np.sum(y))}
    out.update(efficiency_purity_f1(y, score, threshold))
    for eff in (0.9, 0.95):
        r = background_rejection(y, score, eff)
        out[f"rejection_{int(eff * 100)}"] = r["rejection"]
        out[f"background_efficiency_{int(eff * 100)}"] = r["background_efficiency"]
    if kinematic is not None and bins:
        out["binned"] = {
            "auc": binned(roc_auc, y, score, kinematic, bins),
            "efficiency": binned(lambda a, b: efficiency_purity_f1(a, b, threshold)["efficiency"], y, score, kinematic, bins),
            "purity": binned(lambda a, b: efficiency_purity_f1(a, b, threshold)["purity"], y, score, kinematic, bins),
        }
    return out


def evaluate(scorer: Scorer, threshold: float, mc: pd.DataFrame, data: pd.DataFrame, *,
             kinematic: str | None = None, bins: list[float] | None = None) -> dict[str, Any]:
    """MC and Data metrics at ``threshold`` and the MC-vs-Data efficiency gap."""
    s_mc = scorer(mc)
    res: dict[str, Any] = {"mc": physics_metrics(mc["y"].to_numpy(), s_mc, threshold,
                                                 mc[kinematic].to_numpy() if kinematic else None, bins)}
    if len(data):
        s_data = scorer(data)
        res["data"] = physics_metrics(data["y"].to_numpy(), s_data, threshold,
                                      data[kinematic].to_numpy() if kinematic else None, bins)
        res["gap"] = efficiency_gap(mc["y"].to_numpy(), s_mc, data["y"].to_numpy(), s_data, threshold)
    return res
