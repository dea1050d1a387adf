"""Train one method on one dataset, species and seed, and score the common test rows.

Every method sees the same training rows (the model's training sample for that seed:
``core.load_frames`` with the model's settings), picks its working point on the same MC
validation rows (all of them, at the natural MC composition), and is scored on the same
test rows. The learned models' working point is the best-F1 cut on validation; the
classic selections keep their own (calibrated on MC). Data rows are never labelled for training or for a
working point: their hidden truth is attached by :func:`load_test` for evaluation only.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from autopid._logging import get_logger
from autopid.data import PreprocessedDataset
from autopid.data.dataset import sample_mc
from autopid.evaluate import held_out_frames
from autopid.metrics import best_f1_threshold

_log = get_logger(__name__)
_NO_TRUTH_WARNED: set[str] = set()

ROW = "__benchmark_row"


@dataclass
class TestSet:
    """Test rows of both domains; ``y`` of Data is hidden truth (evaluation only)."""

    frames: dict[str, pd.DataFrame]
    roles: dict[str, pd.DataFrame | None]
    y: dict[str, np.ndarray]
    kinematic: dict[str, np.ndarray | None]
    charge: dict[str, np.ndarray | None]
    frag: dict[str, np.ndarray | None]
    kinematic_name: str | None

    def domains(self) -> list[str]:
        return [d for d in ("mc", "data") if len(self.frames[d])]


def _role_frame(ds: PreprocessedDataset, split: str, domain: str) -> pd.DataFrame | None:
    roles = getattr(ds, "roles", {}) or {}
    if not roles or not hasattr(ds, "role_frame"):
        return None
    return ds.role_frame(split, domain, list(roles))


def load_test(ds: PreprocessedDataset, species: str, max_rows: int | None) -> TestSet:
    """The test rows every method is scored on (the same subsample for every method and
    seed: seed 0)."""
    mc, data = held_out_frames(ds, species)
    if len(data) and "y" not in data:
        if str(ds.path) not in _NO_TRUTH_WARNED:
            _NO_TRUTH_WARNED.add(str(ds.path))
            _log.warning("%s: the Data have no truth (real Data): the benchmark scores MC only; "
                         "`autopid report` gives the truth-free Data estimates", ds.path)
        data = data.iloc[:0]
    frames = {"mc": mc, "data": data}
    roles = {d: _role_frame(ds, "test", d) if len(frames[d]) else None for d in frames}
    rng = np.random.default_rng(0)
    for d in frames:
        if max_rows is not None and len(frames[d]) > max_rows:
            idx = np.sort(rng.choice(len(frames[d]), max_rows, replace=False))
            frames[d] = frames[d].iloc[idx].reset_index(drop=True)
            if roles[d] is not None:
                roles[d] = roles[d].iloc[idx].reset_index(drop=True)
    kin_name = ds.manifest.get("kinematic")
    role_kin = next((r for r in ("momentum", "rigidity") if r in (getattr(ds, "roles", {}) or {})), None)
    kin: dict[str, np.ndarray | None] = {}
    charge: dict[str, np.ndarray | None] = {}
    frag: dict[str, np.ndarray | None] = {}
    for d, f in frames.items():
        r = roles[d]
        if role_kin is not None and r is not None:
            kin[d] = np.abs(r[role_kin].to_numpy(np.float64))
            kin_name = role_kin
        elif kin_name is not None and kin_name in f:
            kin[d] = np.abs(f[kin_name].to_numpy(np.float64))
        else:
            kin[d] = None
        charge[d] = np.sign(r["charge_sign"].to_numpy(np.float64)) if r is not None and "charge_sign" in r else None
        col = "truth_frag" if d == "mc" else "hidden_frag"
        frag[d] = f[col].to_numpy() if col in f else None
    y = {d: frames[d]["y"].to_numpy() if len(frames[d]) else np.zeros(0) for d in frames}
    return TestSet(frames, roles, y, kin, charge, frag, kin_name)


@dataclass
class Scored:
    """What a method gives the evaluation: its working point and test scores."""

    threshold: float
    score: dict[str, np.ndarray]
    features: dict[str, np.ndarray] = field(default_factory=dict)  # for the Data-vs-MC accuracy
    info: dict[str, Any] = field(default_factory=dict)


def finite(score: np.ndarray) -> np.ndarray:
    """Cut scores may be -inf or NaN (no measurement: never selected); make them the
    lowest finite score minus one so that ROC code accepts them."""
    s = np.asarray(score, dtype=np.float64)
    bad = ~np.isfinite(s)
    if bad.any():
        floor = float(np.min(s[~bad])) if (~bad).any() else 0.0
        s = np.where(bad, floor - 1.0, s)
    return s


class _RowIndexed:
    """A dataset whose frames carry their row number, so that the rows a model trains
    on can be matched with the same rows' role columns."""

    def __init__(self, ds: PreprocessedDataset) -> None:
        self._ds = ds

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ds, name)

    def frame(self, split: str, domain: str, columns: Any = None) -> pd.DataFrame:
        f = self._ds.frame(split, domain, columns)
        f[ROW] = np.arange(len(f), dtype=np.int64)
        return f


