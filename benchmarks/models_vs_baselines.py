"""FSE vs n-sigma vs XGBoost vs MLP-imputation (ALICE-like), MDA vs the classic selection
vs the second-track veto vs MDA without adaptation (AMS-like), and the DANN two-moons toy.
Prints tables; numbers go in notes.

The baselines are the ones a referee would accept: the n-sigma responses (ALEPH, TPC and
TOF resolutions) fitted on MC with the cut chosen on validation; the AMS classic selection
with truth-free per-ladder L1 gains on each domain and windows chosen on MC validation for
90 % efficiency; XGBoost and the imputation MLP tuned with Optuna (``--trials``).

    python benchmarks/models_vs_baselines.py [--smoke-test] [--out /tmp/bench] [--trials N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from autopid.baselines import (
    ClassicAmsSelection,
    NSigmaSelection,
    SecondTrackVeto,
    role_sample,
    tune_baseline,
)
from autopid.dann_toy import run_two_moons
from autopid.data import PreprocessedDataset
from autopid.evaluate import held_out_frames
from autopid.metrics import (
    background_rejection,
    best_f1_threshold,
    domain_classifier_accuracy,
    efficiency_gap,
    efficiency_purity_f1,
    threshold_at_efficiency,
)
from autopid.preprocess import preprocess
from autopid.simulate import ALICE, AMS, AliceSimConfig, AmsSimConfig, simulate_period
from autopid.testing import dataset_for
from autopid.train import core
from autopid.train.config import TrainConfig
from autopid.train.fit import fit


def _train(ds: PreprocessedDataset, family: str, species: str, **training: object):
    cfg = TrainConfig.model_validate({"dataset": "-", "species": species, "model": {"family": family},
                                      "training": training})
    t0 = time.perf_counter()
    model, state = fit(cfg, ds)
    return model, cfg, time.perf_counter() - t0


def _hidden_y(ds: PreprocessedDataset, species: str) -> np.ndarray:
    """Data test labels from the hidden truth (evaluation only), in role_frame row order."""
    hidden = ds.evaluation_truth("test", "data")["hidden_label"].to_numpy()
    return np.isin(hidden, ds.species_codes(species)).astype(np.float32)


def alice(out: Path, events: int, epochs: int, rows: int, trials: int) -> None:
    simulate_period(ALICE, AliceSimConfig(), out / "alice", "LHC26a", runs=2, events_per_run=events, seed=3)
    ds = PreprocessedDataset(preprocess(dataset_for("alice", out / "alice"), cache_root=out / "cache").path)
    table: dict[str, dict[str, float]] = {}
    for species in ("pion", "proton", "kaon"):
        t = dict(epochs=epochs, batch_size=256, lr=1e-3, max_train_rows=rows, max_eval_rows=rows // 2,
                 early_stopping_patience=None)
        model, cfg, secs = _train(ds, "fse", species, **t)
        frames = core.load_frames(ds, species, cfg.training, with_data=False)
        train_f, val_f = frames.train, frames.validation
        mc_test, _ = held_out_frames(ds, species)
        y_tr, y_val = train_f["y"].to_numpy(), val_f["y"].to_numpy()
        # n-sigma: responses fitted on the MC train split, cut on validation, read by role,
        # Data recalibrated on its own pion peaks
        r_tr, ry_tr = role_sample(ds, "train", "mc", species=species)
        r_val, ry_val = role_sample(ds, "validation", "mc", species=species)
        r_test, ry_test = role_sample(ds, "test", "mc", species=species)
        r_data_tr, _ = role_sample(ds, "train", "data")  # truth-free recalibration of Data
        nsig = NSigmaSelection(species).fit(r_tr, ry_tr, validation=(r_val, ry_val), data=r_data_tr)
        r_data, _ = role_sample(ds, "test", "data")
        f1_data = efficiency_purity_f1(_hidden_y(ds, species), nsig.predict(r_data, "data"), nsig.threshold)["f1"]
        print(f"  n-sigma {species}: " + ", ".join(f"{k} {np.round(v, 4) if not isinstance(v, str) else v}"
                                                 for k, v in nsig.params.items()) + f"; Data F1 {f1_data:.4f}")
        xgb, _ = tune_baseline("xgboost", train_f, y_tr, val_f, y_val, trials, columns=ds.columns)
        mlp, _ = tune_baseline("mlp", train_f, y_tr, val_f, y_val, trials, columns=ds.columns,
                               normaliser=ds.normaliser, epochs=epochs)
        scorers = {
            "FSE+attention": (lambda f, m=model: core.predict_frame(m, "fse", f, ds)["score"], None),
            "XGBoost (NaN native, tuned)": (xgb.predict, xgb.threshold),
            "MLP, mean imputation (tuned)": (mlp.predict, mlp.threshold),
        }
        for name, (score, cut) in scorers.items():
            if cut is None:
                cut = best_f1_threshold(y_val, score(val_f))
            s = score(mc_test)
            for sign, label in ((1, "+"), (-1, "-")):
                m = mc_test["fSign"].to_numpy() == sign
                f1 = efficiency_purity_f1(mc_test["y"].to_numpy()[m], s[m], cut)["f1"]
                table.setdefault(name, {})[f"{species}{label}"] = 100 * f1
        s = nsig.predict(r_test)
        for sign, label in ((1, "+"), (-1, "-")):
            m = r_test["charge_sign"].to_numpy() == sign
            f1 = efficiency_purity_f1(ry_test[m], s[m], nsig.threshold)["f1"]
            table.setdefault("n-sigma (fitted, cut on validation)", {})[f"{species}{label}"] = 100 * f1
        print(f"  trained FSE for {species} in {secs:.0f} s ({len(train_f)} tracks x {epochs} epochs)")
    df = pd.DataFrame(table).T
    print("\nALICE-like, MC test split, F1 in % (threshold: best F1 on validation)")
    print(df.round(2).to_string())


def ams(out: Path, events: int, epochs: int, rows: int) -> None:
    simulate_period(AMS, AmsSimConfig(), out / "ams", "P2026a", runs=2, events_per_run=3 * events, seed=3)
    ds = PreprocessedDataset(preprocess(dataset_for("ams", out / "ams"), cache_root=out / "cache").path)
    mc_test, data_test = held_out_frames(ds, "phosphorus")
    rows_out = {}
    common = dict(epochs=epochs, batch_size=128, lr=1e-3, signal_fraction=0.5, max_train_rows=rows,
                  max_eval_rows=rows // 2, early_stopping_patience=None)
    for name, lam in (("MDA (lambda_max 0.5)", 0.5), ("MDA without adaptation", 0.0)):
        model, cfg, secs = _train(ds, "mda", "phosphorus", lambda_max=lam, **common)
        p_mc = core.predict_frame(model, "mda", mc_test, ds, domain="mc")
        p_data = core.predict_frame(model, "mda", data_test, ds, domain="data")
        rows_out[name] = _ams_row(mc_test, data_test, p_mc["score"], p_data["score"],
                                  domain_classifier_accuracy(p_mc["features"], p_data["features"]))
        rows_out[name]["train s"] = secs
    # the classic selection: L1 gains fitted without truth on each domain's train split,
    # windows chosen on MC validation for 90 % signal efficiency
    r_tr, y_tr = role_sample(ds, "train", "mc", species="phosphorus")
    r_val, y_val = role_sample(ds, "validation", "mc", species="phosphorus")
    r_data_tr, _ = role_sample(ds, "train", "data")
    r_mc, _ = role_sample(ds, "test", "mc", species="phosphorus")
    r_data, _ = role_sample(ds, "test", "data")
    classic = ClassicAmsSelection(15).fit(r_tr, y_tr, validation=(r_val, y_val), data=r_data_tr)
    veto = SecondTrackVeto().fit(r_tr, y_tr, validation=(r_val, y_val), data=r_data_tr)
    for dom in ("mc", "data"):
        c = classic.calibration[dom]
        print(f"  {dom} L1 calibration: {len(c['gains'])} ladders, tagged width {c['width_before']:.3f} -> "
              f"{c['width_after']:.3f}, UTOF scale {c['utof_scale']:.4f}, inner scale {c['inner_scale']:.4f}")
    print(f"  classic windows: {classic.windows}")
    print(f"  veto alone: {veto.windows}")
    rows_out["classic (calibrated L1, UTOF, veto)"] = _ams_row(
        mc_test, data_test, classic.predict(r_mc, domain="mc"), classic.predict(r_data, domain="data"), float("nan"),
        fixed_cut=classic.threshold)
    rows_out["second-track veto"] = _ams_row(mc_test, data_test, veto.predict(r_mc, domain="mc"),
                                             veto.predict(r_data, domain="data"),
                                             float("nan"), fixed_cut=veto.threshold)
    df = pd.DataFrame(rows_out).T
    print("\nAMS-like P selection, test split; Data metrics use the hidden truth (evaluation only)")
    print(df.round(4).to_string())


def _ams_row(mc: pd.DataFrame, data: pd.DataFrame, s_mc: np.ndarray, s_data: np.ndarray, dom_acc: float,
             fixed_cut: float | None = None) -> dict[str, float]:
    y_mc, y_data = mc["y"].to_numpy(), data["y"].to_numpy()
    s_mc, s_data = (np.nan_to_num(np.asarray(s, dtype=np.float64), nan=-1e9, neginf=-1e9) for s in (s_mc, s_data))
    cut = fixed_cut if fixed_cut is not None else threshold_at_efficiency(y_mc, s_mc, 0.9)
    gap = efficiency_gap(y_mc, s_mc, y_data, s_data, cut)
    rej = background_rejection(y_data, s_data, 0.9)
    return {"rejection@90% (MC)": background_rejection(y_mc, s_mc, 0.9)["rejection"],
            "rejection@90% (Data)": rej["rejection"], "bkg eff@90% (Data)": rej["background_efficiency"],
            "eff MC": gap["efficiency_mc"], "eff Data": gap["efficiency_data"], "MC-Data gap": gap["gap"],
            "domain acc": dom_acc}


def moons() -> None:
    res = []
    for seed in range(5):
        a, b = run_two_moons(0.0, seed=seed), run_two_moons(1.0, seed=seed)
        res.append((a.target_accuracy, b.target_accuracy))
    arr = np.asarray(res)
    print("\nDANN two moons (150+150 points, noise 0.05, target rotated 35 deg), target accuracy, 5 seeds")
    print(f"  source only: {arr[:, 0].mean():.3f} +- {arr[:, 0].std():.3f}")
    print(f"  adapted:     {arr[:, 1].mean():.3f} +- {arr[:, 1].std():.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke-test", action="store_true")
    ap.add_argument("--out", default="/tmp/autopid-bench")
    ap.add_argument("--only", choices=["alice", "ams", "moons"], default=None)
    ap.add_argument("--trials", type=int, default=None, help="Optuna trials per learned baseline (default: 20, smoke 2)")
    a = ap.parse_args()
    out = Path(a.out)
    events, epochs, rows = (3000, 1, 2000) if a.smoke_test else (50000, 4, 30000)
    trials = a.trials if a.trials is not None else (2 if a.smoke_test else 20)
    if a.only in (None, "moons"):
        moons()
    if a.only in (None, "alice"):
        alice(out, events, epochs, rows, trials)
    if a.only in (None, "ams"):
        ams(out, events, epochs, rows)


if __name__ == "__main__":
    main()
