"""The training loop, shared by a plain process and by Ray Train workers.

The MDA loader and model (and PyTorch Geometric with them) are imported only when the
family is ``mda``: an FSE process never loads them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, is_dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from autopid.calibration.gains import ChargeCalibration, fit_charge_calibration
from autopid.calibration.label_shift import (
    class_matched_domain_accuracy,
    estimate_signal_fraction,
)
from autopid.calibration.reweight import RigidityReweighter, rigidity_column
from autopid.data.dataset import PreprocessedDataset, sample_data, sample_mc
from autopid.data.fse import FSEDataset, fse_dataloader
from autopid.metrics import (
    best_f1_threshold,
    domain_classifier_accuracy,
    efficiency_purity_f1,
    roc_auc,
)
from autopid.models.fse import FSEAttention, ModelOutput
from autopid.models.grl import dann_lambda
from autopid.train.config import TrainingSpec

if TYPE_CHECKING:
    from autopid.data.mda import MDADataset


def mda_input_columns(ds: PreprocessedDataset) -> list[str]:
    """The raw columns the MDA reads (for the baselines that should see the same inputs)."""
    layout = ds.manifest["mda"]
    cols: list[str] = []
    for role, axis in (("charge", 1), ("position", 1), ("clusters", 0)):
        branch, layers = layout[role]["branch"], set(layout[role]["layers"])
        shape = ds.feature_shape(branch)
        for col, idx in zip(ds.feature_columns(branch), np.ndindex(*shape)):
            if idx[axis] + 1 in layers:
                cols.append(col)
    for branch in (*layout["rigidity"], *layout["tof"]):
        cols += ds.feature_columns(branch)
    return cols


def fse_columns(ds: PreprocessedDataset) -> list[str]:
    return ds.columns


def build_model(family: str, ds: PreprocessedDataset, params: dict[str, Any], *, domain_head: bool) -> nn.Module:
    if family == "fse":
        return FSEAttention(num_features=len(fse_columns(ds)), domain_head=domain_head, **params)
    layout = ds.manifest["mda"]
    n_rig = 2 * sum(len(ds.feature_columns(b)) for b in layout["rigidity"])
    n_tof = 2 * sum(len(ds.feature_columns(b)) for b in layout["tof"])
    image = (len(layout["clusters"]["layers"]), ds.feature_shape(layout["clusters"]["branch"])[-1])
    from autopid.models.mda import MDA

    return MDA(rigidity_channels=n_rig, tof_channels=n_tof, image_shape=image, domain_head=domain_head, **params)


@dataclass
class Frames:
    train: pd.DataFrame
    validation: pd.DataFrame
    validation_data: pd.DataFrame


VALIDATION_SEED = 1


def load_frames(ds: PreprocessedDataset, species: str, t: TrainingSpec, *, with_data: bool) -> Frames:
    """The training sample (with the configured signal fraction and background mix) and
    the validation samples. Validation MC keeps the natural MC composition and a fixed
    seed, so that every trial of a search is scored on the same rows, whatever mix it
    trains with."""
    mix = dict(signal_fraction=t.signal_fraction, background_mix=t.background_mix)
    train = sample_mc(ds, "train", species, max_rows=t.max_train_rows, seed=t.seed, **mix)
    if with_data:
        data = sample_data(ds, "train", max_rows=len(train), seed=t.seed)
        train = pd.concat([train, data], ignore_index=True)
    val = sample_mc(ds, "validation", species, max_rows=t.max_eval_rows, seed=VALIDATION_SEED)
    val_data = sample_data(ds, "validation", max_rows=t.max_eval_rows or len(val), seed=VALIDATION_SEED)
    return Frames(train, val, val_data)


_CALIBRATIONS: dict[tuple[str, str], ChargeCalibration] = {}


def charge_calibration(ds: PreprocessedDataset) -> ChargeCalibration:
    """The tracker charge gain maps of MC and Data, each fitted on its own train split
    (truth-free; see :mod:`autopid.calibration.gains`). Fitted once per cache entry and
    process (a search's trials share it)."""
    key = (str(ds.path), str(ds.manifest.get("key")))
    if key not in _CALIBRATIONS:
        _CALIBRATIONS.clear()  # one cache entry at a time is what a process trains on
        _CALIBRATIONS[key] = fit_charge_calibration(ds, split="train")
    return _CALIBRATIONS[key]


def charge_calibrator(ds: PreprocessedDataset) -> Callable[[pd.DataFrame, str], pd.DataFrame]:
    """``(frame, domain) -> frame`` with the tracker and TOF charges calibrated by the
    dataset's truth-free gain maps (those an MDA trains with): what the learned baselines of
    an MDA dataset read, so that they do not lose on Data by a miscalibration the MDA does
    not see."""
    from autopid.data.mda import calibrated_columns

    cal = charge_calibration(ds)

    def apply(frame: pd.DataFrame, domain: str) -> pd.DataFrame:
        return frame.assign(**calibrated_columns(frame, ds, cal, domain)) if len(frame) else frame

    return apply


def rigidity_reweighter(ds: PreprocessedDataset, mc_train: pd.DataFrame) -> RigidityReweighter:
    """Data/MC density ratio in log10|R|: the MC training rows (as sampled, with their
    signal fraction and background mix) against the whole Data train split."""
    col = rigidity_column(ds)
    data = ds.frame("train", "data", [col])[col].to_numpy(np.float64)
    return RigidityReweighter.fit(mc_train[col].to_numpy(np.float64), data)


def mc_rigidity_weights(reweighter: RigidityReweighter | None, ds: PreprocessedDataset, frame: pd.DataFrame
                        ) -> np.ndarray | None:
    """Rigidity weights of the rows of ``frame`` (1 on Data rows); None without a reweighter."""
    if reweighter is None:
        return None
    w = reweighter.weights(frame[rigidity_column(ds)].to_numpy(np.float64))
    if "domain" in frame:
        w = np.where(frame["domain"].to_numpy() > 0.5, 1.0, w)
    return w


def make_dataset(family: str, frame: pd.DataFrame, ds: PreprocessedDataset, *,
                 calibration: ChargeCalibration | None = None, domain: str | None = None,
                 weights: np.ndarray | None = None) -> FSEDataset | MDADataset:
    """The model family's dataset of ``frame``; MDA: charges calibrated with
    ``calibration`` (per row's ``domain`` column, or ``domain`` for all), ``weights``
    per row for the losses."""
    if family == "fse":
        return FSEDataset(frame, ds.normaliser, fse_columns(ds))
    from autopid.data.mda import MDADataset

    return MDADataset(frame, ds, calibration=calibration, domain=domain, weights=weights)


def make_loader(family: str, dataset: Any, batch_size: int, shuffle: bool, seed: int = 0) -> Iterable[Any]:
    if family == "fse":
        return fse_dataloader(dataset, batch_size=batch_size, shuffle=shuffle, seed=seed)
    from autopid.data.mda import mda_dataloader

    return mda_dataloader(dataset, batch_size=batch_size, shuffle=shuffle, seed=seed)


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, dict):
        return {k: v.to(device) for k, v in batch.items()}
    return batch.to(device)


