"""A hyperparameter search for the learned baselines, so that the comparison with a tuned
network is not won by tuning alone: Optuna's TPE on the validation AUC (or log-loss)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from autopid.features import Normaliser
from autopid.metrics import roc_auc

Kind = Literal["xgboost", "mlp"]


def _logloss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(y, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _suggest(kind: Kind, trial: Any, epochs: int) -> dict[str, Any]:
    if kind == "xgboost":
        return {"n_estimators": trial.suggest_int("n_estimators", 50, 600, log=True),
                "max_depth": trial.suggest_int("max_depth", 2, 10),
                "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
                "subsample": trial.suggest_float("subsample", 0.5, 1.0),
                "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
                "min_child_weight": trial.suggest_float("min_child_weight", 0.5, 20.0, log=True),
                "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True)}
    width = trial.suggest_categorical("width", [32, 64, 128, 256])
    layers = trial.suggest_int("layers", 1, 3)
    return {"hidden": tuple(max(width // 2**i, 8) for i in range(layers)),
            "lr": trial.suggest_float("lr", 1e-4, 3e-3, log=True),
            "dropout": trial.suggest_float("dropout", 0.0, 0.3),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-3, log=True),
            "batch_size": trial.suggest_categorical("batch_size", [128, 256, 512]),
            "epochs": epochs}


def _build(kind: Kind, params: dict[str, Any], columns: Sequence[str], normaliser: Normaliser | None,
           seed: int, threads: int | None) -> Any:
    from autopid.baselines.learned import MLPImputation, XGBoostBaseline

    if kind == "xgboost":
        return XGBoostBaseline(columns, seed=seed, threads=threads, **params)
    if normaliser is None:
        raise ValueError("tune_baseline('mlp', ...) needs the cache's normaliser")
    return MLPImputation(normaliser, columns, seed=seed, **params)


def tune_baseline(kind: Kind, train: pd.DataFrame, y: np.ndarray, val: pd.DataFrame, y_val: np.ndarray,
                  n_trials: int, seed: int = 0, *, columns: Sequence[str], normaliser: Normaliser | None = None,
                  metric: Literal["auc", "logloss"] = "auc", epochs: int = 10,
                  threads: int | None = 1) -> tuple[Any, dict[str, Any]]:
    """The best of ``n_trials`` settings of ``kind`` (``"xgboost"`` or ``"mlp"``) by
    validation ``metric``; each trial is fitted with ``validation=(val, y_val)`` (early
    stopping, best epoch, best-F1 threshold).

    Returns:
        (the fitted best baseline, ``{"kind", "best_params", "best_value", "metric",
        "n_trials"}``). With ``n_trials == 0`` the defaults are fitted once.
    """
    import optuna

    y, y_val = np.asarray(y, dtype=np.float32), np.asarray(y_val, dtype=np.float32)
    fitted: dict[int, Any] = {}

    def score(model: Any) -> float:
        p = model.predict(val)
        return roc_auc(y_val, p) if metric == "auc" else _logloss(y_val, p)

    if n_trials <= 0:
        params = {"epochs": epochs} if kind == "mlp" else {}
        model = _build(kind, params, columns, normaliser, seed, threads).fit(train, y, validation=(val, y_val))
        return model, {"kind": kind, "best_params": params, "best_value": score(model), "metric": metric,
                       "n_trials": 0}

    def objective(trial: optuna.Trial) -> float:
        params = _suggest(kind, trial, epochs)
        model = _build(kind, params, columns, normaliser, seed, threads).fit(train, y, validation=(val, y_val))
        fitted[trial.number] = model
        return score(model)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if metric == "auc" else "minimize",
                                sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(5, n_trials)))

    def keep_best(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        # only the best model so far stays in memory
        for number in list(fitted):
            if number != study.best_trial.number:
                del fitted[number]

    study.optimize(objective, n_trials=n_trials, callbacks=[keep_best])
    best = study.best_trial
    return fitted[best.number], {"kind": kind, "best_params": dict(best.params), "best_value": float(best.value),
                                 "metric": metric, "n_trials": n_trials}
