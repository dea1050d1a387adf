"""Truth-free Data signal efficiency of a selection from template fits.

The rows before a selection are split into the rows it keeps (``selected``) and the rows
it rejects; one extended maximum-likelihood fit of a PID variable that the selection
does not decide on describes both samples with the same per-species shapes and separate
yields. The estimated efficiency is ``Y_sig(selected) / (Y_sig(selected) + Y_sig(rejected))``
(= signal yield after / signal yield before), its error from the fit covariance.

* AMS (:func:`l1_charge_efficiency`): the L1 charge (role ``l1_charge``; not an MDA
  input). One component per nuclear charge Z seen in L1: a Gaussian core with an
  exponential high-side tail, centre ``a + b (Z - Z_sig)``, width ``w (Z / Z_sig)^p``.
  With MC, the Data peaks sit at a fitted gain times the MC peak positions, and ``p`` and
  the tail come from MC (a fit of the MC L1 charge per true L1 charge: MC truth); without
  MC, ``a`` and ``b`` float and the tail takes defaults. ``w`` floats on the Data. The
  signal is the component at ``Z_sig``, so it counts whatever shows the signal charge in
  L1: nuclei that turned into ``Z_sig`` above L1 (``Z_sig`` nuclei in the whole detector,
  which the selection treats as signal) and background whose L1 charge fluctuates
  together with its inner-tracker charge onto ``Z_sig`` (on simulated AMS Data: Si with a
  track-wide charge excursion, the reason Si passes the P inner-charge window). The latter
  lowers the estimate by (its share of the peak) x (signal minus its efficiency): about
  -0.035, -0.023, -0.012 at 80/50/20% MC efficiency for a selection that rejects that Si,
  with the natural Si:P = 100:3 of the simulated Data.
* ALICE (:func:`tpc_efficiency`): ``ln(dE/dx)`` in momentum bins where the signal's TPC
  expectation is separated from every relevant other species (by ``n_sep`` times the
  resolution measured on the Data itself); one component per species at the ALEPH
  expectation times a scale fitted on the Data, a Gaussian core plus a wider Gaussian
  (shared fraction and width ratio; the cluster-count spread of the resolution).
  Because the model reads the TPC signal, the estimate relies on the separation: a
  selected or rejected signal row still sits nearest its own peak.

No function here reads any truth of the Data. Hidden truth only checks these estimates
in reports (see :mod:`autopid.estimate.data_efficiency`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np

from autopid.estimate._fit import (
    MixtureFit,
    fit_mixture,
    ratio_with_error,
)

SQRT2 = np.sqrt(2.0)
SQRT2PI = np.sqrt(2.0 * np.pi)


@dataclass
class EfficiencyEstimate:
    """A truth-free estimate of the Data signal efficiency of one selection.

    ``region_mask`` (rows of the input the estimate covers) is kept out of
    :meth:`to_dict`; a report uses it to compute the hidden-truth efficiency over the
    same rows.
    """

    estimable: bool
    method: str
    efficiency: float = float("nan")
    error: float = float("nan")
    reason: str | None = None
    region: str = ""
    n_rows: int = 0  # rows in the region
    n_selected: int = 0  # of them, selected
    signal_yield: float = float("nan")  # fitted signal rows in the region, before the selection
    bins: list[dict[str, Any]] = field(default_factory=list)
    fit: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    region_rule: dict[str, Any] = field(default_factory=dict)  # the region as role ranges (applies to MC too)
    region_mask: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("region_mask", None)
        return d


def not_estimable(method: str, reason: str) -> EfficiencyEstimate:
    return EfficiencyEstimate(False, method, reason=reason)


def region_mask_of(values: Mapping[str, np.ndarray], rule: Mapping[str, Any]) -> np.ndarray:
    """Rows whose ``values[rule["role"]]`` falls in one of the rule's ranges (the region of
    an estimate, applied to other rows, e.g. MC)."""
    v = np.asarray(values[rule["role"]], dtype=np.float64)
    if rule.get("absolute"):
        v = np.abs(v)
    out = np.zeros(len(v), dtype=bool)
    for lo, hi in rule.get("ranges", []):
        out |= (v >= lo) & (v <= hi) if not rule.get("absolute") else (v >= lo) & (v < hi)
    return out & np.isfinite(v)


# ---------------------------------------------------------------------------------------------
# shapes


def _norm_cdf(z: np.ndarray) -> np.ndarray:
    from scipy.special import ndtr

    return ndtr(z)


def _gauss_tail_pdf(x: np.ndarray, mu: np.ndarray, s: np.ndarray, f: float, lam: float) -> np.ndarray:
    """(1 - f) N(mu, s) + f EMG(mu, s, tau = lam s): a Gaussian core with a high-side tail."""
    from scipy.special import erfc, erfcx

    z = (x - mu) / s
    core = np.exp(-0.5 * z * z) / (SQRT2PI * s)
    if f <= 0:
        return core
    # exponentially modified Gaussian, K = lam: pdf = 1/(2 K s) exp(1/(2K^2) - z/K) erfc((1/K - z)/sqrt2);
    # for a positive erfc argument exp(.) erfc(b) = exp(-z^2/2) erfcx(b) (no overflow)
    k = lam
    arg = (1.0 / k - z) / SQRT2
    pos = arg >= 0
    a_pos = np.where(pos, arg, 0.0)
    a_neg = np.where(pos, 0.0, arg)
    emg_pos = np.exp(-0.5 * z * z) * erfcx(a_pos)
    emg_neg = np.exp(np.minimum(1.0 / (2 * k * k) - z / k, 700.0)) * erfc(a_neg)
    emg = np.where(pos, emg_pos, emg_neg) / (2.0 * k * s)
    return (1.0 - f) * core + f * emg


def _gauss_tail_cdf(x: np.ndarray, mu: np.ndarray, s: np.ndarray, f: float, lam: float) -> np.ndarray:
    from scipy.special import log_ndtr

    z = (x - mu) / s
    core = _norm_cdf(z)
    if f <= 0:
        return core
    # EMG: Phi(z) - exp(1/(2K^2) - z/K) Phi(z - 1/K), the product taken in logs
    k = lam
    emg = core - np.exp(np.minimum(1.0 / (2 * k * k) - z / k + log_ndtr(z - 1.0 / k), 0.0))
    return (1.0 - f) * core + f * emg


# ---------------------------------------------------------------------------------------------
# AMS: L1 charge

L1_BIN_WIDTH = 0.01  # charge units; the L1 resolution is >= 0.2
DEFAULT_L1_TAIL = {"power": 1.0, "tail_fraction": 0.03, "tail_slope": 2.0}


def _l1_shape(x: np.ndarray, zs: np.ndarray, z_sig: float, a: float, b: float, w: float, power: float,
              f: float, lam: float, lo: float, hi: float, leak_shift: float = 0.0) -> np.ndarray:
    """Density matrix [rows, components] normalised on [lo, hi]; the component one charge
    below the signal sits ``leak_shift`` higher (see :func:`l1_charge_efficiency`)."""
    mu = a + b * (zs - z_sig) + np.where(zs == z_sig - 1, leak_shift, 0.0)
    s = w * (zs / z_sig) ** power
    pdf = _gauss_tail_pdf(x[:, None], mu[None, :], s[None, :], f, lam)
    norm = _gauss_tail_cdf(np.array([hi]), mu, s, f, lam) - _gauss_tail_cdf(np.array([lo]), mu, s, f, lam)
    return pdf / np.maximum(norm, 1e-12)[None, :]


def _histogram(x: np.ndarray, lo: float, hi: float, width: float = L1_BIN_WIDTH) -> tuple[np.ndarray, np.ndarray]:
    """Centres and counts of the non-empty bins of ``x`` on [lo, hi] (a binned fit; the
    bins are much narrower than the charge resolution)."""
    n = max(int(np.ceil((hi - lo) / width)), 1)
    counts, edges = np.histogram(x, bins=n, range=(lo, hi))
    keep = counts > 0
    return (0.5 * (edges[:-1] + edges[1:]))[keep], counts[keep].astype(np.float64)


def fit_l1_mc_shape(l1_charge: np.ndarray, z_l1: np.ndarray, z_signal: int, *, min_rows: int = 30
                    ) -> dict[str, float] | None:
    """Shape parameters of the L1 charge on MC, from the MC truth charge in L1 (allowed:
    MC truth). None when the MC has too few rows."""
    x = np.asarray(l1_charge, dtype=np.float64)
    z = np.asarray(z_l1, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(z) & (np.abs(x - z) < 1.5)
    zs = np.array(sorted(int(v) for v in np.unique(z[ok]) if (z[ok] == v).sum() >= min_rows), dtype=np.float64)
    if z_signal not in zs or len(x[ok]) < 2 * min_rows:
        return None
    lo, hi = zs.min() - 1.5, zs.max() + 1.5
    hists = [_histogram(x[ok & (z == v)], lo, hi) for v in zs]
    centres, blocks_w = [c for c, _ in hists], [w for _, w in hists]

    def density(theta: np.ndarray) -> list[np.ndarray]:
        a, b, w, power, f, lam = theta
        return [_l1_shape(c, np.array([v]), z_signal, a, b, w, power, f, lam, lo, hi) for c, v in zip(centres, zs)]

    theta0 = [float(z_signal), 1.0, 0.3, 1.0, 0.03, 2.0]
    bounds = [(z_signal - 0.5, z_signal + 0.5), (0.8, 1.2), (0.05, 1.0), (0.0, 2.0), (0.0, 0.3), (0.3, 10.0)]
    fit = fit_mixture(density, [float(w.sum()) for w in blocks_w], [1] * len(zs), theta0, bounds,
                      [np.array([w.sum()], dtype=np.float64) for w in blocks_w], weights=blocks_w)
    a, b, w, power, f, lam = (float(v) for v in fit.theta)
    return {"centre": a, "slope": b, "width": w, "power": power, "tail_fraction": f, "tail_slope": lam}


def _l1_components(x: np.ndarray, z_signal: int, span: int, min_fraction: float) -> list[int]:
    out = []
    for z in range(z_signal - span, z_signal + span + 1):
        n = int((np.abs(x - z) < 0.35).sum())
        if z == z_signal or n >= max(5, min_fraction * len(x)):
            out.append(z)
    # no holes: a charge between two present ones is kept too
    return list(range(min(out), max(out) + 1))


def l1_charge_efficiency(l1_charge: np.ndarray, selected: np.ndarray, z_signal: int, *,
                         mc_shape: Mapping[str, float] | None = None, span: int = 3,
                         min_component_fraction: float = 0.005, min_signal_rows: float = 20.0,
                         per_sample: bool = False, gain_bounds: tuple[float, float] | None = None,
                         leak_shift: bool = True) -> EfficiencyEstimate:
    """Estimated efficiency of ``selected`` for nuclei of charge ``z_signal`` from a template
    fit of the L1 charge of the same rows (see the module docstring).

    Args:
        l1_charge: L1 charge of each row (NaN: no L1 hit; left out).
        selected: the selection's decision per row.
        z_signal: charge of the signal species.
        mc_shape: :func:`fit_l1_mc_shape` output (tail and width power), else defaults.
        span: charges ``z_signal +- span`` are candidate components.
        per_sample: the selected and the rejected rows get their own charge scale (centre)
            and width, the charge slope is shared: a selection correlated with the
            kinematics (on which the L1 charge depends a little) then biases nothing.
        gain_bounds: range of the Data gain on MC's peak positions (with ``mc_shape``);
            default 0.92-1.08, for an uncalibrated L1 charge.
        leak_shift: the component one charge below the signal gets a free upward shift
            (0-0.8 charge units): nuclei of charge Z-1 pass the inner-charge window of Z
            only through an upward excursion that L1 shares in part, so their L1 peak sits
            above Z-1 (on simulated AMS Data with Si:P = 100:3 they are a tenth of the
            selected rows; a template at Z-1 leaves them to the signal component).
    """
    method = "template fit of the L1 charge (selected and rejected rows, shared shapes)"
    x_all = np.asarray(l1_charge, dtype=np.float64)
    sel_all = np.asarray(selected, dtype=bool)
    if x_all.shape != sel_all.shape:
        raise ValueError(f"l1_charge and selected differ in length ({len(x_all)} vs {len(sel_all)})")
    finite = np.isfinite(x_all)
    if finite.sum() < 50:
        return not_estimable(method, f"only {int(finite.sum())} rows with an L1 charge (need >= 50)")
    zs_list = _l1_components(x_all[finite], z_signal, span, min_component_fraction)
    zs = np.array(zs_list, dtype=np.float64)
    lo, hi = zs.min() - 0.75, zs.max() + 0.75
    region = finite & (x_all >= lo) & (x_all <= hi)
    x_s, x_r = x_all[region & sel_all], x_all[region & ~sel_all]
    shape = {**DEFAULT_L1_TAIL, **(mc_shape or {})}
    power, f, lam = float(shape["power"]), float(shape["tail_fraction"]), float(shape["tail_slope"])
    w0 = float(shape.get("width", 0.35))
    k_sig = zs_list.index(z_signal)

    (c_s, w_s), (c_r, w_r) = _histogram(x_s, lo, hi), _histogram(x_r, lo, hi)

    gain_only = mc_shape is not None and "centre" in mc_shape and "slope" in mc_shape
    a_mc, b_mc = (float(mc_shape["centre"]), float(mc_shape["slope"])) if gain_only else (0.0, 0.0)  # type: ignore[index]

    def centre_slope(g_or_a: float, b: float) -> tuple[float, float]:
        # with MC: Data = gain x MC (the peak positions of MC, scaled); else a free line
        return (g_or_a * a_mc, g_or_a * b_mc) if gain_only else (g_or_a, b)

    # parameters: a scale per sample (with MC: the gain on MC's peak positions; else the
    # signal peak's centre), the slope (without MC only), a width per sample
    shift = leak_shift and (z_signal - 1) in zs_list
    names = ["scale"] + (["scale_rejected"] if per_sample else []) + ([] if gain_only else ["slope"]) \
        + ["width"] + (["width_rejected"] if per_sample else []) + (["leak_shift"] if shift else [])

    def unpack(theta: np.ndarray) -> dict[str, float]:
        v = dict(zip(names, (float(t) for t in theta)))
        v.setdefault("scale_rejected", v["scale"])
        v.setdefault("width_rejected", v["width"])
        v.setdefault("slope", 1.0)
        v.setdefault("leak_shift", 0.0)
        return v

    def density(theta: np.ndarray) -> list[np.ndarray]:
        v = unpack(theta)
        out = []
        for c, scale, width in ((c_s, v["scale"], v["width"]), (c_r, v["scale_rejected"], v["width_rejected"])):
            a_, b_ = centre_slope(scale, v["slope"])
            out.append(_l1_shape(c, zs, z_signal, a_, b_, width, power, f, lam, lo, hi, v["leak_shift"]))
        return out

    # start the yields from the counts near each charge
    def counts(xb: np.ndarray) -> np.ndarray:
        c = np.array([(np.abs(xb - z) < 0.5).sum() for z in zs], dtype=np.float64) + 0.5
        return c * max(len(xb), 1) / c.sum()

    w0 = min(max(w0 * 1.1, 0.1), 0.9)
    start = {"scale": (1.0, gain_bounds or (0.92, 1.08)) if gain_only else (float(z_signal), (z_signal - 0.45, z_signal + 0.45)),
             "slope": (1.0, (0.85, 1.15)), "width": (w0, (0.08, 1.0))}
    start["scale_rejected"], start["width_rejected"] = start["scale"], start["width"]
    start["leak_shift"] = (0.2, (0.0, 0.8))
    theta0, bounds = [start[n][0] for n in names], [start[n][1] for n in names]
    fit = fit_mixture(density, [len(x_s), len(x_r)], [len(zs), len(zs)], theta0, bounds, [counts(x_s), counts(x_r)],
                      weights=[w_s, w_r])
    eff, err = ratio_with_error(fit, [(0, k_sig)], [(1, k_sig)])
    sig_before = float(fit.yields[0][k_sig] + fit.yields[1][k_sig])
    v = unpack(fit.theta)
    a, b = centre_slope(v["scale"], v["slope"])
    w = v["width"]
    shape_extra: dict[str, Any] = {"gain_vs_mc": v["scale"]} if gain_only else {}
    if shift:
        shape_extra["leak_shift"] = v["leak_shift"]
    if per_sample:  # centre and width of the selected sample; the rejected one's next to them
        shape_extra.update({"centre_rejected": centre_slope(v["scale_rejected"], v["slope"])[0],
                            "width_rejected": v["width_rejected"]})
    out = EfficiencyEstimate(
        True, method, eff, err, region=f"rows with an L1 charge in [{lo:.2f}, {hi:.2f}]",
        n_rows=int(region.sum()), n_selected=int((region & sel_all).sum()), signal_yield=sig_before,
        fit=_fit_summary(fit, {"centre": a, "slope": b, "width": w, **shape_extra, "power": power, "tail_fraction": f,
                               "tail_slope": lam, "tail_from": "mc" if mc_shape else "defaults"},
                         {f"Z={z}": (fit.yields[0][i], fit.yields[1][i]) for i, z in enumerate(zs_list)}),
        region_mask=region, region_rule={"role": "l1_charge", "absolute": False, "ranges": [[float(lo), float(hi)]]},
    )
    if sig_before < min_signal_rows:
        out.estimable, out.reason = False, f"the fit finds only {sig_before:.1f} signal rows (need >= {min_signal_rows:g})"
    elif not np.isfinite(eff):
        out.estimable, out.reason = False, "the fit gives no signal"
    if not fit.converged:
        out.notes.append(f"the fit did not report convergence: {fit.message}")
    return out


def _fit_summary(fit: MixtureFit, shape: dict[str, Any], yields: Mapping[str, tuple[float, float]]) -> dict[str, Any]:
    return {"shape": shape, "yields_selected_rejected": {k: [round(float(a), 2), round(float(b), 2)]
                                                          for k, (a, b) in yields.items()},
            "converged": fit.converged, "nll": fit.nll}


# ---------------------------------------------------------------------------------------------
# ALICE: TPC dE/dx in momentum bins

DEFAULT_P_EDGES: tuple[float, ...] = tuple(np.round(np.arange(0.2, 1.0001, 0.05), 3))


def _masses(species: Mapping[str, Any]) -> dict[str, float]:
    from autopid.physics.alice import SPECIES

    return {name: SPECIES[name][1] for name in species if name in SPECIES}


def _robust_resolution(p: np.ndarray, lnx: np.ndarray) -> float:
    """Relative dE/dx resolution measured on the rows themselves: the robust spread of
    ``ln(dE/dx / E_pi)`` where pions are isolated (0.3 <= p < 0.6 GeV/c), else 0.08."""
    from autopid.physics.alice import SPECIES, expected_tpc_signal

    m = (p >= 0.3) & (p < 0.6)
    if m.sum() < 50:
        return 0.08
    d = lnx[m] - np.log(expected_tpc_signal(p[m], SPECIES["pion"][1]))
    d = d[np.abs(d - np.median(d)) < 0.3]
    if len(d) < 30:
        return 0.08
    return float(1.4826 * np.median(np.abs(d - np.median(d))))


def _plan_bins(signal: str, masses: Mapping[str, float], edges: Sequence[float], r_sep: float, n_sep: float,
               relevant: Mapping[int, set[str]] | None) -> list[dict[str, Any]]:
    """Per bin: used or not (and why), and the components of the fit."""
    from autopid.physics.alice import expected_tpc_signal

    order = list(masses)
    plans = []
    for b, (lo, hi) in enumerate(pairwise(edges)):
        ps = np.array([lo, 0.5 * (lo + hi), hi])
        ln_e = {n: np.log(expected_tpc_signal(ps, m)) for n, m in masses.items()}
        sep = {n: float(np.min(np.abs(ln_e[n] - ln_e[signal])) / r_sep) for n in order if n != signal}
        rel = set(order) if relevant is None else relevant.get(b, set(order))
        close = [n for n, s in sep.items() if s < n_sep and n in rel]
        if close:
            plans.append({"low": lo, "high": hi, "used": False,
                          "why": "not separated from " + ", ".join(f"{n} ({sep[n]:.1f} sigma)" for n in close)})
            continue
        comps = [signal]
        for n in order:  # most abundant first
            if n == signal or sep[n] < n_sep:  # negligible and under the signal peak: merged into it
                continue
            if all(float(np.min(np.abs(ln_e[n] - ln_e[c]))) / r_sep >= 1.0 for c in comps):
                comps.append(n)
        plans.append({"low": lo, "high": hi, "used": True, "components": comps,
                      "separation": {n: round(v, 1) for n, v in sep.items()}})
    return plans


def tpc_efficiency(momentum: np.ndarray, tpc_signal: np.ndarray, selected: np.ndarray, signal: str,
                   species: Sequence[str] | Mapping[str, Any], *, edges: Sequence[float] = DEFAULT_P_EDGES,
                   n_sep: float = 3.0, mc_momentum: np.ndarray | None = None, mc_species: np.ndarray | None = None,
                   min_relative_abundance: float = 0.01, min_signal_rows: float = 20.0,
                   max_rows_per_bin: int | None = 20_000, seed: int = 0,
                   tpc_clusters: np.ndarray | None = None) -> EfficiencyEstimate:
    """Estimated efficiency of ``selected`` for ``signal`` from template fits of the TPC
    dE/dx in the momentum bins where it separates (see the module docstring).

    Args:
        momentum, tpc_signal: per row (GeV/c, TPC signal units); NaN rows are left out.
        species: the dataset's species (names from :data:`autopid.physics.alice.SPECIES`),
            most abundant first when no MC is given.
        mc_momentum, mc_species: MC rows with their true species names (MC truth):
            which species are abundant enough in a bin to matter for the separation
            (>= ``min_relative_abundance`` of the signal there). Without them every species
            matters.
        tpc_clusters: clusters used for dE/dx per row (role ``tpc_clusters``): the width
            of each row scales as ``sqrt(159 / n)``; without it one width for all.
        max_rows_per_bin: a fixed random subset of a bin's rows beyond this (the fit is
            unbinned); ``region_mask`` marks the rows used.
    """
    method = "template fit of the TPC ln(dE/dx) in momentum bins where the signal separates (ALEPH expectation)"
    masses = _masses(species)
    if signal not in masses:
        return not_estimable(method, f"no TPC expectation for species {signal!r} (known: {', '.join(masses)})")
    p_all = np.abs(np.asarray(momentum, dtype=np.float64))
    s_all = np.asarray(tpc_signal, dtype=np.float64)
    sel_all = np.asarray(selected, dtype=bool)
    if not (p_all.shape == s_all.shape == sel_all.shape):
        raise ValueError("momentum, tpc_signal and selected differ in length")
    finite = np.isfinite(p_all) & np.isfinite(s_all) & (s_all > 0)
    lnx_all = np.where(finite, np.log(np.where(finite, s_all, 1.0)), np.nan)
    relevant: dict[int, set[str]] | None = None
    if mc_momentum is not None and mc_species is not None:
        mp = np.abs(np.asarray(mc_momentum, dtype=np.float64))
        ms = np.asarray(mc_species)
        counts = {n: (ms == n).sum() for n in masses}
        masses = dict(sorted(masses.items(), key=lambda kv: -counts[kv[0]]))
        relevant = {}
        for b, (lo, hi) in enumerate(pairwise(edges)):
            inb = (mp >= lo) & (mp < hi)
            n_sig = max(int((inb & (ms == signal)).sum()), 1)
            relevant[b] = {n for n in masses if (inb & (ms == n)).sum() >= min_relative_abundance * n_sig}
    r_sep = _robust_resolution(p_all[finite], lnx_all[finite])
    plans = _plan_bins(signal, masses, edges, r_sep, n_sep, relevant)
    used = [(b, pl) for b, pl in enumerate(plans) if pl["used"]]
    if not used:
        return EfficiencyEstimate(False, method, reason=f"{signal}: no momentum bin in [{edges[0]}, {edges[-1]}) "
                                  f"where the TPC separates it by {n_sep:g} sigma", bins=plans)
    from autopid.physics.alice import TPC_NCL_REF, expected_tpc_signal

    ncl = None if tpc_clusters is None else np.asarray(tpc_clusters, dtype=np.float64)
    width_all = (np.ones(len(p_all)) if ncl is None else
                 np.sqrt(TPC_NCL_REF / np.where(np.isfinite(ncl) & (ncl > 0), ncl, TPC_NCL_REF)))
    if ncl is not None:  # the per-row width factor averages ~1 so that the resolution keeps its meaning
        width_all = width_all / float(np.median(width_all[finite])) if finite.any() else width_all
    blocks_x, blocks_e, blocks_w, n_comp, which = [], [], [], [], []  # block -> (bin index, selected?)
    region = np.zeros(len(p_all), dtype=bool)
    rng = np.random.default_rng(seed)
    for b, pl in used:
        inb = finite & (p_all >= pl["low"]) & (p_all < pl["high"])
        if max_rows_per_bin is not None and inb.sum() > max_rows_per_bin:
            keep = np.sort(rng.choice(np.flatnonzero(inb), max_rows_per_bin, replace=False))
            inb = np.zeros_like(inb)
            inb[keep] = True
        region |= inb
        for sel in (True, False):
            m = inb & (sel_all if sel else ~sel_all)
            blocks_x.append(lnx_all[m])
            blocks_w.append(width_all[m][:, None])
            blocks_e.append(np.stack([np.log(expected_tpc_signal(p_all[m], masses[c])) for c in pl["components"]],
                                     axis=1) if m.any() else np.zeros((0, len(pl["components"]))))
            n_comp.append(len(pl["components"]))
            which.append((b, sel))

    def density(theta: np.ndarray) -> list[np.ndarray]:
        ln_c, r, f, t = theta
        out = []
        for x, e, wf in zip(blocks_x, blocks_e, blocks_w):
            z = x[:, None] - (e + ln_c)
            rr = r * wf
            core = np.exp(-0.5 * (z / rr) ** 2) / (SQRT2PI * rr)
            wide = np.exp(-0.5 * (z / (t * rr)) ** 2) / (SQRT2PI * t * rr)
            out.append((1.0 - f) * core + f * wide)
        return out

    def start(x: np.ndarray, e: np.ndarray) -> np.ndarray:
        if not len(x):
            return np.full(e.shape[1], 0.1)
        nearest = np.argmin(np.abs(x[:, None] - e), axis=1)
        return np.bincount(nearest, minlength=e.shape[1]).astype(np.float64) + 0.5

    theta0 = [0.0, max(min(r_sep, 0.15), 0.03), 0.1, 1.8]
    bounds = [(-0.2, 0.2), (0.02, 0.2), (0.0, 0.5), (1.2, 4.0)]
    fit = fit_mixture(density, [len(x) for x in blocks_x], n_comp, theta0, bounds,
                      [start(x, e) for x, e in zip(blocks_x, blocks_e)])
    num = [(i, 0) for i, (_, sel) in enumerate(which) if sel]  # the signal is component 0
    den = [(i, 0) for i, (_, sel) in enumerate(which) if not sel]
    eff, err = ratio_with_error(fit, num, den)
    bins_out = []
    for b, pl in enumerate(plans):
        row = {k: v for k, v in pl.items()}
        if pl["used"]:
            i_s = which.index((b, True))
            i_r = which.index((b, False))
            e_b, err_b = ratio_with_error(fit, [(i_s, 0)], [(i_r, 0)])
            row.update({"efficiency": e_b, "error": err_b, "signal_yield": float(fit.yields[i_s][0] + fit.yields[i_r][0]),
                        "n": int(len(blocks_x[i_s]) + len(blocks_x[i_r]))})
        bins_out.append(row)
    sig_before = float(sum(fit.yields[i][0] for i, _ in num) + sum(fit.yields[i][0] for i, _ in den))
    ln_c, r, f, t = (float(v) for v in fit.theta)
    lows = ", ".join(f"[{pl['low']:g}, {pl['high']:g})" for _, pl in used)
    out = EfficiencyEstimate(
        True, method, eff, err, region=f"|p| in {lows} GeV/c", n_rows=int(region.sum()),
        n_selected=int((region & sel_all).sum()), signal_yield=sig_before, bins=bins_out,
        fit={"shape": {"scale": float(np.exp(ln_c)), "resolution": r, "wide_fraction": f, "wide_factor": t,
                       "resolution_for_separation": r_sep, "per_row_width": ncl is not None}, "converged": fit.converged, "nll": fit.nll},
        region_mask=region, region_rule={"role": "momentum", "absolute": True,
                                         "ranges": [[float(pl["low"]), float(pl["high"])] for _, pl in used]},
        notes=["the model reads the TPC signal: the estimate relies on the separation of the peaks in these bins"],
    )
    if sig_before < min_signal_rows:
        out.estimable, out.reason = False, f"the fit finds only {sig_before:.1f} signal rows (need >= {min_signal_rows:g})"
    if not fit.converged:
        out.notes.append(f"the fit did not report convergence: {fit.message}")
    return out
