"""The GPU training path (data held on the device, batches gathered there) against the host
one. The CUDA cases run where a CUDA device is present (CI has none)."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from autopid.data import FSEDataset, MDADataset, PreprocessedDataset, fse_dataloader, mda_dataloader
from autopid.data import sample_data, sample_mc
from autopid.train.config import TrainConfig
from autopid.train.core import predict_frame
from autopid.train.fit import fit

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=cuda)]
FIELDS = ("x", "edge_index", "edge_type", "batch", "ptr", "image", "rigidity", "tof", "y", "domain", "has_label",
          "weight")


def mixed(ds: PreprocessedDataset, species: str) -> pd.DataFrame:
    mc = sample_mc(ds, "train", species, signal_fraction=0.5, max_rows=600, seed=2)
    return pd.concat([mc, sample_data(ds, "train", max_rows=300, seed=2)], ignore_index=True)


@cuda
def test_mda_batches_collated_on_the_gpu_equal_the_host_ones(ams_ds: PreprocessedDataset) -> None:
    frame = mixed(ams_ds, "phosphorus")
    w = np.linspace(0.5, 2.0, len(frame))
    host = MDADataset(frame, ams_ds, weights=w)
    dev = MDADataset(frame, ams_ds, weights=w).to("cuda")
    pairs = list(zip(mda_dataloader(host, batch_size=128, seed=3), mda_dataloader(dev, batch_size=128, seed=3)))
    assert len(pairs) == 8
    for a, b in pairs:
        assert b.x.is_cuda and b.edge_index.is_cuda and b.batch.is_cuda
        for f in FIELDS:
            assert torch.equal(getattr(a, f), getattr(b, f).cpu()), f


@cuda
def test_fse_batches_gathered_on_the_gpu_equal_the_host_ones(alice_ds: PreprocessedDataset) -> None:
    frame = mixed(alice_ds, "kaon")
    host = FSEDataset(frame, alice_ds.normaliser)
    dev = FSEDataset(frame, alice_ds.normaliser).to("cuda")
    for a, b in zip(fse_dataloader(host, batch_size=100, seed=4), fse_dataloader(dev, batch_size=100, seed=4)):
        assert a.keys() == b.keys()
        for k in a:
            assert b[k].is_cuda
            assert torch.equal(a[k], b[k].cpu()), k


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("family", ["fse", "mda"])
def test_fit_learns_and_the_model_scores_alike_on_cpu_and_device(
        family: str, device: str, alice_ds: PreprocessedDataset, ams_ds: PreprocessedDataset) -> None:
    ds, species = (alice_ds, "proton") if family == "fse" else (ams_ds, "phosphorus")
    cfg = TrainConfig.model_validate({
        "dataset": "unused", "species": species, "model": {"family": family},
        "training": {"epochs": 3, "batch_size": 128, "lr": 1e-3, "signal_fraction": 0.5, "max_train_rows": 3000,
                     "max_eval_rows": 1000, "lambda_max": 0.05 if family == "mda" else 0.0,
                     "early_stopping_patience": None}})
    model, state = fit(cfg, ds, device=torch.device(device))
    assert next(model.parameters()).device.type == device
    assert state.history[-1]["val_auc"] > 0.8
    assert all(np.isfinite(h["loss"]) for h in state.history)
    if device == "cuda":  # the same weights score alike on the host (cuDNN convolutions run in TF32)
        frame = sample_mc(ds, "validation", species, max_rows=400, seed=5)
        here = predict_frame(model, family, frame, ds)["score"]
        on_cpu = predict_frame(copy.deepcopy(model).cpu(), family, frame, ds)["score"]
        np.testing.assert_allclose(here, on_cpu, atol=1e-3)


def test_resume_keeps_this_devices_adam_mode(alice_ds: PreprocessedDataset) -> None:
    """A checkpoint saved on a GPU (fused Adam) resumes on the CPU with the CPU's Adam."""
    from autopid.train import artifacts

    cfg = TrainConfig.model_validate({
        "dataset": "unused", "species": "proton", "model": {"family": "fse"},
        "training": {"epochs": 2, "batch_size": 128, "max_train_rows": 600, "max_eval_rows": 300,
                     "early_stopping_patience": None}})
    saved: list[dict] = []
    fit(cfg.model_copy(update={"training": cfg.training.model_copy(update={"epochs": 1})}), alice_ds,
        on_epoch_end=lambda m, model, opt, sched, state, imp: saved.append(
            artifacts.checkpoint_payload(model, opt, sched, state)))
    ckpt = copy.deepcopy(saved[-1])
    for g in ckpt["optimizer"]["param_groups"]:
        g["fused"] = True  # as saved by a CUDA run
    seen: list[object] = []
    _, state = fit(cfg, alice_ds, resume=ckpt,
                   on_epoch_end=lambda m, model, opt, sched, st, imp: seen.append(opt.param_groups[0]["fused"]))
    assert state.epoch == 2 and seen == [None]
