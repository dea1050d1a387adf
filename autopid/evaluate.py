"""Held-out evaluation of a model or baseline on MC and on simulated Data (the test split,
used once, for the final numbers and the promotion gate).

What a decision may read is truth-free on the Data side: ``data`` (rows, selected rows)
and ``gap`` (MC efficiency from MC truth minus the Data efficiency *estimated* by a
template fit, :mod:`autopid.estimate`). The hidden truth of simulated Data is kept apart
under :data:`HIDDEN_TRUTH_KEY` (``data_hidden_truth``): reports only, to check the
estimate; the promotion gate refuses any path into it.
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
HIDDEN_TRUTH_KEY = "data_hidden_truth"  # reports only: never read by a decision

DEFAULT_BINS = {"alice": [0.1, 0.5, 0.8, 1.5, 3.0, 10.0], "ams": [2.0, 5.0, 10.0, 30.0, 100.0, 2000.0]}


def held_out_frames(ds: PreprocessedDataset, species: str, max_rows: int | None = None, seed: int = 0, *,
                    roles: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """MC test rows with ``y`` from MC truth; Data test rows with ``y`` from hidden truth
    when the Data have it (simulated Data), without ``y`` otherwise (real Data).

    ``roles``: also the dataset's mapped roles as ``role:<name>`` columns (physical
    values, attached before the subsample so that the rows stay aligned).
    """
    codes = ds.species_codes(species)
    mc = ds.frame("test", "mc")
    mc["y"] = np.isin(mc["truth_label"], codes).astype(np.float32)
    mc_truth = ds.evaluation_truth("test", "mc")
    for col in mc_truth.columns:
        if col.startswith("truth_") and col not in mc:
            mc[col] = mc_truth[col].to_numpy()
    data = ds.frame("test", "data")
    hidden = ds.evaluation_truth("test", "data")
    # real Data has no hidden truth: its rows are evaluated truth-free only (no ``y``)
    if len(data) and "hidden_label" in hidden:
        data["y"] = np.isin(hidden["hidden_label"].to_numpy(), codes).astype(np.float32)
        for col in hidden.columns:
            if col.startswith("hidden_") and col != "hidden_label":
                data[col] = hidden[col].to_numpy()
    if roles:
        from autopid.estimate.data_efficiency import attach_roles

        mc = attach_roles(mc, ds, "test", "mc")
        data = attach_roles(data, ds, "test", "data")
    rng = np.random.default_rng(seed)
    if max_rows is not None:
        if len(mc) > max_rows:
            mc = mc.iloc[np.sort(rng.choice(len(mc), max_rows, replace=False))].reset_index(drop=True)
        if len(data) > max_rows:
            data = data.iloc[np.sort(rng.choice(len(data), max_rows, replace=False))].reset_index(drop=True)
    return mc, data


def physics_metrics(y: np.ndarray, score: np.ndarray, threshold: float, kinematic: np.ndarray | None = None,
                    bins: list[float] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"auc": roc_auc(y, score), "n": len(y), "n_signal": int(np.sum(y))}
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
             kinematic: str | None = None, bins: list[float] | None = None, ds: PreprocessedDataset | None = None,
             species: str | None = None, closure: bool = True) -> dict[str, Any]:
    """MC metrics, truth-free Data numbers and the estimated MC-Data efficiency gap at
    ``threshold``; hidden-truth Data metrics apart under :data:`HIDDEN_TRUTH_KEY`.

    The gap needs ``ds`` and ``species`` (the estimate reads the dataset's roles; ``mc``
    and ``data`` then carry ``role:<name>`` columns, see :func:`held_out_frames`); without
    them, or when the estimate is impossible, ``gap`` says ``estimable: False`` and why.
    """
    s_mc = scorer(mc)
    res: dict[str, Any] = {"mc": physics_metrics(mc["y"].to_numpy(), s_mc, threshold,
                                                 mc[kinematic].to_numpy() if kinematic else None, bins)}
    if len(data):
        from autopid.estimate.data_efficiency import (
            efficiency_gap_estimate,
            hidden_truth_check,
            truth_free,
        )

        s_data = scorer(data)
        selected = s_data >= threshold
        res["data"] = {"n": len(data), "n_selected": int(selected.sum()),
                       "selected_fraction": float(selected.mean())}
        est = None
        if ds is not None and species is not None:
            res["gap"], est = efficiency_gap_estimate(ds, species, truth_free(data), s_data, threshold, mc=mc,
                                                      score_mc=s_mc, closure=closure)
        else:
            res["gap"] = {"estimable": False, "gap": None, "reason": "no dataset given: the Data efficiency "
                          "cannot be estimated (pass ds and species)"}
        if "y" not in data:
            return res
        # the hidden truth of simulated Data: reports only (checks the estimate)
        hidden = physics_metrics(data["y"].to_numpy(), s_data, threshold,
                                 data[kinematic].to_numpy() if kinematic else None, bins)
        hidden["gap"] = efficiency_gap(mc["y"].to_numpy(), s_mc, data["y"].to_numpy(), s_data, threshold)
        if est is not None:
            hidden["estimate_check"] = hidden_truth_check(est, data["y"].to_numpy(), selected)
        res[HIDDEN_TRUTH_KEY] = hidden
    return res
