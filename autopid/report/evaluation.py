"""Scores of one trained model and of the baselines on the held-out test split.

The same recipe as ``benchmarks/models_vs_baselines.py``: baselines are fitted on the
model's own training sample (``core.load_frames`` with its training settings), learned
cuts are the best-F1 cut on the model's validation sample (MC), fixed selections keep
their standard cut. Data rows carry the hidden truth of simulated Data in ``y`` and in
``true_species``: used only by plots labelled "hidden truth (evaluation only)".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from autopid._logging import get_logger
from autopid.config import load_yaml_config
from autopid.data import PreprocessedDataset
from autopid.evaluate import DEFAULT_BINS, held_out_frames, physics_metrics
from autopid.metrics import best_f1_threshold
from autopid.report.inputs import ModelSource
from autopid.train import artifacts, core
from autopid.train.config import TrainConfig

_log = get_logger(__name__)


@dataclass
class Scored:
    """One selection (the model or a baseline): scores on MC and Data, and its cut."""

    name: str
    threshold: float
    mc: np.ndarray
    data: np.ndarray
    is_model: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class Evaluation:
    source: ModelSource
    cfg: TrainConfig
    experiment: str
    family: str
    species: str
    kinematic: str | None
    bins: list[float] | None
    mc: pd.DataFrame  # test MC, ``y`` and ``true_species`` from MC truth
    data: pd.DataFrame  # test Data, ``y`` and ``true_species`` from hidden truth (evaluation only)
    selections: list[Scored]
    attention: dict[str, np.ndarray] = field(default_factory=dict)  # "mc"/"data" -> [rows, branches]
    branch_names: list[str] = field(default_factory=list)
    species_names: list[str] = field(default_factory=list)  # the dataset's species, in its order
    notes: list[str] = field(default_factory=list)

    @property
    def model(self) -> Scored:
        return next(s for s in self.selections if s.is_model)


def _subsample(frame: pd.DataFrame, max_rows: int | None, rng: np.random.Generator) -> pd.DataFrame:
    if max_rows is None or len(frame) <= max_rows:
        return frame
    return frame.iloc[np.sort(rng.choice(len(frame), max_rows, replace=False))].reset_index(drop=True)


def held_out_with_species(ds: PreprocessedDataset, species: str, max_rows: int | None, seed: int = 0
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``held_out_frames`` plus the true species name of every row.

    The species is attached before subsampling: ``held_out_frames`` keeps the rows in
    the order of ``evaluation_truth``, which a subsample would break.
    """
    mc, data = held_out_frames(ds, species, max_rows=None)
    mc["true_species"] = ds.label_species(mc["truth_label"].to_numpy())
    if len(data):
        hidden = ds.evaluation_truth("test", "data")["hidden_label"].to_numpy()
        data["true_species"] = ds.label_species(hidden)
    rng = np.random.default_rng(seed)
    return _subsample(mc, max_rows, rng), _subsample(data, max_rows, rng)


def _finite(score: np.ndarray) -> np.ndarray:
    # cut baselines give -inf (no L1 hit) or NaN (no measurement): never selected, and
    # finite so that ROC code accepts them
    s = np.asarray(score, dtype=np.float64)
    bad = ~np.isfinite(s)
    if bad.any():
        floor = np.nanmin(np.where(bad, np.nan, s)) if (~bad).any() else 0.0
        s = np.where(bad, floor - 1.0, s)
    return s


