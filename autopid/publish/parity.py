"""Parity of an exported model with the PyTorch model it came from.

The sample covers every input case the data holds: for the FSE, every missing-detector
pattern (which columns are finite after the missing rules) of the validation and test
rows, MC and Data, a few rows each; for the MDA, every combination of one or two
tracks, missing hits, missing charges and missing rigidity/TOF values. The PyTorch side
is the training pipeline itself (:func:`autopid.train.core.predict_frame` on the cache
rows); the ONNX side is the published inference path (:class:`Predictor` on the raw
columns) in one batch, in small batches and one row at a time, and for the FSE also the
ONNX graph fed directly with values "as recorded" (missing-rule columns filled in and
sentinels in place of NaN), which the graph must undo itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from autopid.errors import AutopidError
from autopid.preprocess._chunk import cut_mask
from autopid.train import core

TOLERANCE = 1e-5


class ParityError(AutopidError):
    """ONNX Runtime and PyTorch disagree beyond the tolerance: the export is refused."""


@dataclass
class ParityReport:
    rows: int
    tolerance: float
    max_abs_diff: float = 0.0
    patterns: dict[str, int] = field(default_factory=dict)
    checks: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sources(ds: Any) -> pd.DataFrame:
    parts = []
    for split in ("validation", "test"):
        for domain in ("mc", "data"):
            f = ds.frame(split, domain, ["run", "event", *ds.columns])
            if len(f):
                parts.append(f)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["run", "event", *ds.columns])


def _pick(frame: pd.DataFrame, keys: list[str], per_group: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    idx: list[int] = []
    labels: list[str] = []
    codes = pd.Series(keys)
    for label, rows in codes.groupby(codes).groups.items():
        rows = np.asarray(rows)
        take = rng.choice(rows, size=min(per_group, len(rows)), replace=False)
        idx += sorted(int(i) for i in take)
        labels += [str(label)] * len(take)
    out = frame.iloc[idx].reset_index(drop=True)
    out["_pattern"] = labels
    return out


def fse_sample(ds: Any, per_pattern: int = 8, seed: int = 0) -> pd.DataFrame:
    """A few rows of every missing-detector pattern (validation and test, MC and Data)."""
    frame = _sources(ds)
    cols = ds.columns
    present = np.isfinite(frame[cols].to_numpy(np.float64))
    keys = ["missing: " + ", ".join(c for c, p in zip(cols, row) if not p) if not row.all() else "all present"
            for row in present]
    return _pick(frame, keys, per_pattern, seed)


def mda_sample(ds: Any, per_group: int = 4, seed: int = 0) -> pd.DataFrame:
    """A few events of every branch-input case: tracks, missing hits and charges, rigidity, TOF."""
    frame = _sources(ds)
    layout = ds.manifest["mda"]

    def arr(branch: str, layers: list[int], axis: int) -> np.ndarray:
        x = frame[ds.feature_columns(branch)].to_numpy(np.float64).reshape(len(frame), *ds.feature_shape(branch))
        return np.take(x, [la - 1 for la in layers], axis=axis + 1)

    pos = arr(layout["position"]["branch"], layout["position"]["layers"], 1)  # [N, T, L, S]
    charge = arr(layout["charge"]["branch"], layout["charge"]["layers"], 1)
    n_tracks = np.isfinite(pos).reshape(len(frame), pos.shape[1], -1).any(axis=2).sum(axis=1)
    miss_hits = np.minimum((~np.isfinite(pos[:, 0])).sum(axis=(1, 2)), 2)
    miss_charge = np.minimum((~np.isfinite(charge[:, 0])).sum(axis=(1, 2)), 2)
    rig = np.isfinite(frame[[c for b in layout["rigidity"] for c in ds.feature_columns(b)]].to_numpy(np.float64))
    tof = np.isfinite(frame[[c for b in layout["tof"] for c in ds.feature_columns(b)]].to_numpy(np.float64))
    n_tof = tof.shape[1]
    keys = []
    for i in range(len(frame)):
        t_missing = n_tof - int(tof[i].sum())
        tof_key = "all" if t_missing == 0 else ("none" if t_missing == n_tof else f"{t_missing} missing")
        keys.append(f"tracks={int(n_tracks[i])} missing_hits={int(miss_hits[i])}{'+' if miss_hits[i] == 2 else ''} "
                    f"missing_charges={int(miss_charge[i])}{'+' if miss_charge[i] == 2 else ''} "
                    f"rigidity={''.join('1' if p else '0' for p in rig[i])} tof={tof_key}")
    return _pick(frame, keys, per_group, seed)


def as_recorded(sample: pd.DataFrame, spec: dict[str, Any], sentinels: list[float]) -> pd.DataFrame:
    """Raw values as a detector might record them: missing-rule columns filled with a
    finite value where the rule blanks them, and every other row's NaNs as the sentinel."""
    from autopid.config.dataset import Cut
    from autopid.publish.inputs import rule_columns

    out = sample.copy()
    for rule in spec.get("missing_rules", []):
        cut = Cut.model_validate(rule["when"])
        if cut.branch not in out:
            continue
        hit = cut_mask(out[cut.branch].to_numpy(np.float64), cut)
        for col in rule_columns(spec, rule, spec["features"]):
            if col in out:
                out.loc[hit, col] = 1.0
    if sentinels:
        cols = spec["columns"]
        rows = np.arange(len(out)) % 2 == 0
        block = out.loc[rows, cols].to_numpy(np.float64)
        out.loc[rows, cols] = np.where(np.isnan(block), sentinels[0], block)
    return out


