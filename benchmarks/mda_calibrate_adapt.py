"""Calibrate, reweight, then adapt: what each step does to the MC-vs-Data shift of the
MDA inputs, and what domain adaptation adds on top (issue 12, package D).

    python benchmarks/mda_calibrate_adapt.py --cache CACHE_ENTRY [--epochs 6] [--out result.json]

CACHE_ENTRY is a preprocessed AMS cache entry (``autopid simulate ams`` then
``autopid preprocess --data ams``). Measured:

1. inputs: Data-vs-MC classifier accuracy (``autopid.metrics.domain_classifier_accuracy``)
   on the normalised MDA input columns of the test split: raw; charges calibrated
   with the gain maps fitted on each domain's train split (and, since the noise overlay
   is part of that calibration, Data's noise on the MC cluster counts); plus MC weighted to the Data
   rigidity spectrum; plus MC weighted to the Data class mix (hidden truth: evaluation
   only). Also the charge columns alone and the rigidity columns alone.
2. models: MDA trained with ``autopid.train.fit.fit`` (a one-worker search trial's path)
   without adaptation, with the old adaptation (raw charges, no reweighting, no class
   matching) and calibrated + reweighted + adapted; on the test split: Data AUC and
   rejection at 90 % signal efficiency (hidden truth), class-matched domain accuracy of
   the features (truth-free estimate of the Data class mix, and hidden truth), the raw
   domain accuracy, and the MC-Data efficiency gap at the cut giving 90 % on
   validation MC. The L1 charge window |Q_L1 - Z| < w (w for 90 % on Data, hidden
   truth) is the reference cut.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import pandas as pd
import torch

from autopid.calibration.label_shift import (
    class_matched_weights,
    estimate_signal_fraction,
)
from autopid.data import PreprocessedDataset
from autopid.metrics import (
    background_rejection,
    domain_classifier_accuracy,
    roc_auc,
    threshold_at_efficiency,
)
from autopid.train import core
from autopid.train.config import TrainConfig
from autopid.train.fit import fit


def _normalised(ds: PreprocessedDataset, cols: dict[str, np.ndarray] | pd.DataFrame, names: list[str]) -> np.ndarray:
    return np.nan_to_num(ds.normaliser.transform(cols, names))


def input_shift(ds: PreprocessedDataset, species: str, seed: int = 0) -> dict[str, float]:
    layout = ds.manifest["mda"]
    cols = core.mda_input_columns(ds)
    charge_cols = [c for c in ds.feature_columns(layout["charge"]["branch"]) if c in cols]
    rig_cols = [c for b in layout["rigidity"] for c in ds.feature_columns(b)]
    mc, data = ds.frame("test", "mc"), ds.frame("test", "data")
    codes = ds.species_codes(species)
    y_mc = np.isin(mc["truth_label"].to_numpy(), codes).astype(float)
    y_data = np.isin(ds.evaluation_truth("test", "data")["hidden_label"].to_numpy(), codes)
    cal = core.charge_calibration(ds)
    mc_cal, data_cal = mc.copy(), data.copy()
    for frame, dom in ((mc_cal, "mc"), (data_cal, "data")):
        for c, v in cal.calibrate({c: frame[c].to_numpy(np.float64) for c in frame.columns}, ds, dom).items():
            frame[c] = v
    mc_train = ds.frame("train", "mc")
    rw = core.rigidity_reweighter(ds, mc_train)
    w_r = core.mc_rigidity_weights(rw, ds, mc)
    w_rc = class_matched_weights(y_mc, float(y_data.mean()), w_r)

    def acc(a: pd.DataFrame, b: pd.DataFrame, names: list[str], w: np.ndarray | None = None) -> float:
        return domain_classifier_accuracy(_normalised(ds, a, names), _normalised(ds, b, names), seed=seed,
                                          mc_weights=w)

    return {
        "raw": acc(mc, data, cols),
        "raw_charges_only": acc(mc, data, charge_cols),
        "raw_rigidity_only": acc(mc, data, rig_cols),
        "calibrated": acc(mc_cal, data_cal, cols),
        "calibrated_charges_only": acc(mc_cal, data_cal, charge_cols),
        "rigidity_only_reweighted": acc(mc, data, rig_cols, w_r),
        "calibrated_reweighted": acc(mc_cal, data_cal, cols, w_r),
        "calibrated_charges_only_reweighted": acc(mc_cal, data_cal, charge_cols, w_r),
        "calibrated_reweighted_class_matched_hidden_truth": acc(mc_cal, data_cal, cols, w_rc),
        "mc_median_rigidity_gv": float(np.nanmedian(mc[rig_cols[0]])),
        "data_median_rigidity_gv": float(np.nanmedian(data[rig_cols[0]])),
        "mc_median_rigidity_gv_reweighted": _weighted_median(mc[rig_cols[0]].to_numpy(), w_r),
        "data_signal_fraction_hidden_truth": float(y_data.mean()),
        "mc_signal_fraction": float(y_mc.mean()),
    }


def _weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    ok = np.isfinite(x)
    order = np.argsort(x[ok])
    cw = np.cumsum(w[ok][order])
    return float(x[ok][order][np.searchsorted(cw, cw[-1] / 2)])


def _background_by_species(ds: PreprocessedDataset, score: np.ndarray, cut: float) -> dict[str, Any]:
    """Data background efficiency per true species at ``cut`` (hidden truth) and its share of the Data."""
    truth = ds.evaluation_truth("test", "data")["hidden_label"].to_numpy()
    names = ds.label_species(truth)
    return {str(n): {"fraction_of_data": float(np.mean(names == n)), "efficiency": float(np.mean(score[names == n] >= cut))}
            for n in np.unique(names)}


def l1_cut(ds: PreprocessedDataset, species: str) -> dict[str, float]:
    z = abs(ds.species_codes(species)[0])
    data = ds.frame("test", "data", ["trk_charge_l1"])
    y = np.isin(ds.evaluation_truth("test", "data")["hidden_label"].to_numpy(), ds.species_codes(species))
    score = -np.abs(np.nan_to_num(data["trk_charge_l1"].to_numpy(np.float64), nan=1e3) - z)
    r = background_rejection(y, score, 0.9)
    return {"data_auc": roc_auc(y, score), "data_rejection_90": r["rejection"],
            "data_background_efficiency_90_by_species": _background_by_species(ds, score, r["threshold"]),
            "data_background_efficiency_90": r["background_efficiency"], "window": float(-r["threshold"])}


def evaluate_model(model: Any, ds: PreprocessedDataset, species: str, cfg: TrainConfig, seed: int = 0
                   ) -> dict[str, float]:
    codes = ds.species_codes(species)
    mc, data = ds.frame("test", "mc"), ds.frame("test", "data")
    y_mc = np.isin(mc["truth_label"].to_numpy(), codes).astype(float)
    y_data = np.isin(ds.evaluation_truth("test", "data")["hidden_label"].to_numpy(), codes).astype(float)
    frames = core.load_frames(ds, species, cfg.training, with_data=False)
    val = core.predict_frame(model, "mda", frames.validation, ds, domain="mc")
    p_mc = core.predict_frame(model, "mda", mc, ds, domain="mc")
    p_data = core.predict_frame(model, "mda", data, ds, domain="data")
    cut90 = threshold_at_efficiency(frames.validation["y"].to_numpy(), val["score"], 0.9)
    eff_mc = float((p_mc["score"][y_mc > 0] >= cut90).mean())
    eff_data = float((p_data["score"][y_data > 0] >= cut90).mean())
    rw = core.rigidity_reweighter(ds, ds.frame("train", "mc"))
    w_r = core.mc_rigidity_weights(rw, ds, mc)
    est = estimate_signal_fraction(y_mc, p_mc["score"], p_data["score"], mc_weights=w_r)
    f_mc, f_data = p_mc["features"], p_data["features"]
    r_data = background_rejection(y_data, p_data["score"], 0.9)
    by_species = _background_by_species(ds, p_data["score"], r_data["threshold"])
    return {
        "data_background_efficiency_90_by_species": by_species,
        "mc_auc": roc_auc(y_mc, p_mc["score"]),
        "data_auc": roc_auc(y_data, p_data["score"]),
        "data_rejection_90": r_data["rejection"],
        "data_background_efficiency_90": r_data["background_efficiency"],
        "mc_rejection_90": background_rejection(y_mc, p_mc["score"], 0.9)["rejection"],
        "efficiency_mc_at_mc90_cut": eff_mc, "efficiency_data_at_mc90_cut": eff_data,
        "efficiency_gap": eff_mc - eff_data,
        "data_signal_fraction_estimate": est["fraction"], "data_signal_fraction_hidden_truth": float(y_data.mean()),
        "domain_accuracy_class_matched": domain_classifier_accuracy(
            f_mc, f_data, seed=seed, mc_weights=class_matched_weights(y_mc, est["fraction"], w_r)),
        "domain_accuracy_class_matched_hidden_truth": domain_classifier_accuracy(
            f_mc, f_data, seed=seed, mc_weights=class_matched_weights(y_mc, float(y_data.mean()), w_r)),
        "domain_accuracy_raw": domain_classifier_accuracy(f_mc, f_data, seed=seed),
    }


VARIANTS: dict[str, dict[str, Any]] = {
    "no adaptation (calibrated)": {"lambda_max": 0.0},
    "old adaptation (raw charges, no reweighting, no class matching)": {
        "lambda_max": 0.5, "charge_calibration": False, "rigidity_reweighting": "none",
        "label_shift_weighting": False, "adaptation_warmup_epochs": 0},
    "calibrate + reweight + adapt": {"lambda_max": 0.5},
    "calibrate + reweight + adapt, lambda 0.1": {"lambda_max": 0.1},
}


def train_variant(ds: PreprocessedDataset, species: str, training: dict[str, Any]) -> tuple[Any, TrainConfig, dict]:
    cfg = TrainConfig.model_validate({"dataset": "ams", "species": species, "model": {"family": "mda", "params": {}},
                                      "training": training})
    best: dict[str, Any] = {}
    history: list[dict[str, float]] = []

    def keep(metrics: dict[str, float], model: Any, opt: Any, sched: Any, state: Any, improved: bool) -> None:
        history.append({k: v for k, v in metrics.items() if isinstance(v, float)})
        print(f"  epoch {int(metrics['epoch'])}: objective {metrics['objective']:.4f} auc {metrics['val_auc']:.4f} "
              f"dom.acc {metrics.get('domain_accuracy', float('nan')):.3f} "
              f"(raw {metrics.get('domain_accuracy_raw', float('nan')):.3f}) "
              f"f_data {metrics.get('data_signal_fraction', float('nan')):.3f} {metrics['train_seconds']:.0f}s",
              flush=True)
        if improved:
            best["state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            best["epoch"] = state.epoch

    t0 = time.perf_counter()
    model, _ = fit(cfg, ds, on_epoch_end=keep)
    model.load_state_dict(best["state"])
    model.eval()
    return model, cfg, {"best_epoch": best["epoch"], "seconds": time.perf_counter() - t0, "history": history}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", required=True)
    p.add_argument("--species", default="phosphorus")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--train-rows", type=int, default=20000)
    p.add_argument("--eval-rows", type=int, default=4000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--variants", default="all", help="comma-separated indices into VARIANTS, or 'all'")
    p.add_argument("--out", default="mda_calibrate_adapt.json")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    ds = PreprocessedDataset(a.cache)
    result: dict[str, Any] = {"cache": a.cache}
    result["inputs"] = input_shift(ds, a.species)
    print(json.dumps(result["inputs"], indent=1), flush=True)
    result["l1_charge_cut"] = l1_cut(ds, a.species)
    print(result["l1_charge_cut"], flush=True)
    names = list(VARIANTS) if a.variants == "all" else [list(VARIANTS)[int(i)] for i in a.variants.split(",") if i.strip()]
    result["models"] = {}
    for name in names:
        print(name, flush=True)
        training = {"epochs": a.epochs, "batch_size": 128, "lr": 1e-3, "signal_fraction": 0.5,
                    "max_train_rows": a.train_rows, "max_eval_rows": a.eval_rows, "early_stopping_patience": 3,
                    "seed": 0, **VARIANTS[name]}
        model, cfg, info = train_variant(ds, a.species, training)
        res = evaluate_model(model, ds, a.species, cfg)
        res.update(best_epoch=info["best_epoch"], seconds=info["seconds"], settings=VARIANTS[name])
        result["models"][name] = res
        print(json.dumps({k: v for k, v in res.items() if k != "settings"}, indent=1), flush=True)
    with open(a.out, "w") as fh:
        json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
