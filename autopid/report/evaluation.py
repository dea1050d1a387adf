"""Scores of one trained model and of the baselines on the held-out test split.

The same recipe as ``benchmarks/models_vs_baselines.py``. The classic selections (ALICE
n-sigma, the AMS classic selection and the second-track veto) read their inputs through
the dataset's roles, are calibrated on the MC train split (the AMS charges also on the
Data train split, truth-free) and choose their working point on validation MC; a role the
dataset does not map skips that selection with a note naming it. The n-sigma responses are
recalibrated on Data from its pion peaks, also truth-free. The learned baselines are
tuned (Optuna TPE, ``baseline_trials`` trials) on the model's own training sample and cut
at their best F1 on the model's validation sample. Data rows carry the hidden truth of
simulated Data in ``y`` and in ``true_species``: used only by plots labelled "hidden
truth (evaluation only)".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from autopid._logging import get_logger
from autopid.config import load_yaml_config
from autopid.data import PreprocessedDataset
from autopid.estimate import report_estimate
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
    details: dict[str, Any] = field(default_factory=dict)  # fitted parameters, chosen windows


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


ROLE_PREFIX = "role:"  # role columns ride along with the test frames under this prefix


def held_out_with_species(ds: PreprocessedDataset, species: str, max_rows: int | None, seed: int = 0
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``held_out_frames`` plus the true species name of every row and the mapped roles
    (columns ``role:<name>``).

    Both are attached before subsampling: ``held_out_frames`` keeps the rows in the order
    of ``evaluation_truth`` and ``role_frame``, which a subsample would break.
    """
    mc, data = held_out_frames(ds, species, max_rows=None)
    mc["true_species"] = ds.label_species(mc["truth_label"].to_numpy())
    mc = pd.concat([mc, ds.role_frame("test", "mc").add_prefix(ROLE_PREFIX)], axis=1)
    if len(data):
        hidden = ds.evaluation_truth("test", "data")
        if "hidden_label" in hidden:  # simulated Data; real Data has no truth to name species by
            data["true_species"] = ds.label_species(hidden["hidden_label"].to_numpy())
        data = pd.concat([data, ds.role_frame("test", "data").add_prefix(ROLE_PREFIX)], axis=1)
    rng = np.random.default_rng(seed)
    return _subsample(mc, max_rows, rng), _subsample(data, max_rows, rng)


def role_view(frame: pd.DataFrame) -> pd.DataFrame:
    """The role columns of a test frame, named by role."""
    cols = [c for c in frame.columns if c.startswith(ROLE_PREFIX)]
    return frame[cols].rename(columns=lambda c: c[len(ROLE_PREFIX):])


def _finite(score: np.ndarray) -> np.ndarray:
    # cut baselines give -inf (no L1 hit) or NaN (no measurement): never selected, and
    # finite so that ROC code accepts them
    s = np.asarray(score, dtype=np.float64)
    bad = ~np.isfinite(s)
    if bad.any():
        floor = np.nanmin(np.where(bad, np.nan, s)) if (~bad).any() else 0.0
        s = np.where(bad, floor - 1.0, s)
    return s


@dataclass
class Baseline:
    """A fitted baseline, how it scores a test frame, and its working point."""

    name: str
    score: Callable[[pd.DataFrame, str], np.ndarray]  # (test frame, "mc"/"data") -> score
    threshold: float
    details: dict[str, Any] = field(default_factory=dict)


def _classic(ds: PreprocessedDataset, experiment: str, species: str, max_rows: int | None,
             seed: int) -> tuple[list[Baseline], list[str]]:
    """The classic selections the dataset's roles allow, and a note for each one skipped."""
    from autopid.baselines import (
        ClassicAmsSelection,
        NSigmaSelection,
        SecondTrackVeto,
        missing_roles,
        role_sample,
    )
    from autopid.baselines.nsigma import mass_of

    out: list[Baseline] = []
    notes: list[str] = []
    roles = ds.roles
    codes = ds.species_codes(species)
    candidates: list[tuple[str, type, dict[str, Any]]] = []
    if experiment == "alice" or "tpc_signal" in roles:
        try:
            candidates.append(("n-sigma", NSigmaSelection, {"species": species, "mass": mass_of(species, codes)}))
        except ValueError as exc:
            notes.append(f"n-sigma skipped: {exc}")
    if experiment == "ams" or "l1_charge" in roles or "second_tracks" in roles:
        if len(codes) == 1:
            candidates.append(("classic", ClassicAmsSelection, {"z": abs(int(codes[0]))}))
        else:
            notes.append(f"classic AMS selection skipped: species {species!r} has {len(codes)} truth values, "
                         "not one charge")
        candidates.append(("veto", SecondTrackVeto, {}))
    for kind, cls, kwargs in candidates:
        missing = missing_roles(ds, cls.required_roles)
        label = {"n-sigma": "n-sigma", "classic": "classic AMS selection", "veto": "second-track veto"}[kind]
        if missing:
            notes.append(f"{label} skipped: dataset {ds.manifest.get('dataset')!r} maps no role "
                         f"{missing[0]!r} (add it under 'roles' in the dataset YAML)")
            continue
        train, y = role_sample(ds, "train", "mc", species=species, max_rows=max_rows, seed=seed)
        val, y_val = role_sample(ds, "validation", "mc", species=species, max_rows=max_rows, seed=seed)
        if y is None or len(np.unique(y)) < 2 or y_val is None or not y_val.any():
            notes.append(f"{label} skipped: the MC train or validation split lacks signal or background")
            continue
        # Data train rows, truth-free: the selections recalibrate Data on them and overlay
        # its noise on the MC extra-cluster counts
        data = role_sample(ds, "train", "data", max_rows=max_rows, seed=seed)[0]
        try:
            sel = cls(**kwargs).fit(train, y, validation=(val, y_val), data=data)
        except ValueError as exc:
            notes.append(f"{label} skipped: {exc}")
            continue
        has_data = "data" in getattr(sel, "calibration", {"data": None})
        if not has_data:
            notes.append(f"{label}: no Data train rows to recalibrate Data on; Data is scored with the MC "
                         "calibration")

        def score(f: pd.DataFrame, d: str, m: Any = sel, own: bool = has_data) -> np.ndarray:
            return m.predict(role_view(f), domain=d if own else "mc")

        if kind == "n-sigma":
            out.append(Baseline(f"n-sigma (fitted, n<{sel.n_sigma:.1f})", score, sel.threshold, sel.params))
        else:
            name = "classic (calibrated L1, UTOF, veto)" if kind == "classic" else "second-track veto"
            out.append(Baseline(name, score, sel.threshold, dict(sel.windows)))
    return out, notes