def training_spec(family: str, preset: Any, seed: int, threads: int) -> dict[str, Any]:
    spec = copy.deepcopy(preset.fse if family == "fse" else preset.mda)
    spec["training"].update(seed=seed, threads=threads)
    return spec


def _train_config(ds: PreprocessedDataset, species: str, spec: dict[str, Any]) -> Any:
    from autopid.train.config import TrainConfig

    return TrainConfig.model_validate({"dataset": str(ds.manifest.get("dataset", "-")), "species": species,
                                       "model": spec["model"], "training": spec["training"]})


def training_frames(ds: PreprocessedDataset, species: str, spec: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The model's training and validation samples for this seed (with row numbers), and
    the role columns of the same rows."""
    from autopid.train import core

    cfg = _train_config(ds, species, spec)
    frames = core.load_frames(_RowIndexed(ds), species, cfg.training, with_data=False)
    roles: dict[str, pd.DataFrame | None] = {}
    for name, split in (("train", "train"), ("validation", "validation")):
        full = _role_frame(ds, split, "mc")
        rows = getattr(frames, name)[ROW].to_numpy()
        roles[name] = None if full is None else full.iloc[rows].reset_index(drop=True)
    return frames, roles


# --------------------------------------------------------------------------- models


def train_model(ds: PreprocessedDataset, species: str, family: str, spec: dict[str, Any], test: TestSet
                ) -> Scored:
    """FSE or MDA trained with ``autopid.train.fit`` (the model of its best validation
    epoch is kept); the working point is the best-F1 cut on MC validation."""
    import torch

    from autopid.train import core
    from autopid.train.fit import fit

    cfg = _train_config(ds, species, spec)
    best: dict[str, Any] = {}

    def keep_best(metrics: dict[str, float], model: Any, opt: Any, sched: Any, state: Any, improved: bool) -> None:
        if improved:
            m = model.module if hasattr(model, "module") else model
            best["state"] = {k: v.detach().clone() for k, v in m.state_dict().items()}
            best["epoch"] = state.epoch

    model, state = fit(cfg, ds, on_epoch_end=keep_best, domain_penalty=float(spec.get("domain_penalty", 1.0)))
    if "state" in best:
        model.load_state_dict(best["state"])
    model.eval()
    frames = core.load_frames(ds, species, cfg.training, with_data=False)
    wp = working_point_rows(ds, species)
    with torch.no_grad():
        val = _predict(core, model, family, wp, ds, "mc")
        out = {d: _predict(core, model, family, test.frames[d], ds, d) for d in test.domains()}
    thr = best_f1_threshold(wp["y"].to_numpy(), val["score"])
    info = {"best_epoch": best.get("epoch"), "epochs_run": state.epoch, "train_rows": len(frames.train)}
    return Scored(thr, {d: o["score"].astype(np.float64) for d, o in out.items()},
                  {d: o["features"] for d, o in out.items()}, info)


def working_point_rows(ds: PreprocessedDataset, species: str) -> pd.DataFrame:
    """Every MC validation row, at the natural composition: where each learned method takes
    its best-F1 cut. Training validates on a subsample (``max_eval_rows``, for speed); the
    cut, taken once, uses all the rows, as a cut from a few hundred signal rows moves by
    about a point of F1 (ALICE-like protons: 250 in the whole quick validation split)."""
    from autopid.train.core import VALIDATION_SEED

    return sample_mc(ds, "validation", species, max_rows=None, seed=VALIDATION_SEED)


def _predict(core: Any, model: Any, family: str, frame: pd.DataFrame, ds: PreprocessedDataset, domain: str
             ) -> dict[str, Any]:
    """Scores and features; an MDA's charge calibration is applied with ``domain``'s gain map."""
    import inspect

    if "domain" in inspect.signature(core.predict_frame).parameters:
        return core.predict_frame(model, family, frame, ds, domain=domain)
    return core.predict_frame(model, family, frame, ds)


# --------------------------------------------------------------------------- baselines


def learned_columns(ds: PreprocessedDataset) -> list[str]:
    """The learned baselines see what the model sees (for MDA: its tracker, cluster,
    rigidity and TOF columns, not the L1 charge)."""
    from autopid.train import core

    if ds.manifest.get("family") == "mda":
        return core.mda_input_columns(ds)
    return ds.columns


def train_learned(ds: PreprocessedDataset, species: str, kind: str, spec: dict[str, Any], test: TestSet,
                  trials: int, seed: int, mlp_epochs: int = 10) -> Scored:
    """XGBoost (NaN native) or the MLP with mean imputation, tuned with ``tune_baseline``
    on the model's training and validation samples (``trials`` Optuna trials by validation
    AUC; 0: its defaults, fitted once), with early stopping on validation (the MLP trains
    up to ``mlp_epochs`` epochs and keeps its best)."""
    from autopid.baselines import tune_baseline
    from autopid.train.core import charge_calibrator

    frames, _ = training_frames(ds, species, spec)
    # an MDA dataset: the baselines read the same gain-calibrated charges as the MDA (each
    # domain with its own truth-free gain map), or they would lose on Data by miscalibration
    calibrate = charge_calibrator(ds) if ds.manifest.get("family") == "mda" else (lambda f, d: f)
    tr, va = calibrate(frames.train, "mc"), calibrate(frames.validation, "mc")
    y_tr, y_va = tr["y"].to_numpy().copy(), va["y"].to_numpy().copy()
    cols = learned_columns(ds)
    base, tuned = tune_baseline("xgboost" if kind == "xgboost" else "mlp", tr, y_tr, va, y_va, n_trials=trials,
                                seed=seed, columns=cols, normaliser=ds.normaliser, threads=1, epochs=mlp_epochs)
    info: dict[str, Any] = {"train_rows": len(tr), "tuning": tuned}
    wp = calibrate(working_point_rows(ds, species), "mc")
    thr = best_f1_threshold(wp["y"].to_numpy(), finite(base.predict(wp)))
    return Scored(thr, {d: finite(base.predict(calibrate(test.frames[d], d))) for d in test.domains()}, info=info)


def species_charge(ds: PreprocessedDataset, species: str) -> int | None:
    codes = ds.species_codes(species)
    zs = {abs(int(c)) for c in codes}
    return zs.pop() if len(zs) == 1 else None


def train_classic(ds: PreprocessedDataset, species: str, kind: str, spec: dict[str, Any], test: TestSet
                  ) -> Scored:
    """The standard selections on role-named columns: ALICE n-sigma (``nsigma``), the
    AMS classic selection (``cut``: L1 charge with per-ladder gains fitted truth-free on
    each domain, upper-TOF charge and the second-track / extra-cluster veto), and the
    second-track veto alone (``second_track_veto``). Responses fitted on the model's MC
    training sample, the cut chosen on MC validation (n-sigma: best F1; AMS: the target
    90 % signal efficiency with the least background); Data only enters, unlabelled, the
    AMS per-domain L1 gain calibration."""
    import autopid.baselines as B

    if kind == "nsigma":
        from autopid.baselines.nsigma import mass_of

        try:
            base = B.NSigmaSelection(species, mass=mass_of(species, ds.species_codes(species)))
        except (ValueError, KeyError) as exc:
            raise MissingInput(f"n-sigma needs a mass hypothesis for {species}: {exc}") from exc
    else:
        z = species_charge(ds, species)
        if z is None:
            raise MissingInput(f"{kind} needs one charge per species; {species} has truth values "
                               f"{ds.species_codes(species)}")
        base = B.ClassicAmsSelection(z) if kind == "cut" else B.SecondTrackVeto()
    missing = B.missing_roles(ds, base.required_roles)
    if missing:
        raise MissingInput(f"{kind} needs the role(s) {', '.join(missing)} (the 'roles' section of the dataset "
                           f"YAML maps: {', '.join(sorted(ds.roles)) or 'none'})")
    frames, roles = training_frames(ds, species, spec)
    y_tr = frames.train["y"].to_numpy().copy()
    validation = (roles["validation"], frames.validation["y"].to_numpy().copy())
    info: dict[str, Any] = {"train_rows": len(frames.train)}
    if kind == "nsigma":
        base.fit(roles["train"], y_tr, validation=validation)
        info["params"] = base.params
        scores = {d: finite(base.predict(test.roles[d])) for d in test.domains()}
    else:
        data = _role_frame(ds, "train", "data")
        base.fit(roles["train"], y_tr, validation=validation, data=data)
        info["windows"] = base.windows
        scores = {d: finite(base.predict(test.roles[d], domain=d)) for d in test.domains()}
    return Scored(float(base.threshold), scores, info=info)


class MissingInput(Exception):
    """A method cannot run on this dataset (a role or a baseline is missing): skipped with a note."""


def no_adaptation(spec: dict[str, Any]) -> dict[str, Any]:
    """The same model and training without domain adaptation: no domain head
    (``lambda_max: 0``), no label-shift weights and no rigidity reweighting (both act
    through the domain loss). The truth-free charge calibration of each domain is an
    input calibration, not an adaptation: it stays as configured."""
    from autopid.train.config import TrainingSpec

    spec = copy.deepcopy(spec)
    t = spec["training"]
    t["lambda_max"] = 0.0
    fields = TrainingSpec.model_fields
    if "label_shift_weighting" in fields:
        t["label_shift_weighting"] = False
    if "rigidity_reweighting" in fields:
        t["rigidity_reweighting"] = "none"
    return spec
