"""From a method's test scores to the per-seed measurements of the records.

MC: F1, efficiency and purity at the method's working point, ROC AUC and the background
rejection at 90 % signal efficiency. Data (hidden truth of simulated Data, evaluation
only): the same numbers, the MC-minus-Data efficiency at the working point
(``efficiency_gap``) and the held-out accuracy of a small Data-vs-MC classifier on the
model's frozen features (``domain_accuracy``, 0.5 = indistinguishable). Integrated, per
charge sign (when the dataset maps ``charge_sign``), per bin of p or rigidity, and (AMS)
the rejection of each fragmentation category of the background.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autopid.benchmark.methods import Scored, TestSet
from autopid.benchmark.records import FRAG_BINS, Measurement, bin_label
from autopid.metrics import (
    background_rejection,
    domain_classifier_accuracy,
    efficiency_purity_f1,
    roc_auc,
    threshold_at_efficiency,
)

DEFAULT_BINS: dict[str, list[float]] = {"alice": [0.1, 0.5, 0.8, 1.5, 3.0, 10.0],
                                        "ams": [2.0, 5.0, 10.0, 30.0, 100.0, 2000.0]}


def bins_for(experiment: str, test: TestSet, n: int = 5) -> list[float] | None:
    """The built-in edges for ALICE and AMS; else quantiles of the MC test kinematic."""
    if test.kinematic.get("mc") is None:
        return None
    if experiment in DEFAULT_BINS:
        return DEFAULT_BINS[experiment]
    k = test.kinematic["mc"]
    k = k[np.isfinite(k)]
    if k.size < 10 * n:
        return None
    edges = np.unique([float(f"{v:.3g}") for v in np.quantile(k, np.linspace(0, 1, n + 1))])
    if edges.size < 2:
        return None
    edges[-1] = float(f"{np.max(k) * 1.001:.4g}")  # the largest value falls inside the last bin
    return [float(e) for e in edges]


def _rejection(y: np.ndarray, s: np.ndarray) -> float | None:
    if y.sum() == 0 or (~y.astype(bool)).sum() == 0:
        return None
    r = background_rejection(y, s, 0.9)["rejection"]
    return float(r) if np.isfinite(r) else None


def _auc(y: np.ndarray, s: np.ndarray) -> float | None:
    v = roc_auc(y, s) if len(y) else float("nan")
    return float(v) if np.isfinite(v) else None


def measure(experiment: str, species: str, method: str, seed: int, test: TestSet, scored: Scored,
            bins: Sequence[float] | None, *, domain_accuracy_seed: int = 0) -> list[Measurement]:
    out: list[Measurement] = []

    def add(domain: str, metric: str, value: float | None, charge: int | None = None, bin_: str | None = None
            ) -> None:
        v = None if value is None or not np.isfinite(value) else float(value)
        out.append(Measurement(experiment, species, charge, method, domain, metric, bin_, seed, v))

    domains = [d for d in test.domains() if d in scored.score]
    thr = scored.threshold

    def block(masks: dict[str, np.ndarray], charge: int | None, bin_: str | None) -> None:
        eff: dict[str, float] = {}
        for d in domains:
            m = masks[d]
            y, s = test.y[d][m], scored.score[d][m]
            if len(y) == 0:
                continue
            e = efficiency_purity_f1(y, s, thr)
            has_sig = bool(y.sum() > 0)
            eff[d] = e["efficiency"] if has_sig else float("nan")
            add(d, "f1", e["f1"] if has_sig else None, charge, bin_)
            add(d, "efficiency", e["efficiency"] if has_sig else None, charge, bin_)
            add(d, "purity", e["purity"] if (s >= thr).any() else None, charge, bin_)
            add(d, "auc", _auc(y, s), charge, bin_)
            add(d, "rejection_at_90", _rejection(y, s), charge, bin_)
        if "mc" in eff and "data" in eff:
            add("data", "efficiency_gap", eff["mc"] - eff["data"], charge, bin_)

    block({d: np.ones(len(test.y[d]), bool) for d in domains}, None, None)
    if all(test.charge.get(d) is not None for d in domains):
        for sign in (1, -1):
            block({d: test.charge[d] == sign for d in domains}, sign, None)
    if bins and all(test.kinematic.get(d) is not None for d in domains):
        for lo, hi in zip(bins[:-1], bins[1:]):
            block({d: (test.kinematic[d] >= lo) & (test.kinematic[d] < hi) for d in domains}, None,
                  bin_label(lo, hi))
    for d in domains:
        frag = test.frag.get(d)
        if frag is None:
            continue
        y, s = test.y[d].astype(bool), scored.score[d]
        if not y.any():
            continue
        cut = threshold_at_efficiency(y, s, 0.9)
        for code, label in FRAG_BINS.items():
            bkg = (~y) & (frag == code)
            if not bkg.any():
                continue
            eps = float((s[bkg] >= cut).mean())
            add(d, "rejection_at_90", 1.0 / eps if eps > 0 else None, None, label)
    if "mc" in scored.features and "data" in scored.features:
        add("data", "domain_accuracy", domain_accuracy(test, scored, domain_accuracy_seed))
    return out


def domain_accuracy(test: TestSet, scored: Scored, seed: int) -> float:
    """Data-vs-MC classifier accuracy on the model's frozen test features, on
    class-matched samples: MC rows weighted to the Data signal fraction (hidden truth:
    evaluation only), for AMS to the Data composition by the charge seen in L1 (hidden
    truth), and to the Data spectrum of the kinematic variable (p or rigidity),
    as the MDA's training objective measures it without truth
    (:mod:`autopid.calibration.label_shift`). Without that module: the plain accuracy."""
    f_mc, f_data = scored.features["mc"], scored.features["data"]
    try:
        from autopid.calibration.label_shift import class_matched_domain_accuracy
        from autopid.calibration.reweight import RigidityReweighter
    except ImportError:  # pragma: no cover - older tree
        return domain_classifier_accuracy(f_mc, f_data, seed=seed)
    weights = None
    k_mc, k_data = test.kinematic.get("mc"), test.kinematic.get("data")
    if k_mc is not None and k_data is not None:
        weights = RigidityReweighter.fit(k_mc, k_data).weights(k_mc)
    fm, fd = test.frames["mc"], test.frames["data"]
    if "truth_z_l1" in fm and "hidden_z_l1" in fd:
        # AMS: MC matched to the Data composition by the charge seen in L1 as well (hidden
        # truth: evaluation only), the composition the MDA's training weights estimate
        from autopid.calibration.species_mix import species_weights

        z_data = np.abs(fd["hidden_z_l1"].to_numpy(np.float64))
        comp = {int(z): float(np.mean(z_data == z)) for z in np.unique(z_data[np.isfinite(z_data)])}
        weights = (np.ones(len(fm)) if weights is None else weights) * species_weights(
            np.nan_to_num(fm["truth_z_l1"].to_numpy(np.float64)), comp, weights)
    fraction = float(np.mean(test.y["data"]))
    return class_matched_domain_accuracy(f_mc, f_data, test.y["mc"], fraction, mc_weights=weights, seed=seed)
