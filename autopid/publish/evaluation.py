"""Thresholds and held-out metrics of an exported model, computed with ONNX Runtime.

Thresholds are chosen on the validation split (MC, natural composition): the cut with
the best F1, and the cut at 90% signal efficiency. Metrics come from
:func:`autopid.evaluate.evaluate` on the test split, MC and simulated Data, with the
background efficiency and rejection at 90% signal efficiency added per bin of the
kinematic variable on MC (for the promotion gate). The Data side a decision may read is
truth-free (``data``, and ``gap`` with the Data efficiency estimated by a template fit);
hidden-truth Data metrics sit apart under ``data_hidden_truth``, for reports only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from autopid.errors import InputError
from autopid.evaluate import DEFAULT_BINS, HIDDEN_TRUTH_KEY, evaluate
from autopid.metrics import background_rejection, best_f1_threshold, binned, threshold_at_efficiency

try:  # renamed so that pytest does not collect it
    from autopid.evaluate import held_out_frames
except ImportError:  # pragma: no cover - older autopid.evaluate
    from autopid.evaluate import test_frames as held_out_frames


def _subsample(frame: pd.DataFrame, max_rows: int | None, seed: int) -> pd.DataFrame:
    if max_rows is None or len(frame) <= max_rows:
        return frame
    idx = np.sort(np.random.default_rng(seed).choice(len(frame), max_rows, replace=False))
    return frame.iloc[idx].reset_index(drop=True)


def choose_thresholds(predictor: Any, ds: Any, species: str, *, max_rows: int | None = 200_000,
                      seed: int = 0) -> dict[str, Any]:
    """``thresholds.json``: best-F1 and 90%-efficiency cuts on validation MC."""
    codes = ds.species_codes(species)
    frame = _subsample(ds.frame("validation", "mc"), max_rows, seed)
    y = np.isin(frame["truth_label"].to_numpy(), codes)
    if y.sum() == 0 or (~y).sum() == 0:
        raise InputError(f"{ds.path}: the validation MC has no {species} or no background rows; "
                         "cannot choose a threshold")
    score = predictor.predict(frame[predictor.spec["columns"]], domain="mc").score
    return {
        "default": "best_f1",
        "best_f1": best_f1_threshold(y, score),
        "efficiency_90": threshold_at_efficiency(y, score, 0.9),
        "chosen_on": {"split": "validation", "domain": "mc", "composition": "natural", "rows": int(len(y)),
                      "signal_rows": int(y.sum())},
        "selection": "score >= threshold",
    }


def _binned_background(y: np.ndarray, score: np.ndarray, kin: np.ndarray, bins: list[float]) -> dict[str, Any]:
    return {
        "background_efficiency_90": binned(lambda a, b: background_rejection(a, b, 0.9)["background_efficiency"],
                                           y, score, kin, bins),
        "rejection_90": binned(lambda a, b: background_rejection(a, b, 0.9)["rejection"], y, score, kin, bins),
    }


def held_out_metrics(predictor: Any, ds: Any, species: str, threshold: float, *, max_rows: int | None = 200_000,
                     seed: int = 0) -> dict[str, Any]:
    """MC and Data metrics on the test split at ``threshold`` (see the module docstring)."""
    mc, data = held_out_frames(ds, species, max_rows=max_rows, seed=seed, roles=True)
    kin = ds.manifest.get("kinematic")
    bins = DEFAULT_BINS.get(ds.manifest.get("experiment", ""))
    cols = predictor.spec["columns"]
    cache: dict[int, np.ndarray] = {}

    def scorer(frame: pd.DataFrame) -> np.ndarray:
        key = id(frame)
        if key not in cache:  # the MDA charges take the gain map of the frame's domain
            cache[key] = predictor.predict(frame[cols], domain="mc" if frame is mc else "data").score
        return cache[key]

    res = evaluate(scorer, threshold, mc, data, kinematic=kin, bins=bins, ds=ds, species=species)
    if kin and bins:
        for name, frame in (("mc", mc), (HIDDEN_TRUTH_KEY, data)):
            if name in res:
                res[name]["binned"].update(_binned_background(frame["y"].to_numpy(), scorer(frame),
                                                              frame[kin].to_numpy(), bins))
    res["split"] = "test"
    res["kinematic"] = kin
    res["threshold"] = threshold
    return res


def jsonable(obj: Any) -> Any:
    """Strict JSON: NaN becomes null, +-inf the strings "inf" / "-inf", NumPy scalars plain."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
    return obj