def _baselines(ds: PreprocessedDataset, experiment: str, family: str, species: str, train: pd.DataFrame,
               learned: bool) -> list[tuple[str, Any, bool]]:
    """(name, fitted baseline, uses its own fixed cut) for the experiment."""
    from autopid.baselines import L1ChargeCut, MLPImputation, NSigmaSelection, XGBoostBaseline
    from autopid.physics.alice import SPECIES as ALICE_SPECIES

    y = train["y"].to_numpy().copy()  # writable: the MLP baseline hands it to torch
    out: list[tuple[str, Any, bool]] = []
    if experiment == "alice" and species in ALICE_SPECIES:
        out.append(("n-sigma (|n|<3)", NSigmaSelection(species).fit(train, y), True))
    if experiment == "ams":
        codes = ds.species_codes(species)
        if len(codes) == 1 and "trk_charge_l1" in train:
            z = int(abs(codes[0]))
            out.append((f"L1 charge |Q-{z}|<0.5", L1ChargeCut(z), True))
    if learned and len(np.unique(y)) == 2:
        cols = core.mda_input_columns(ds) if family == "mda" else ds.columns
        # small, fixed sizes: a report compares against a reasonable baseline, it does not tune one
        out.append(("XGBoost (NaN native)", XGBoostBaseline(cols, n_estimators=100, threads=1).fit(train, y), False))
        if family == "fse":
            out.append(("MLP, mean imputation", MLPImputation(ds.normaliser, cols, epochs=5).fit(train, y), False))
    return out


def evaluate_source(source: ModelSource, *, max_rows: int | None = 50_000, learned_baselines: bool = True,
                    seed: int = 0) -> Evaluation:
    """Load ``source``'s model and dataset; score the model and the baselines."""
    cfg = load_yaml_config(source.config_path, TrainConfig)
    ds = PreprocessedDataset(source.cache)
    model, payload = artifacts.load_model(source.model_path, ds)
    family, species = payload["family"], payload["species"]
    experiment = str(ds.manifest.get("experiment", ""))
    kinematic = ds.manifest.get("kinematic")
    bins = DEFAULT_BINS.get(experiment)
    mc, data = held_out_with_species(ds, species, max_rows, seed)

    t = cfg.training
    if max_rows is not None:
        t = t.model_copy(update={"max_train_rows": min(t.max_train_rows or max_rows, max_rows),
                                 "max_eval_rows": min(t.max_eval_rows or max_rows, max_rows)})
    frames = core.load_frames(ds, species, t, with_data=False)

    pred_mc = core.predict_frame(model, family, mc, ds)
    pred_data = core.predict_frame(model, family, data, ds) if len(data) else {"score": np.zeros(0)}
    val_score = core.predict_frame(model, family, frames.validation, ds)["score"]
    y_val = frames.validation["y"].to_numpy()
    label = "FSE+attention" if family == "fse" else "MDA"
    selections = [Scored(label, best_f1_threshold(y_val, val_score), pred_mc["score"], pred_data["score"],
                         is_model=True)]
    for name, base, fixed in _baselines(ds, experiment, family, species, frames.train, learned_baselines):
        cut = float(base.threshold) if fixed else best_f1_threshold(y_val, _finite(base.predict(frames.validation)))
        s_data = _finite(base.predict(data)) if len(data) else np.zeros(0)
        selections.append(Scored(name, cut, _finite(base.predict(mc)), s_data))
    for s in selections:
        s.metrics["mc"] = physics_metrics(mc["y"].to_numpy(), s.mc, s.threshold,
                                          mc[kinematic].to_numpy() if kinematic else None, bins)
        if len(data):
            s.metrics["data"] = physics_metrics(data["y"].to_numpy(), s.data, s.threshold,
                                                data[kinematic].to_numpy() if kinematic else None, bins)

    ev = Evaluation(source, cfg, experiment, family, species, kinematic, bins, mc, data, selections,
                    species_names=list(ds.species))
    if family == "mda" and "attention" in pred_mc:
        ev.branch_names = list(getattr(model, "branch_names", []))
        ev.attention["mc"] = pred_mc["attention"]
        if "attention" in pred_data:
            ev.attention["data"] = pred_data["attention"]
    if not len(data):
        ev.notes.append("the dataset has no Data test rows: Data plots are left out")
    _log.info("evaluated %s on %d MC and %d Data test rows", source.title, len(mc), len(data))
    return ev