def forward(model: nn.Module, family: str, batch: Any, grl_lambda: float = 0.0) -> ModelOutput:
    if family == "fse":
        return model(batch["feature_ids"], batch["values"], batch["padding_mask"], grl_lambda=grl_lambda)
    return model(batch, grl_lambda=grl_lambda)


def _get(batch: Any, key: str) -> torch.Tensor:
    return batch[key] if isinstance(batch, dict) else getattr(batch, key)


def _weight_of(batch: Any) -> torch.Tensor | None:
    """The batch's per-row loss weights, if its dataset gives them."""
    if isinstance(batch, dict):
        return batch.get("weight")
    return getattr(batch, "weight", None)


def train_epoch(
    model: nn.Module,
    family: str,
    loader: Iterable[Any],
    optimizer: torch.optim.Optimizer,
    *,
    epoch: int,
    epochs: int,
    steps_per_epoch: int,
    lambda_max: float,
    label_weights: np.ndarray | None = None,
    device: torch.device | None = None,
    mixed_precision: bool = False,
    weight_classifier: bool = False,
    warmup_epochs: int = 0,
) -> dict[str, float]:
    """One pass over ``loader``; returns mean losses, the last lambda and the events seen.
    ``mixed_precision`` autocasts to bfloat16 on CUDA (no loss scaling needed for bf16).

    The domain loss weighs each MC row by the batch's ``weight`` (its rigidity weight,
    when the dataset has one) times ``label_weights[y]`` (Data/MC class ratios); Data
    rows weigh 1. ``weight_classifier`` weighs the classification loss by ``weight`` too.
    The first ``warmup_epochs`` run source-only (lambda 0: the domain head learns, the
    features are not pushed); the DANN schedule then runs over the remaining epochs."""
    device = device or torch.device("cpu")
    amp = mixed_precision and device.type == "cuda"
    model.train()
    bce = nn.functional.binary_cross_entropy_with_logits
    # running sums stay on the device: one sync per epoch, not three per step
    totals = {k: torch.zeros((), device=device) for k in ("loss", "loss_class", "loss_domain")}
    seen, steps, lam = 0, 0, 0.0
    w_t = torch.as_tensor(label_weights, dtype=torch.float32, device=device) if label_weights is not None else None
    for step, batch in enumerate(loader):
        batch = to_device(batch, device)
        lam = dann_lambda((epoch - warmup_epochs + step / max(steps_per_epoch, 1)) / max(epochs - warmup_epochs, 1),
                          lambda_max) if epoch >= warmup_epochs else 0.0
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            out = forward(model, family, batch, lam)
        out = _float32(out)
        y, has, dom = _get(batch, "y"), _get(batch, "has_label"), _get(batch, "domain")
        row_w = _weight_of(batch)
        # the mean over the labelled rows as a masked sum (a boolean index would sync the
        # device); a batch of Data rows alone gives 0
        w_cls = has.to(out.logits.dtype)
        if weight_classifier and row_w is not None:
            w_cls = w_cls * row_w.to(w_cls.dtype)
        loss_cls = (bce(out.logits, y, reduction="none") * w_cls).sum() / w_cls.sum().clamp_min(1e-12)
        loss = loss_cls
        loss_dom = torch.zeros((), device=device)
        if lambda_max > 0 and out.domain_logits is not None:
            weight = torch.ones_like(dom) if row_w is None else row_w.to(dom.dtype)
            if w_t is not None:
                weight = torch.where(has, weight * w_t[y.long()], weight)
            loss_dom = bce(out.domain_logits, dom, weight=weight)
            loss = loss + loss_dom
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        totals["loss"] += loss.detach()
        totals["loss_class"] += loss_cls.detach()
        totals["loss_domain"] += loss_dom.detach()
        seen += int(y.shape[0])
        steps += 1
    out_ = {k: float(v) / max(steps, 1) for k, v in totals.items()}
    out_.update(lambda_=lam, events=float(seen))
    return out_


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _float32(out: Any) -> Any:
    """Losses in float32 whatever precision the forward pass ran in."""
    if not is_dataclass(out):
        return out
    return replace(out, **{f.name: v.float() for f in fields(out)
                           if isinstance(v := getattr(out, f.name), torch.Tensor) and v.is_floating_point()})


