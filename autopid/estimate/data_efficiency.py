"""Truth-free Data efficiency of a selection on a preprocessed dataset, and the MC-Data gap.

The dataset's roles say which branch is which (``PreprocessedDataset.role_frame``):

* AMS: ``l1_charge`` -> :func:`~autopid.estimate.template_fit.l1_charge_efficiency`;
  MC (its L1 charge and MC truth ``truth_z_l1``) fixes the peak positions (up to a gain
  fitted on the Data) and the tail of the charge shape. When the rows also carry
  ``inner_charge`` (and optionally ``utof_charge`` and ``l1_ladder``), each sample's L1
  charge is first calibrated per ladder on itself, without truth
  (:func:`autopid.baselines.calibration.fit_l1_gains`), and the fitted gain is held within
  +-3 %: raw Data gains a few per cent off make a free gain ambiguous by one charge unit
  (15 x 1.03 ~ 16 x 0.968: the P peak read as S), which is what happened before.
* ALICE: ``momentum`` and ``tpc_signal`` -> :func:`~autopid.estimate.template_fit.tpc_efficiency`;
  MC truth says which species are abundant enough to matter for the separation.

An unmapped role, an unknown experiment or a selection that cuts on the template
variable gives a result with ``estimable: False`` and the reason: never a silent skip.

Nothing here reads the hidden truth of Data: the Data frame is reduced to its role
columns before anything else. The MC side uses MC truth (allowed). The gap is
``efficiency_mc`` (MC truth, the same region) minus the estimated Data efficiency.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from autopid._logging import get_logger
from autopid.errors import ConfigError
from autopid.estimate.template_fit import (
    EfficiencyEstimate,
    fit_l1_mc_shape,
    l1_charge_efficiency,
    not_estimable,
    region_mask_of,
    tpc_efficiency,
)

_log = get_logger(__name__)

ROLE_PREFIX = "role:"  # role columns ride along with test frames under this prefix
ESTIMATE_ROLES: dict[str, tuple[str, ...]] = {"ams": ("l1_charge",), "alice": ("momentum", "tpc_signal")}
METHODS = {"ams": "template fit of the L1 charge", "alice": "template fit of the TPC dE/dx"}


def attach_roles(frame: pd.DataFrame, ds: Any, split: str, domain: str) -> pd.DataFrame:
    """``frame`` (all rows of ``ds.frame(split, domain)``, in order) plus the dataset's mapped
    roles as ``role:<name>`` columns; unchanged when the dataset maps no role."""
    roles = getattr(ds, "roles", {}) or {}
    if not roles or not len(frame):
        return frame
    rf = ds.role_frame(split, domain)
    if len(rf) != len(frame):
        raise ConfigError(f"{ds.path}: role frame of {split}/{domain} has {len(rf)} rows, the frame {len(frame)}")
    rf = rf.add_prefix(ROLE_PREFIX)
    rf.index = frame.index
    return pd.concat([frame.drop(columns=[c for c in rf.columns if c in frame]), rf], axis=1)


def role_values(frame: pd.DataFrame, roles: Sequence[str]) -> dict[str, np.ndarray] | str:
    """The role columns of ``frame`` (``role:<name>``, or plain ``<name>``), or why not."""
    out = {}
    for r in roles:
        for col in (ROLE_PREFIX + r, r):
            if col in frame.columns:
                out[r] = frame[col].to_numpy(dtype=np.float64)
                break
        else:
            return r
    return out


CALIBRATED_GAIN_BOUNDS = (0.97, 1.03)  # within 1/(2 Z) of 1 at Z ~ 15: no one-unit ambiguity


def calibrated_l1(frame: pd.DataFrame, z: int) -> tuple[np.ndarray, str] | None:
    """The L1 charge of ``frame``'s rows calibrated per ladder on those rows (no truth), and
    a note; None without an ``inner_charge`` role column to tag the sample with."""
    from autopid.baselines.calibration import apply_l1_gains, fit_l1_gains

    cols = {}
    for r in ("l1_charge", "inner_charge", "utof_charge", "l1_ladder"):
        for col in (ROLE_PREFIX + r, r):
            if col in frame.columns:
                cols[r] = frame[col].to_numpy(dtype=np.float64)
                break
    if "l1_charge" not in cols or "inner_charge" not in cols:
        return None
    rf = pd.DataFrame(cols)
    gains = fit_l1_gains(rf, z=z)
    if not np.isfinite(gains["global_gain"]) or gains["n_tagged"] < 50:
        return None
    return apply_l1_gains(rf, gains), (f"L1 charge calibrated per ladder on the same rows ({gains['n_tagged']} "
                                       f"tagged, global gain {gains['global_gain']:.3f})")


def _signal_charge(ds: Any, species: str) -> int | None:
    codes = ds.species_codes(species)
    return abs(int(codes[0])) if len(codes) == 1 else None


def estimate_efficiency(ds: Any, species: str, data: pd.DataFrame, selected: np.ndarray, *,
                        mc: pd.DataFrame | None = None, reads_template: bool = False,
                        cache: dict[str, Any] | None = None) -> EfficiencyEstimate:
    """Estimated Data efficiency of ``selected`` (one flag per row of ``data``).

    ``data`` needs the estimate's role columns (see :func:`attach_roles`); every other
    column is ignored. ``mc`` (optional, with the same role columns and MC truth
    ``truth_label`` and, for AMS, ``truth_z_l1``) refines the shapes.
    ``reads_template``: the selection cuts on the template variable (e.g. an L1 charge
    window): not estimable by a fit of that variable. ``cache``: shared by calls on the
    same MC rows (the MC shape fit).
    """
    experiment = str(ds.manifest.get("experiment", ""))
    method = METHODS.get(experiment, "none")
    if experiment not in ESTIMATE_ROLES:
        return not_estimable(method, f"no truth-free efficiency estimate for experiment {experiment!r} "
                             f"(known: {', '.join(ESTIMATE_ROLES)})")
    needed = ESTIMATE_ROLES[experiment]
    mapped = getattr(ds, "roles", {}) or {}
    unmapped = [r for r in needed if r not in mapped and not {ROLE_PREFIX + r, r} & set(data.columns)]
    if unmapped:
        return not_estimable(method, f"dataset {ds.manifest.get('dataset')!r} maps no role {unmapped[0]!r} "
                             f"(needed: {', '.join(needed)}; add it under 'roles' in the dataset YAML)")
    values = role_values(data, needed)
    if isinstance(values, str):
        return not_estimable(method, f"the Data rows carry no {values!r} role column (see attach_roles)")
    if reads_template:
        return not_estimable(method, f"the selection cuts on {', '.join(needed)}, the template variable")
    selected = np.asarray(selected, dtype=bool)
    mc_values = role_values(mc, needed) if mc is not None and len(mc) else None
    if isinstance(mc_values, str):
        mc_values = None
    if experiment == "ams":
        z = _signal_charge(ds, species)
        if z is None:
            return not_estimable(method, f"species {species!r} is not one nuclear charge")
        cal = calibrated_l1(data, z)
        shape = None
        if mc_values is not None and "truth_z_l1" in mc.columns:  # type: ignore[union-attr]
            cache = {} if cache is None else cache
            key = "l1_shape_calibrated" if cal is not None else "l1_shape"
            if key not in cache:  # depends on the MC rows only
                mc_cal = calibrated_l1(mc, z) if cal is not None else None  # type: ignore[arg-type]
                mc_l1 = mc_cal[0] if mc_cal is not None else mc_values["l1_charge"]
                cache[key] = fit_l1_mc_shape(mc_l1, mc["truth_z_l1"].to_numpy(), z)  # type: ignore[index]
            shape = cache[key]
        l1 = cal[0] if cal is not None else values["l1_charge"]
        est = l1_charge_efficiency(l1, selected, z, mc_shape=shape,
                                   gain_bounds=CALIBRATED_GAIN_BOUNDS if cal is not None else None)
        if cal is not None:
            est.notes.append(cal[1])
        if shape is None:
            est.notes.append("no MC L1 charge with MC truth: free peak positions, default tail shape")
        return est
    mc_p = mc_sp = None
    if mc_values is not None and "truth_label" in mc.columns:  # type: ignore[union-attr]
        mc_p = mc_values["momentum"]
        mc_sp = ds.label_species(mc["truth_label"].to_numpy())  # type: ignore[index]
    ncl = role_values(data, ("tpc_clusters",))  # optional: per-row resolution
    return tpc_efficiency(values["momentum"], values["tpc_signal"], selected, species, list(ds.species),
                          mc_momentum=mc_p, mc_species=mc_sp,
                          tpc_clusters=None if isinstance(ncl, str) else ncl["tpc_clusters"])


def efficiency_gap_estimate(ds: Any, species: str, data: pd.DataFrame, score_data: np.ndarray, threshold: float,
                            *, mc: pd.DataFrame | None = None, score_mc: np.ndarray | None = None,
                            reads_template: bool = False, closure: bool = True) -> tuple[dict[str, Any],
                                                                                     EfficiencyEstimate]:
    """The truth-free MC-Data efficiency gap at ``score >= threshold`` (the promotion
    gate's guard reads ``gap``), and the estimate (its ``region_mask`` for reports).

    ``mc`` needs ``y`` (MC truth) for the MC efficiency over the estimate's region;
    ``closure``: also run the estimator on MC and quote it next to the MC truth (the
    estimator's bias, truth-free on the Data side).
    """
    data = truth_free(data)  # the Data side sees its role columns only
    sel_data = np.asarray(score_data) >= threshold
    sel_mc = np.asarray(score_mc) >= threshold if score_mc is not None else None
    cache: dict[str, Any] = {}
    est = estimate_efficiency(ds, species, data, sel_data, mc=mc, reads_template=reads_template,
                              cache=cache)
    out: dict[str, Any] = {
        "estimable": bool(est.estimable), "reason": est.reason, "method": est.method, "region": est.region,
        "efficiency_data": est.efficiency if est.estimable else None,
        "efficiency_data_error": est.error if est.estimable else None,
        "efficiency_mc": None, "gap": None, "gap_error": None, "threshold": float(threshold),
        "estimate": est.to_dict(),
    }
    if not est.estimable:
        _log.warning("Data efficiency of %s not estimable: %s", species, est.reason)
        return out, est
    if mc is None or score_mc is None or "y" not in mc:
        out["estimable"], out["reason"] = False, "no MC rows with truth to compare with"
        return out, est
    needed = ESTIMATE_ROLES[str(ds.manifest.get("experiment"))]
    mc_values = role_values(mc, needed)
    if isinstance(mc_values, str):
        out["estimable"], out["reason"] = False, f"the MC rows carry no {mc_values!r} role column"
        return out, est
    region_mc = region_mask_of(mc_values, est.region_rule)
    y = mc["y"].to_numpy().astype(bool) & region_mc
    if y.sum() == 0:
        out["estimable"], out["reason"] = False, f"no MC signal in the estimate's region ({est.region})"
        return out, est
    eff_mc = float(sel_mc[y].mean())  # type: ignore[index]
    err_mc = float(np.sqrt(eff_mc * (1 - eff_mc) / y.sum()))
    out.update({"efficiency_mc": eff_mc, "efficiency_mc_error": err_mc, "gap": eff_mc - est.efficiency,
                "gap_error": float(np.hypot(err_mc, est.error)), "mc_signal_rows": int(y.sum())})
    if closure:
        c = estimate_efficiency(ds, species, mc, sel_mc, mc=mc,  # type: ignore[arg-type]
                                reads_template=reads_template, cache=cache)
        out["mc_closure"] = {"estimated": c.efficiency if c.estimable else None,
                             "error": c.error if c.estimable else None, "truth": eff_mc,
                             "note": "the same estimator on MC, against MC truth (its bias)"}
    return out, est


def hidden_truth_check(est: EfficiencyEstimate, y_hidden: np.ndarray, selected: np.ndarray) -> dict[str, Any]:
    """Reports only: the hidden-truth Data efficiency over the estimate's rows, next to the
    estimate. Never an input of a decision."""
    y = np.asarray(y_hidden).astype(bool)
    sel = np.asarray(selected, dtype=bool)
    m = y if est.region_mask is None else y & est.region_mask
    truth = float(sel[m].mean()) if m.any() else None
    out: dict[str, Any] = {"efficiency_in_estimate_region": truth, "signal_rows_in_region": int(m.sum())}
    if truth is not None and est.estimable:
        out["estimate_minus_truth"] = est.efficiency - truth
        out["pull"] = (est.efficiency - truth) / est.error if est.error > 0 else None
    return out


def estimate_data_efficiency(ds: Any, score: np.ndarray, threshold: float, *, species: str,
                             data: pd.DataFrame | None = None, split: str = "test",
                             mc: pd.DataFrame | None = None, reads_template: bool = False) -> dict[str, Any]:
    """API entry (see the plan): the estimate of ``score >= threshold`` on Data as a dict
    with ``efficiency``, ``error``, ``method`` (and ``estimable``, ``reason``).

    ``data`` defaults to the role frame of ``split`` (``score`` then has one value per
    row of ``ds.frame(split, "data")``)."""
    if data is None:
        try:
            data = ds.role_frame(split, "data", [r for r in ESTIMATE_ROLES.get(str(ds.manifest.get("experiment")), ())])
        except ConfigError as exc:
            return not_estimable(METHODS.get(str(ds.manifest.get("experiment")), "none"), str(exc)).to_dict()
    return estimate_efficiency(ds, species, data, np.asarray(score) >= threshold, mc=mc,
                               reads_template=reads_template).to_dict()


def truth_free(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` without the label and any truth column (what a Data estimate may see)."""
    drop = [c for c in frame.columns if c in ("y", "true_species") or str(c).startswith(("hidden_", "truth_"))]
    return frame.drop(columns=drop)


__all__ = [
    "ROLE_PREFIX", "attach_roles", "efficiency_gap_estimate", "estimate_data_efficiency", "estimate_efficiency",
    "hidden_truth_check", "report_estimate", "role_values", "truth_free",
]


def report_estimate(ds: Any, species: str, mc: pd.DataFrame, data: pd.DataFrame, score_mc: np.ndarray,
                    score_data: np.ndarray, threshold: float, *, reads_template: bool = False) -> dict[str, Any]:
    """For reports: the truth-free estimate and gap of one selection, and next to them
    the hidden-truth Data efficiency over the same rows (``data["y"]``, evaluation only).
    Never raises: a failure is reported as not estimable."""
    try:
        gap, est = efficiency_gap_estimate(ds, species, data, score_data, threshold, mc=mc, score_mc=score_mc,
                                           reads_template=reads_template, closure=False)
    except Exception as exc:  # noqa: BLE001 - a report must not die on an estimate
        _log.warning("Data efficiency estimate failed: %s", exc)
        return {"estimable": False, "reason": f"the estimate failed: {exc}"}
    out = {k: gap.get(k) for k in ("estimable", "reason", "method", "region", "efficiency_data",
                                   "efficiency_data_error", "efficiency_mc", "gap", "gap_error")}
    if "y" in data:
        out["hidden_truth"] = hidden_truth_check(est, data["y"].to_numpy(), np.asarray(score_data) >= threshold)
    return out