def _learned(ds: PreprocessedDataset, family: str, frames: Any, trials: int, seed: int) -> list[Baseline]:
    """XGBoost (and, for FSE, the imputation MLP), each tuned like the network is."""
    from autopid.baselines import tune_baseline

    # an MDA dataset: the baselines read the charges the MDA reads, gain-calibrated per domain
    calibrate = core.charge_calibrator(ds) if family == "mda" else (lambda f, d: f)
    train, val = calibrate(frames.train, "mc"), calibrate(frames.validation, "mc")
    y, y_val = train["y"].to_numpy().copy(), val["y"].to_numpy().copy()  # writable: torch takes them
    if len(np.unique(y)) < 2 or len(np.unique(y_val)) < 2:
        return []
    cols = core.mda_input_columns(ds) if family == "mda" else ds.columns
    kinds = [("XGBoost (NaN native, tuned)", "xgboost")]
    if family == "fse":
        kinds.append(("MLP, mean imputation (tuned)", "mlp"))
    out = []
    for name, kind in kinds:
        model, info = tune_baseline(kind, train, y, val, y_val, trials, seed, columns=cols,  # type: ignore[arg-type]
                                    normaliser=ds.normaliser, epochs=5)
        out.append(Baseline(name, lambda f, d, m=model: m.predict(calibrate(f, d)), float(model.threshold), info))
    return out


def evaluate_source(source: ModelSource, *, max_rows: int | None = 50_000, learned_baselines: bool = True,
                    seed: int = 0, baseline_trials: int = 8) -> Evaluation:
    """Load ``source``'s model and dataset; score the model and the baselines
    (``baseline_trials``: Optuna trials for each learned baseline)."""
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

    pred_mc = core.predict_frame(model, family, mc, ds, domain="mc")
    pred_data = core.predict_frame(model, family, data, ds, domain="data") if len(data) else {"score": np.zeros(0)}
    val_score = core.predict_frame(model, family, frames.validation, ds, domain="mc")["score"]
    y_val = frames.validation["y"].to_numpy()
    label = "FSE+attention" if family == "fse" else "MDA"
    selections = [Scored(label, best_f1_threshold(y_val, val_score), pred_mc["score"], pred_data["score"],
                         is_model=True)]
    baselines, notes = _classic(ds, experiment, species, max_rows, seed)
    if learned_baselines:
        baselines += _learned(ds, family, frames, baseline_trials, seed)
    for b in baselines:
        s_data = _finite(b.score(data, "data")) if len(data) else np.zeros(0)
        selections.append(Scored(b.name, b.threshold, _finite(b.score(mc, "mc")), s_data, details=b.details))
    for s in selections:
        s.metrics["mc"] = physics_metrics(mc["y"].to_numpy(), s.mc, s.threshold,
                                          mc[kinematic].to_numpy() if kinematic else None, bins)
        if len(data):
            if "y" in data:  # simulated Data's hidden truth; real Data has none
                s.metrics["data"] = physics_metrics(data["y"].to_numpy(), s.data, s.threshold,
                                                    data[kinematic].to_numpy() if kinematic else None, bins)
            # truth-free Data efficiency (template fit) next to the hidden truth; a classic AMS
            # selection cuts on the L1 charge, the template variable: not estimable
            s.metrics["data_estimate"] = report_estimate(ds, species, mc, data, s.mc, s.data, s.threshold,
                                                         reads_template=s.name.startswith("classic"))

    ev = Evaluation(source, cfg, experiment, family, species, kinematic, bins, mc, data, selections,
                    species_names=list(ds.species), notes=notes)
    if family == "mda" and "attention" in pred_mc:
        ev.branch_names = list(getattr(model, "branch_names", []))
        ev.attention["mc"] = pred_mc["attention"]
        if "attention" in pred_data:
            ev.attention["data"] = pred_data["attention"]
    if not len(data):
        ev.notes.append("the dataset has no Data test rows: Data plots are left out")
    elif "y" not in data:
        ev.notes.append("the Data have no truth (real Data): only the truth-free Data estimates are shown")
    _log.info("evaluated %s on %d MC and %d Data test rows", source.title, len(mc), len(data))
    return ev
