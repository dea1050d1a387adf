"""A fit that does not adapt measures the Data side of validation (Data-vs-MC accuracy,
Data signal fraction) only on the epochs it keeps: the best so far and the last. Its
objective does not read that side, which costs about 40 % of an FSE epoch."""

from __future__ import annotations

import math

from autopid.data import PreprocessedDataset
from autopid.train import core
from autopid.train.config import TrainConfig
from autopid.train.fit import fit


def _cfg(lr: float, patience: int | None, epochs: int = 6, lambda_max: float = 0.0) -> TrainConfig:
    return TrainConfig.model_validate({
        "dataset": "unused", "species": "proton", "model": {"family": "fse", "params": {}},
        "training": {"epochs": epochs, "batch_size": 128, "max_train_rows": 600, "max_eval_rows": 300,
                     "lr": lr, "lambda_max": lambda_max, "early_stopping_patience": patience}})


def test_a_fit_without_adaptation_measures_the_data_side_on_kept_epochs_only(alice_ds: PreprocessedDataset) -> None:
    kept: list[bool] = []
    # a learning rate too small to move the validation AUC: only epoch 1 improves, and
    # early stopping ends the fit after 2 more
    model, state = fit(_cfg(1e-12, patience=2), alice_ds,
                       on_epoch_end=lambda m, *a: kept.append(bool(a[-1])))
    assert kept == [True, False, False] and len(state.history) == 3
    measured = [math.isfinite(h["domain_accuracy"]) for h in state.history]
    assert measured == [True, False, True]  # the best epoch and the last
    assert all(math.isfinite(h["val_auc"]) for h in state.history)
    # what the last epoch reports is what a full validation of the final model gives
    frames = core.load_frames(alice_ds, "proton", _cfg(1e-12, 2).training, with_data=False)
    full = core.validation_metrics(model.eval(), "fse", frames, alice_ds, seed=0)
    for key in ("domain_accuracy", "domain_accuracy_raw", "data_signal_fraction", "val_auc"):
        assert state.history[-1][key] == full[key], key


def test_the_last_epoch_by_count_is_measured(alice_ds: PreprocessedDataset) -> None:
    _, state = fit(_cfg(1e-12, patience=None, epochs=3), alice_ds)
    assert [math.isfinite(h["domain_accuracy"]) for h in state.history] == [True, False, True]


def test_a_fit_that_adapts_measures_the_data_side_every_epoch(alice_ds: PreprocessedDataset) -> None:
    _, state = fit(_cfg(1e-12, patience=None, epochs=3, lambda_max=0.1), alice_ds)
    assert all(math.isfinite(h["domain_accuracy"]) for h in state.history)