def compare(reference: np.ndarray, candidate: np.ndarray, labels: list[str], check: str, tolerance: float,
            where: str) -> float:
    """Largest |difference|; beyond ``tolerance`` a :class:`ParityError` with the worst row."""
    ref = np.asarray(reference, dtype=np.float64)
    got = np.asarray(candidate, dtype=np.float64)
    if ref.shape != got.shape:
        raise ParityError(f"{where}: ONNX gives {got.shape[0]} outputs for {ref.shape[0]} inputs ({check}); "
                          "export refused, nothing written")
    both_nan = np.isnan(ref) & np.isnan(got)
    diff = np.where(both_nan, 0.0, np.abs(ref - got))
    diff = np.where(np.isnan(diff), np.inf, diff)
    worst = int(np.argmax(diff)) if len(diff) else 0
    largest = float(diff[worst]) if len(diff) else 0.0
    if largest > tolerance:
        raise ParityError(
            f"{where}: ONNX Runtime and PyTorch disagree ({check}): max |diff| = {largest:.3g} > tolerance "
            f"{tolerance:g} at sample row {worst} ({labels[worst]}): PyTorch {ref[worst]:.7f}, ONNX "
            f"{got[worst]:.7f}; export refused, nothing written")
    return largest


def run_parity(model: nn.Module, family: str, ds: Any, predictor: Any, *, tolerance: float = TOLERANCE,
               per_pattern: int = 8, seed: int = 0, where: str = "export") -> ParityReport:
    """Check ``predictor`` (ONNX Runtime) against ``model`` (PyTorch) on the parity sample."""
    sample = fse_sample(ds, per_pattern, seed) if family == "fse" else mda_sample(ds, max(per_pattern // 2, 2), seed)
    labels = sample["_pattern"].tolist()
    ref = core.predict_frame(model.eval(), family, sample, ds)["score"]
    spec = predictor.spec
    raw = sample[spec["columns"]]
    recorded = as_recorded(sample, spec, list(spec.get("sentinels") or []))
    report = ParityReport(rows=len(sample), tolerance=tolerance,
                          patterns={k: int(v) for k, v in sample["_pattern"].value_counts().sort_index().items()})
    # the sample rows passed the selection in preprocessing, and lack the branches it tests
    checks = {
        "one batch": lambda: predictor.predict(raw, apply_selection=False).score,
        "batches of 3": lambda: predictor.predict(raw, batch_size=3, apply_selection=False).score,
        "one row at a time": lambda: predictor.predict(raw, batch_size=1, apply_selection=False).score,
        # the FSE graph itself must undo these; for the MDA the Python side does
        "values as recorded (sentinels, unmasked rule columns)": lambda: (
            predictor.score_matrix(recorded[spec["columns"]].to_numpy(np.float32))
            if family == "fse" else predictor.predict(recorded[spec["columns"]], apply_selection=False).score),
    }
    for name, run in checks.items():
        report.checks[name] = compare(ref, run(), labels, name, tolerance, where)
    report.max_abs_diff = max(report.checks.values())
    return report


def example_inputs(family: str, ds: Any, spec: dict[str, Any], rows: int = 16, seed: int = 0) -> tuple[Any, ...]:
    """Tensors to trace the export with: a few real rows of mixed patterns."""
    import torch

    if family == "fse":
        sample = fse_sample(ds, 2, seed)
        x = np.array(sample[spec["columns"]].to_numpy(np.float32)[:rows], copy=True)
        return (torch.from_numpy(x),)
    from autopid.data import MDADataset, mda_dataloader
    from autopid.publish.files import MDA_INPUTS

    sample = mda_sample(ds, 1, seed).iloc[:rows].reset_index(drop=True)
    batch = next(iter(mda_dataloader(MDADataset(sample, ds), batch_size=rows, shuffle=False)))
    return tuple(getattr(batch, n) for n in MDA_INPUTS)