@torch.no_grad()
def predict(model: nn.Module, family: str, loader: Iterable[Any], device: torch.device | None = None
            ) -> dict[str, np.ndarray]:
    """Probabilities, pooled features and attention weights, in loader order."""
    device = device or _device_of(model)
    model.eval()
    scores, feats, att = [], [], []
    for batch in loader:
        out = forward(model, family, to_device(batch, device))
        scores.append(torch.sigmoid(out.logits).cpu())
        feats.append(out.features.cpu())
        if family == "mda" and out.attention is not None:
            att.append(out.attention.cpu())
    res = {"score": torch.cat(scores).numpy(), "features": torch.cat(feats).numpy()}
    if att:
        res["attention"] = torch.cat(att).numpy()
    return res


def predict_frame(model: nn.Module, family: str, frame: pd.DataFrame, ds: PreprocessedDataset,
                  batch_size: int = 512, *, domain: str | None = None) -> dict[str, np.ndarray]:
    """Scores and features of ``frame``'s rows. An MDA model's charge calibration (its
    ``calibration`` attribute, stored with it) is applied with the gain map of ``domain``
    (``"mc"``/``"data"``), else of each row's ``domain`` column, else Data's."""
    dataset = make_dataset(family, frame, ds, calibration=getattr(model, "calibration", None), domain=domain)
    return predict(model, family, make_loader(family, dataset, batch_size, shuffle=False))


