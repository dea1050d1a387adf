"""Saving and loading models and checkpoints: plain tensors and primitives only, loaded
with ``weights_only=True`` (nothing is unpickled)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autopid.calibration.gains import ChargeCalibration
from autopid.data import PreprocessedDataset
from autopid.errors import InputError
from autopid.train import core
from autopid.train.config import TrainConfig
from autopid.train.fit import FitState

MODEL_FILE = "model.pt"
CHECKPOINT_FILE = "state.pt"


def model_payload(model: nn.Module, cfg: TrainConfig, ds: PreprocessedDataset) -> dict[str, Any]:
    return {
        "format": 1,
        "family": cfg.model.family,
        "params": dict(cfg.model.params),
        "species": cfg.species,
        "domain_head": cfg.training.lambda_max > 0,
        "cache_key": ds.manifest["key"],
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        # the MDA charge gain maps, as a JSON string (weights_only loading reads it back)
        "calibration": calibration_json(model),
    }


def calibration_json(model: nn.Module) -> str | None:
    cal = getattr(model.module if hasattr(model, "module") else model, "calibration", None)
    return json.dumps(cal.to_dict()) if cal is not None else None


def save_atomic(obj: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def checkpoint_payload(model: nn.Module, opt: torch.optim.Optimizer, sched: Any, state: FitState) -> dict[str, Any]:
    """What :func:`autopid.train.fit.fit` resumes from: model, optimizer, scheduler, loop
    state and the random state, so that a run cut short and resumed draws the same dropout
    masks as one that was never stopped (shuffling is seeded per epoch already)."""
    inner = model.module if hasattr(model, "module") else model
    device = next(inner.parameters()).device
    rng = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return {"model": inner.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "state": dataclasses.asdict(state), "rng": rng}


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{path}: not a readable autopid checkpoint ({type(exc).__name__}: {exc})") from exc


def load_model(path: str | Path, ds: PreprocessedDataset) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a saved model; refuses a model trained on another cache layout."""
    payload = load_checkpoint(path)
    if payload.get("format") != 1:
        raise InputError(f"{path}: unknown model format {payload.get('format')!r}")
    model = core.build_model(payload["family"], ds, payload["params"], domain_head=payload["domain_head"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise InputError(f"{path}: the weights do not fit dataset {ds.path} ({exc})") from exc
    cal = payload.get("calibration")
    try:
        model.calibration = ChargeCalibration.from_dict(json.loads(cal)) if cal else None
    except (TypeError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: the stored charge calibration is unreadable ({exc})") from exc
    model.eval()
    return model, payload
