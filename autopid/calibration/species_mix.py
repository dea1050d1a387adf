"""The Data composition by nuclear charge, without truth, and MC weighted to it.

A binary class mix (signal vs background) is not enough to compare MC with Data on AMS:
the simulated Data has Si:P:S:Cl ~ 100:3:16:3 against a balanced MC, so the background
*inside* the phosphorus selection is a quarter silicon on Data and a few per cent on MC. A
Data-vs-MC classifier then tells the domains apart by their silicon, and a domain head
trained on it pushes Data silicon onto MC phosphorus: the adaptation erases the physics it
should keep (seen: Data AUC 0.62 for the README main job's model).

The experiment measures its composition from the charge spectrum. Here: the template fit
of the (per-ladder calibrated) L1 charge of the Data train split
(:func:`autopid.estimate.data_efficiency.estimate_efficiency`, every row counted) gives the
Data yield per charge Z seen in L1; MC rows are weighted by ``p_Data(Z) / p_MC(Z)`` on
their MC-truth species, with ``p_MC`` taken over the very rows being weighted (with their
rigidity weights), so that the weighted MC has the Data composition. Nothing reads the
hidden Data truth. Nuclei that fragmented above L1 show the fragment's charge in L1 and
are counted with it (a few per cent of the heavier species).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from autopid._logging import get_logger

_log = get_logger(__name__)

_CACHE: dict[tuple[str, str], dict[int, float] | None] = {}
MAX_FIT_ROWS = 40_000


def data_composition(ds: Any, species: str, *, seed: int = 0) -> dict[int, float] | None:
    """``{Z: fraction}`` of the Data train split by the charge seen in L1 (truth-free), or
    None when the dataset cannot say (not AMS, no ``l1_charge`` role, a failed fit)."""
    key = (str(ds.path), species)
    if key in _CACHE:
        return _CACHE[key]
    _CACHE[key] = out = _fit(ds, species, seed)
    return out


def _fit(ds: Any, species: str, seed: int) -> dict[int, float] | None:
    from autopid.estimate.data_efficiency import attach_roles, estimate_efficiency

    if str(ds.manifest.get("experiment")) != "ams" or "l1_charge" not in (getattr(ds, "roles", {}) or {}):
        return None
    rng = np.random.default_rng(seed)

    def rows(domain: str) -> pd.DataFrame:
        frame = attach_roles(ds.frame("train", domain), ds, "train", domain)
        if domain == "mc":
            truth = ds.evaluation_truth("train", "mc")  # MC truth: allowed
            if "truth_z_l1" in truth:
                frame = frame.assign(truth_z_l1=truth["truth_z_l1"].to_numpy())
        if len(frame) > MAX_FIT_ROWS:
            frame = frame.iloc[np.sort(rng.choice(len(frame), MAX_FIT_ROWS, replace=False))]
        return frame.reset_index(drop=True)

    data, mc = rows("data"), rows("mc")
    if len(data) < 200:
        return None
    # every row counts: two random halves as "selected" and "rejected", yields summed
    halves = rng.random(len(data)) < 0.5
    est = estimate_efficiency(ds, species, data[[c for c in data.columns if c.startswith("role:")]], halves, mc=mc)
    if not est.estimable or not est.fit:
        _log.warning("Data composition of %s not estimated: %s", ds.path, est.reason)
        return None
    yields = {int(k.split("=")[1]): float(sum(v)) for k, v in est.fit["yields_selected_rejected"].items()}
    total = sum(yields.values())
    if total <= 0:
        return None
    comp = {z: y / total for z, y in yields.items()}
    _log.info("Data composition by L1 charge (template fit, no truth): %s",
              ", ".join(f"Z={z} {f:.3f}" for z, f in sorted(comp.items())))
    return comp


def species_weights(truth_label: np.ndarray, composition: dict[int, float],
                    base_weights: np.ndarray | None = None) -> np.ndarray:
    """Per-MC-row factors ``p_Data(Z) / p_MC(Z)`` (``composition`` taken as proportions;
    ``p_MC`` over these rows, weighted by ``base_weights``), clipped to [0.02, 50] and
    normalised so that the weighted mean stays that of ``base_weights``.
    Rows of a charge the composition does not cover keep factor 1."""
    total_p = sum(composition.values())
    composition = {k: v / total_p for k, v in composition.items()} if total_p > 0 else composition
    z = np.abs(np.asarray(truth_label, dtype=np.float64)).astype(np.int64)
    w = np.ones(len(z)) if base_weights is None else np.asarray(base_weights, dtype=np.float64)
    total = max(float(w.sum()), 1e-12)
    factors = np.ones(len(z))
    covered = np.isin(z, list(composition))
    covered_share = float(w[covered].sum()) / total  # the MC share the composition speaks for
    for charge, p_data in composition.items():
        rows = z == charge
        p_mc = float(w[rows].sum()) / total
        if p_mc > 0:
            factors[rows] = np.clip(p_data * covered_share / p_mc, 0.02, 50.0)
    norm = float((w * factors).sum()) / total
    return factors / max(norm, 1e-12)