def validation_metrics(model: nn.Module, family: str, frames: Frames, ds: PreprocessedDataset,
                       seed: int = 0, *, reweighter: RigidityReweighter | None = None,
                       label_shift_method: str = "mlls", data_fraction: float | None = None,
                       species_weights: np.ndarray | None = None, with_data: bool = True,
                       mc: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """Validation metrics that never read hidden truth: MC AUC and F1; the Data signal
    fraction estimated from the score (``data_signal_fraction``); and how well a small
    classifier tells Data from MC on the model's features: ``domain_accuracy`` on
    class-matched samples (MC weighted to the estimated Data class mix and, with a
    ``reweighter``, to the Data rigidity spectrum), ``domain_accuracy_raw`` without the
    matching, ``domain_confusion = 1 - 2 |domain_accuracy - 0.5|``. ``data_fraction``: the
    Data signal fraction to match (default: this model's estimate, ``data_signal_fraction``).
    ``species_weights`` (per validation-MC row, :mod:`autopid.calibration.species_mix`) match
    the Data composition by species instead: the signal fraction then follows from them.
    ``with_data=False`` leaves the Data side out (the domain accuracies NaN, the Data
    signal fractions absent): a fit that does not adapt measures it only on the epochs it
    keeps, as it costs about 40 % of an FSE epoch.
    ``mc``: this model's :func:`predict_frame` of ``frames.validation``, if already made."""
    mc = predict_frame(model, family, frames.validation, ds) if mc is None else mc
    y = frames.validation["y"].to_numpy()
    cut = best_f1_threshold(y, mc["score"])
    out = {"val_auc": roc_auc(y, mc["score"]), "val_f1": efficiency_purity_f1(y, mc["score"], cut)["f1"],
           "threshold": cut}
    if with_data and len(frames.validation_data):
        data = predict_frame(model, family, frames.validation_data, ds)
        w_r = mc_rigidity_weights(reweighter, ds, frames.validation)
        est = estimate_signal_fraction(y, mc["score"], data["score"], mc_weights=w_r, method=label_shift_method)
        out["data_signal_fraction"] = est["fraction"]
        out["mc_signal_fraction"] = est["mc_fraction"]
        match = est["fraction"] if data_fraction is None else float(data_fraction)
        if species_weights is not None:
            w_r = np.asarray(species_weights, dtype=np.float64) * (1.0 if w_r is None else w_r)
            match = float(np.sum(w_r * y) / max(np.sum(w_r), 1e-12))
        out["data_signal_fraction_matched"] = match
        out["domain_accuracy"] = class_matched_domain_accuracy(mc["features"], data["features"], y, match,
                                                               mc_weights=w_r, seed=seed)
        out["domain_accuracy_raw"] = domain_classifier_accuracy(mc["features"], data["features"], seed=seed)
    else:
        out["domain_accuracy"] = out["domain_accuracy_raw"] = float("nan")
    acc = out["domain_accuracy"]
    out["domain_confusion"] = float("nan") if math.isnan(acc) else 1.0 - 2.0 * abs(acc - 0.5)
    return out


def objective(metrics: dict[str, float], domain_penalty: float = 1.0) -> float:
    """MC performance plus domain confusion of what the calibration and reweighting left:
    ``val_auc + (domain_penalty / 2) * (domain_confusion - 1)``, i.e. validation AUC on
    MC minus ``domain_penalty * |domain accuracy - 0.5|``, the domain accuracy measured
    on class-matched, rigidity-reweighted samples (:func:`validation_metrics`). With
    the default penalty 1, a domain accuracy of 0.55 costs as much as 0.05 of AUC."""
    acc = metrics.get("domain_accuracy", float("nan"))
    pen = 0.0 if math.isnan(acc) else domain_penalty * abs(acc - 0.5)
    return metrics["val_auc"] - pen


def batches_per_epoch(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))
