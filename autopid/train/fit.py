"""Fit one model: the epoch loop with evaluation, early stopping and resumable state.

The same function runs in a plain process (rank 0 of 1) and in each Ray Train worker,
where the caller passes the worker's rank and a ``wrap`` that prepares the model for
data-parallel training.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from autopid._logging import get_logger
from autopid.calibration.label_shift import label_weights
from autopid.data import PreprocessedDataset
from autopid.train import core
from autopid.train.config import TrainConfig

_log = get_logger(__name__)


@dataclass
class FitState:
    """Everything needed to resume: saved in each epoch's checkpoint."""

    epoch: int = 0  # epochs done
    best_objective: float = -float("inf")
    best_epoch: int = -1
    epochs_without_improvement: int = 0
    label_weights: list[float] | None = None
    data_fraction: float | None = None  # Data signal fraction estimated at the end of the warm-up
    history: list[dict[str, float]] = field(default_factory=list)


EpochHook = Callable[[dict[str, float], nn.Module, torch.optim.Optimizer, Any, FitState, bool], None]


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def fit(
    cfg: TrainConfig,
    ds: PreprocessedDataset,
    *,
    on_epoch_end: EpochHook | None = None,
    resume: dict[str, Any] | None = None,
    rank: int = 0,
    world_size: int = 1,
    wrap: Callable[[nn.Module], nn.Module] | None = None,
    device: torch.device | None = None,
    domain_penalty: float = 1.0,
) -> tuple[nn.Module, FitState]:
    """Train ``cfg`` on ``ds``; ``on_epoch_end(metrics, model, opt, sched, state, improved)``
    runs after each epoch (checkpointing, reporting). ``resume`` is a checkpoint dict with
    ``model``, ``optimizer``, ``scheduler`` and ``state``."""
    t = cfg.training
    device = device or torch.device("cpu")
    torch.manual_seed(t.seed)
    np.random.seed(t.seed)
    family = cfg.model.family
    adapt = t.lambda_max > 0
    frames = core.load_frames(ds, cfg.species, t, with_data=adapt)
    train_frame = frames.train.iloc[rank::world_size].reset_index(drop=True)
    model = core.build_model(family, ds, cfg.model.params, domain_head=adapt).to(device)
    # calibrate, reweight, then adapt (MDA): gain maps stored with the model, rigidity
    # weights on the MC rows of the domain loss (and of the classifier loss with "all")
    mda = family == "mda"
    calibration = core.charge_calibration(ds) if mda and t.charge_calibration else None
    model.calibration = calibration
    reweight = t.rigidity_reweighting or "domain"
    reweighter = None
    if mda and reweight != "none":
        is_mc = frames.train["domain"].to_numpy() < 0.5
        reweighter = core.rigidity_reweighter(ds, frames.train[is_mc])
    row_w = core.mc_rigidity_weights(reweighter, ds, frames.train)
    label_shift = adapt if t.label_shift_weighting is None else bool(t.label_shift_weighting)
    # the Data composition by charge (silicon is a quarter of the Data background, a few per
    # cent of MC's): MC weighted to it, so that the domain head does not learn silicon
    val_species_w = None
    composition = None
    if mda and adapt and t.species_matching is not False:
        from autopid.calibration.species_mix import data_composition, species_weights

        composition = data_composition(ds, cfg.species)
    if composition is not None:
        is_mc = frames.train["domain"].to_numpy() < 0.5
        row_w = np.ones(len(frames.train)) if row_w is None else np.asarray(row_w, dtype=np.float64).copy()
        row_w[is_mc] *= species_weights(frames.train["truth_label"].to_numpy()[is_mc], composition, row_w[is_mc])
        val_species_w = species_weights(frames.validation["truth_label"].to_numpy(), composition,
                                        core.mc_rigidity_weights(reweighter, ds, frames.validation))
        label_shift = False
    elif t.species_matching:
        _log.warning("species_matching: the Data composition cannot be estimated for %s; "
                     "using the signal/background label-shift weights", ds.path)
    # source-only warm-up (never all the epochs): its model estimates the Data class mix,
    # which is then kept, as the adapted features would bias it
    warmup = min(t.adaptation_warmup_epochs, t.epochs - 1) if adapt else 0
    y_train = frames.train["y"].to_numpy()
    labelled = np.isfinite(y_train)
    # one fused kernel per step on a GPU, where the step is bound by kernel launches
    opt = torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay,
                           fused=True if device.type == "cuda" else None)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=t.lr_decay)
    state = FitState()
    if resume is not None:
        model.load_state_dict(resume["model"])
        # the saved groups carry the saving run's fused flag: keep this device's choice
        saved = resume["optimizer"]
        fused = opt.param_groups[0]["fused"]
        opt.load_state_dict({**saved, "param_groups": [{**g, "fused": fused} for g in saved["param_groups"]]})
        sched.load_state_dict(resume["scheduler"])
        state = FitState(**resume["state"])
        rng = resume.get("rng") or {}  # checkpoints from before 2026-11-30 have none
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], device)
    if wrap is not None:
        model = wrap(model)
    dataset = core.make_dataset(family, train_frame, ds, calibration=calibration,
                                weights=None if row_w is None else row_w[rank::world_size])
    if device.type != "cpu":  # the whole training sample lives on the GPU: batches are gathered there
        dataset = dataset.to(device)
    steps = core.batches_per_epoch(len(dataset), t.batch_size)
    ran = False
    while not _finished(state, t.epochs, t.early_stopping_patience):
        ran = True
        epoch = state.epoch
        loader = core.make_loader(family, dataset, t.batch_size, shuffle=True, seed=t.seed * 1000 + epoch)
        t0 = time.perf_counter()
        weights = np.asarray(state.label_weights) if state.label_weights is not None else None
        stats = core.train_epoch(model, family, loader, opt, epoch=epoch, epochs=t.epochs,
                                 steps_per_epoch=steps, lambda_max=t.lambda_max, label_weights=weights,
                                 device=device, mixed_precision=t.mixed_precision,
                                 weight_classifier=reweight == "all", warmup_epochs=warmup)
        train_seconds = time.perf_counter() - t0
        sched.step()
        validate = functools.partial(core.validation_metrics, _unwrap(model), family, frames, ds, seed=t.seed,
                                     reweighter=reweighter, label_shift_method=t.label_shift_method,
                                     data_fraction=state.data_fraction, species_weights=val_species_w)
        mc_pred = core.predict_frame(_unwrap(model), family, frames.validation, ds)
        # without adaptation the objective does not read the Data side: measured below,
        # only on the epochs that are kept (the best so far and the last)
        metrics = validate(with_data=adapt, mc=mc_pred)
        if adapt and state.data_fraction is None and epoch + 1 >= max(warmup, 1) and np.isfinite(
                metrics.get("data_signal_fraction", np.nan)):
            state.data_fraction = float(metrics["data_signal_fraction"])
        metrics.update(stats, epoch=float(epoch + 1), train_seconds=train_seconds,
                       events_per_second=stats["events"] / max(train_seconds, 1e-9))
        metrics["objective"] = core.objective(metrics, domain_penalty if adapt else 0.0)
        if adapt and label_shift and state.data_fraction is not None and state.label_weights is None:
            # the domain loss sees MC at the Data class mix estimated after the warm-up
            w_mc = None if row_w is None else row_w[labelled]
            state.label_weights = label_weights(y_train[labelled], state.data_fraction, w_mc).tolist()
        improved = metrics["objective"] > state.best_objective
        last = epoch + 1 >= t.epochs or (not improved and t.early_stopping_patience is not None
                                         and state.epochs_without_improvement + 1 >= t.early_stopping_patience)
        if not adapt and (improved or last):
            metrics.update(validate(mc=mc_pred))
        if improved:
            state.best_objective, state.best_epoch = metrics["objective"], epoch + 1
            state.epochs_without_improvement = 0
        else:
            state.epochs_without_improvement += 1
        state.epoch = epoch + 1
        state.history.append(metrics)
        if on_epoch_end is not None:
            on_epoch_end(metrics, model, opt, sched, state, improved)
    if not ran and state.history and on_epoch_end is not None:
        # resumed after the last epoch: report the final state again so the caller sees it
        on_epoch_end(state.history[-1], model, opt, sched, state, False)
    return _unwrap(model), state


def _finished(state: FitState, epochs: int, patience: int | None) -> bool:
    return state.epoch >= epochs or (patience is not None and state.epochs_without_improvement >= patience)
