"""Truth-free tracker charge gain calibration of the MDA charge inputs.

Data and MC differ in the tracker charge gains (per ladder, per layer, per side): a
Data-vs-MC classifier reads that off the layer charges alone. Before any domain
adaptation, each domain's layer charges are calibrated with a gain map fitted on that
domain's own TRAIN split, without truth:

* a cell is (layer, side, bin of the main track's x position at that layer); the bins
  are equal-width between the 0.1 % and 99.9 % quantiles of the layer's x positions,
  as many as the layer has hits for (``min_count`` hits a cell on average, at most
  ``max_bins``), so no detector geometry is assumed;
* the gain of a cell is the median of ``layer charge / inner truncated-mean charge``
  of the event (the mean of the layer's sides, averaged over the calibrated layers
  without the lowest and the highest when 4 or more are there), iterated: the
  truncated mean is recomputed from the charges calibrated with the previous map,
  so the map converges to each cell's gain relative to the event's calibrated charge;
* the within-event ratios cannot see a gain common to all layers at one x (nuclei
  cross nearly the same x in every layer), so once the ratios converged the calibrated
  truncated mean is made flat in the event's mean x (the charge of the selected nuclei
  does not depend on where they cross), and the ratios are iterated again;
* absolute scale: the map is scaled so that the peak of the domain's calibrated inner
  charge lies at the nearest integer (charges are integers; the peak is the selected
  species'), which puts MC and Data on the same scale without reading any truth. The
  peak is the highest interior maximum of the distribution: a preselection window on the
  raw inner charge piles the tail of a neighbouring species (Si under a P selection) up
  against its edge, which is not a peak;
* each (layer, side)'s level is then set at the peak of its ratios, not their median: a
  layer crossed by another charge than the rest of the track (a nucleus that broke up
  between L1 and L2) measures no gain, and where a domain has many such events the median
  is pulled;
* a hit without an x position (the n side missing) takes its (layer, side) gain.

Applying the map divides the charge of every track (main and second) at a calibrated
layer by the gain of the cell its own x position falls in.

The TOF charges of the MDA vector (the layout's TOF branches named ``*charge*``) get
one scale factor per domain, fitted the same way (the peak of all of them together at
the nearest integer): one factor, not one per column, so that relations between them
(the upper-TOF charge is the mean of planes 1 and 2) hold in both domains alike. The same NumPy function is
used by training (:class:`autopid.data.MDADataset`), evaluation and inference
(:mod:`autopid.publish.mda_inputs`), so the calibrated inputs are identical bit for bit.

The calibration also carries the noise overlay (:mod:`autopid.calibration.noise`):
Data's excess of noise clusters per layer and side, estimated on both train splits
without truth and added to MC rows' cluster counts when they are calibrated, so every
consumer of the calibrated inputs sees MC with Data's noise; the hit removal
(:mod:`autopid.calibration.hits`): MC main-track hits dropped down to Data's hit
efficiency per layer and side (charge and position missing, one cluster fewer); and the
resolution smearing (:mod:`autopid.calibration.resolution`): MC main-track charges
smeared to Data's charge resolution per layer and side.

The map is stored with the model as JSON (``to_dict`` / ``from_dict``: lists of
floats, never pickled): in ``model.pt`` as a JSON string and in an export's
``preprocessing.json`` under ``mda.calibration``.

NumPy only at import (inference must not load PyTorch or pandas for this).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autopid.calibration.hits import HitRemoval, fit_hit_removal
from autopid.calibration.noise import NoiseOverlay, SeedKeys, fit_noise_overlay
from autopid.calibration.resolution import ResolutionSmearing

FORMAT = 1
FORMAT_WITH_OVERLAY = 2  # what older readers, which know no overlay, refuse instead of dropping it
FORMAT_WITH_REMOVAL = 3  # likewise for a hit removal or a resolution smearing
FORMATS = (FORMAT, FORMAT_WITH_OVERLAY, FORMAT_WITH_REMOVAL)
DOMAINS = ("mc", "data")
X_SIDE = 0  # side 0 of the MDA position branch is x (the n side), side 1 is y (bending)


@dataclass
class GainMap:
    """Relative gains of one domain: per calibrated layer the x-bin edges, the gain of
    each (side, bin) cell and a per-side fallback for hits without an x position."""

    layers: list[int]  # 1-based layer numbers
    edges: list[np.ndarray]  # per layer: bin edges in x (cm), len = bins + 1
    gain: list[np.ndarray]  # per layer: [sides, bins]
    fallback: np.ndarray  # [layers, sides]
    info: dict[str, Any] = field(default_factory=dict)

    def cell_gain(self, k: int, x: np.ndarray, side: int) -> np.ndarray:
        """Gain at x positions ``x`` on ``side`` of the k-th calibrated layer (NaN x -> fallback)."""
        edges, gain = self.edges[k], self.gain[k][side]
        idx = np.clip(np.searchsorted(edges, np.nan_to_num(x, nan=edges[0]), side="right") - 1, 0, len(gain) - 1)
        return np.where(np.isfinite(x), gain[idx], self.fallback[k, side])

    def to_dict(self) -> dict[str, Any]:
        return {"layers": [int(v) for v in self.layers],
                "edges": [[float(v) for v in e] for e in self.edges],
                "gain": [[[float(v) for v in side] for side in g] for g in self.gain],
                "fallback": [[float(v) for v in row] for row in self.fallback],
                "info": dict(self.info)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GainMap:
        return cls(layers=[int(v) for v in d["layers"]],
                   edges=[np.asarray(e, dtype=np.float64) for e in d["edges"]],
                   gain=[np.asarray(g, dtype=np.float64) for g in d["gain"]],
                   fallback=np.asarray(d["fallback"], dtype=np.float64).reshape(len(d["layers"]), -1),
                   info=dict(d.get("info", {})))

    def apply(self, charge: np.ndarray, pos: np.ndarray, rows: np.ndarray | slice = slice(None)) -> None:
        """Divide ``charge[rows]`` ``[N, T, L, S]`` (all layers of the branch, 1-based
        layer l at index l - 1) by the gains, in place, each track by its own x."""
        for k, layer in enumerate(self.layers):
            li = layer - 1
            if li >= charge.shape[2]:
                continue
            for t in range(charge.shape[1]):
                x = pos[rows, t, li, X_SIDE]
                for s in range(charge.shape[3]):
                    charge[rows, t, li, s] = charge[rows, t, li, s] / self.cell_gain(k, x, s)


def truncated_mean(values: np.ndarray) -> np.ndarray:
    """Mean over the last axis of the finite values, without the lowest and the highest
    when at least 4 are there; NaN when none."""
    finite = np.isfinite(values)
    count = finite.sum(axis=-1)
    total = np.where(finite, values, 0.0).sum(axis=-1)
    high = np.where(finite, values, -np.inf).max(axis=-1, initial=-np.inf)
    low = np.where(finite, values, np.inf).min(axis=-1, initial=np.inf)
    trim = count >= 4
    total = total - np.where(trim, high, 0.0) - np.where(trim, low, 0.0)
    kept = np.where(trim, count - 2, count)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(kept, 1), np.nan)


def _mode(values: np.ndarray, edge: float = 0.1) -> float:
    """The most probable value of a peaked sample: the highest local maximum of its
    smoothed histogram (0.2 % bins) that is not within ``edge`` of the sample's range from
    either end, where a selection cut on the same charge piles up a neighbouring species
    (the highest maximum anywhere when there is no interior one)."""
    v = values[np.isfinite(values)]
    if v.size < 10:
        return float("nan")
    med = float(np.median(v))
    lo, hi = np.quantile(v, [0.005, 0.995])
    if hi <= lo:
        return med
    width = max(abs(med) * 0.002, 1e-9)
    n = int(min(max((hi - lo) / width, 64), 10_000))
    hist, edges = np.histogram(v, bins=n, range=(lo, hi))
    kernel = np.exp(-0.5 * (np.arange(-15, 16) / 5.0) ** 2)
    smooth = np.convolve(hist, kernel / kernel.sum(), mode="same")
    centres = 0.5 * (edges[:-1] + edges[1:])
    k = 10  # a maximum: highest within +-k bins
    padded = np.concatenate([np.full(k, -np.inf), smooth, np.full(k, -np.inf)])
    window = np.lib.stride_tricks.sliding_window_view(padded, 2 * k + 1)
    is_max = (smooth >= window.max(axis=1)) & (smooth > 0)
    interior = is_max & (centres > lo + edge * (hi - lo)) & (centres < hi - edge * (hi - lo))
    pick = interior if interior.any() else is_max
    i = int(np.flatnonzero(pick)[np.argmax(smooth[pick])])
    return float(centres[i])


def _peak_centre(values: np.ndarray) -> float:
    """Centre of the main peak of a sample that one-sided contamination may skew: the
    median of the values within one width of the peak (:func:`_mode`), the width taken
    from the peak's lower side, twice. As precise as a median, as robust as the mode."""
    v = values[np.isfinite(values)]
    centre = _mode(v)
    for _ in range(2):
        if not np.isfinite(centre):
            return centre
        below = centre - v[v < centre]
        if below.size < 10:
            return centre
        width = 1.4826 * float(np.median(below))  # the lower half's median distance: one sigma
        near = v[np.abs(v - centre) < width]
        if near.size < 10:
            return centre
        centre = float(np.median(near))
    return centre


def _grouped_median(key: np.ndarray, values: np.ndarray, n_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """Median of ``values`` per integer ``key`` in [0, n_keys) and the counts (NaN where empty)."""
    order = np.lexsort((values, key))
    k, v = key[order], values[order]
    counts = np.bincount(k, minlength=n_keys)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    med = np.full(n_keys, np.nan)
    has = counts > 0
    lo = start[has] + (counts[has] - 1) // 2
    hi = start[has] + counts[has] // 2
    med[has] = 0.5 * (v[lo] + v[hi])
    return med, counts


def fit_gain_map(charge: np.ndarray, pos: np.ndarray, layers: Sequence[int], *, min_count: int = 300,
                 max_bins: int = 64, min_cell: int = 30, iterations: int = 6, absolute: bool = True,
                 anchor: bool = True) -> GainMap:
    """Fit a :class:`GainMap` on raw ``charge`` and ``pos`` ``[N, T, L, S]`` (NaN where
    missing) of one domain: the main track (T index 0) at ``layers`` (1-based).

    ``min_count``: hits a bin should hold on average (sets the number of bins, at most
    ``max_bins``); a cell with fewer than ``min_cell`` hits takes its (layer, side) gain.
    ``absolute``: scale the map so that the peak of the calibrated inner charge is the
    nearest integer (else: occupancy-weighted mean gain 1). ``anchor``: each (layer,
    side)'s level is set by the peak of its ratios, not their median (see below).
    """
    layers = [int(v) for v in layers]
    li = np.asarray(layers) - 1
    q = np.asarray(charge, dtype=np.float64)[:, 0][:, li, :]  # [N, Lc, S]
    x = np.asarray(pos, dtype=np.float64)[:, 0][:, li, X_SIDE]  # [N, Lc]
    q = np.where(q > 0, q, np.nan)  # a charge must be positive to calibrate a gain
    n_layers, sides = q.shape[1], q.shape[2]
    edges: list[np.ndarray] = []
    cell = np.full(x.shape, -1, dtype=np.int64)  # bin per (event, layer), -1: no x
    for k in range(n_layers):
        xs = x[:, k][np.isfinite(x[:, k])]
        if xs.size == 0:
            edges.append(np.array([-np.inf, np.inf]))
            continue
        lo, hi = np.quantile(xs, [0.001, 0.999])
        bins = int(np.clip(xs.size // max(min_count, 1), 1, max_bins))
        e = np.linspace(lo, hi, bins + 1) if hi > lo else np.array([lo - 0.5, lo + 0.5])
        edges.append(e)
        ok = np.isfinite(x[:, k])
        cell[ok, k] = np.clip(np.searchsorted(e, x[ok, k], side="right") - 1, 0, len(e) - 2)
    n_bins = max(len(e) - 1 for e in edges)
    gain = np.ones((n_layers, sides, n_bins))
    fallback = np.ones((n_layers, sides))
    # flat cell keys of every (event, layer, side) with a charge
    ev, kk, ss = np.nonzero(np.isfinite(q))
    b = cell[ev, kk]
    qv = q[ev, kk, ss]
    n_keys = n_layers * sides * n_bins
    cell_key = (kk * sides + ss) * n_bins + np.maximum(b, 0)

    def hit_gain(g: np.ndarray, fb: np.ndarray) -> np.ndarray:
        return np.where(b >= 0, g.reshape(-1)[cell_key], fb[kk, ss])

    def calibrated_tm(g: np.ndarray, fb: np.ndarray) -> np.ndarray:
        qc = np.full(q.shape, np.nan)
        qc[ev, kk, ss] = qv / hit_gain(g, fb)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # layers without a charge: NaN
            return truncated_mean(np.nanmean(qc, axis=2))  # [N]

    def relative_step(g: np.ndarray, fb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gains relative to the event's calibrated truncated mean (blind to a factor
        common to all layers at one x: fixed by :func:`column_step`)."""
        ratio = qv / calibrated_tm(g, fb)[ev]
        good = np.isfinite(ratio)
        med_ls, _ = _grouped_median((kk * sides + ss)[good], ratio[good], n_layers * sides)
        new_fb = np.where(np.isfinite(med_ls), med_ls, 1.0).reshape(n_layers, sides)
        use = good & (b >= 0)
        med, counts = _grouped_median(cell_key[use], ratio[use], n_keys)
        new_g = np.where(counts.reshape(g.shape) >= min_cell, med.reshape(g.shape), new_fb[:, :, None])
        if anchor:
            # a layer that saw another charge than the event's mean (a nucleus that broke up
            # between L1 and L2, or deeper) measures no gain: its ratio sits about one charge
            # unit off, on one side. Where a domain has many such events (Data under a
            # phosphorus selection: 30 % sulfur broken up to phosphorus between L1 and L2),
            # the median is pulled (by 1.3 % in L1); the peak of the ratios is not. The
            # medians keep the shape in x, the peak sets each (layer, side)'s level.
            rel = ratio / hit_gain(new_g, new_fb)
            ls = kk * sides + ss
            for j in range(n_layers * sides):
                m = _peak_centre(rel[good & (ls == j)])
                if np.isfinite(m) and m > 0:
                    new_g[j // sides, j % sides] *= m
                    new_fb[j // sides, j % sides] *= m
        return new_g, new_fb

    # events cross nearly the same x in every layer, so the within-event ratios cannot see
    # a gain common to the layers at one x; the physics can: the charge of the selected
    # nuclei does not depend on where they cross, so the calibrated truncated mean is made
    # flat in the event's mean x
    x_ev = np.full(len(q), np.nan)
    has_x = np.isfinite(x).any(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        x_ev[has_x] = np.nanmean(x[has_x], axis=1)
    col_bins = 1
    col_edges = np.array([-np.inf, np.inf])
    if has_x.any():
        lo, hi = np.quantile(x_ev[has_x], [0.001, 0.999])
        col_bins = int(np.clip(has_x.sum() // max(min_count, 1), 1, max_bins))
        if hi > lo:
            col_edges = np.linspace(lo, hi, col_bins + 1)
    col = np.where(has_x, np.clip(np.searchsorted(col_edges, np.nan_to_num(x_ev), side="right") - 1, 0,
                                  len(col_edges) - 2), -1)

    def column_step(g: np.ndarray, fb: np.ndarray) -> np.ndarray:
        tm = calibrated_tm(g, fb)
        ok = np.isfinite(tm) & (col >= 0)
        if not ok.any():
            return g
        med, counts = _grouped_median(col[ok], tm[ok], len(col_edges) - 1)
        c_col = np.where(counts >= min_cell, med / np.median(tm[ok]), 1.0)
        c_hit = np.where(col[ev] >= 0, c_col[np.maximum(col[ev], 0)], 1.0)
        use = b >= 0
        c_cell, counts = _grouped_median(cell_key[use], c_hit[use], n_keys)
        return g * np.where(counts.reshape(g.shape) > 0, c_cell.reshape(g.shape), 1.0)

    for it in range(iterations):
        gain, fallback = relative_step(gain, fallback)
        if it == iterations // 2:
            gain = column_step(gain, fallback)
        # normalise: occupancy-weighted mean gain 1 (the absolute scale is not measured)
        scale = float(np.mean(hit_gain(gain, fallback)))
        gain, fallback = gain / scale, fallback / scale
    # the peak is looked for in the raw truncated mean, where a selection window on it has
    # sharp edges (see _mode), and carried to the calibrated scale by the median ratio
    tm_raw, tm_cal = calibrated_tm(np.ones_like(gain), np.ones_like(fallback)), calibrated_tm(gain, fallback)
    both = np.isfinite(tm_raw) & np.isfinite(tm_cal) & (tm_raw > 0)
    ratio = float(np.median(tm_cal[both] / tm_raw[both])) if both.any() else 1.0
    peak = _mode(tm_raw) * ratio
    info_scale: dict[str, Any] = {"peak_before_scale": peak}
    if absolute and np.isfinite(peak) and round(peak) >= 1:
        # charges are integers: the peak of the calibrated inner charge goes to the nearest one
        factor = peak / round(peak)
        gain, fallback = gain * factor, fallback * factor
        info_scale["peak_charge"] = float(round(peak))
    per_layer = [gain[k][:, : len(edges[k]) - 1] for k in range(n_layers)]
    info = {"method": "median of layer charge / inner truncated mean per (layer, side, x bin), "
                      "(layer, side) level at the peak of the ratios, iterated",
            "events": int(q.shape[0]), "hits": len(qv), "min_count": int(min_count),
            "max_bins": int(max_bins), "min_cell": int(min_cell), "iterations": int(iterations),
            "bins": [int(len(e) - 1) for e in edges], "column_bins": int(len(col_edges) - 1), **info_scale}
    return GainMap(layers, edges, per_layer, fallback, info)


@dataclass
class ChargeCalibration:
    """Gain maps of both domains for the MDA tracker charge branch, and per-domain scale
    factors of other charge columns (the TOF charges: see the module docstring)."""

    charge_branch: str
    position_branch: str
    maps: dict[str, GainMap]
    default_domain: str = "data"
    scales: dict[str, dict[str, float]] = field(default_factory=dict)  # domain -> column -> factor
    overlay: NoiseOverlay | None = None  # Data noise added to MC count columns (noise.py)
    removal: HitRemoval | None = None  # MC hits dropped to Data's hit efficiency (hits.py)
    smearing: ResolutionSmearing | None = None  # MC charges smeared to Data's resolution (resolution.py)

    def to_dict(self) -> dict[str, Any]:
        fmt = (FORMAT_WITH_REMOVAL if self.removal is not None or self.smearing is not None
               else FORMAT if self.overlay is None else FORMAT_WITH_OVERLAY)
        out = {"format": fmt, "kind": "tracker_charge_gains",
               "charge_branch": self.charge_branch, "position_branch": self.position_branch, "x_side": X_SIDE, "default_domain": self.default_domain,
               "domains": {d: m.to_dict() for d, m in self.maps.items()},
               "scales": {d: {c: float(f) for c, f in v.items()} for d, v in self.scales.items()}}
        if self.overlay is not None:
            out["noise_overlay"] = self.overlay.to_dict()
        if self.removal is not None:
            out["hit_removal"] = self.removal.to_dict()
        if self.smearing is not None:
            out["resolution_smearing"] = self.smearing.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ChargeCalibration:
        if int(d.get("format", 0)) not in FORMATS or d.get("kind") != "tracker_charge_gains":
            raise ValueError(f"not a tracker charge calibration of format {', '.join(map(str, FORMATS))}: "
                             f"format {d.get('format')!r}, kind {d.get('kind')!r}")
        return cls(str(d["charge_branch"]), str(d["position_branch"]),
                   {str(k): GainMap.from_dict(v) for k, v in d["domains"].items()},
                   str(d.get("default_domain", "data")),
                   {str(k): {str(c): float(f) for c, f in v.items()} for k, v in (d.get("scales") or {}).items()},
                   NoiseOverlay.from_dict(d["noise_overlay"]) if d.get("noise_overlay") else None,
                   HitRemoval.from_dict(d["hit_removal"]) if d.get("hit_removal") else None,
                   ResolutionSmearing.from_dict(d["resolution_smearing"]) if d.get("resolution_smearing") else None)

    @property
    def overlay_columns(self) -> list[str]:
        """The count columns the noise overlay changes (none without one)."""
        return [] if self.overlay is None else [c for c, v in self.overlay.extra.items() if v > 0]

    @property
    def count_columns(self) -> list[str]:
        """The count columns the calibration changes: the overlay's and those losing a
        removed hit's cluster."""
        lost = [] if self.removal is None else [self.removal.count[c] for c in self.removal.slots
                                                 if c in self.removal.count]
        return list(dict.fromkeys([*self.overlay_columns, *lost]))

    @property
    def blanked_columns(self) -> list[str]:
        """The columns a removed hit blanks (positions, columns that exist only with it)."""
        return [] if self.removal is None else list(dict.fromkeys(
            p for c in self.removal.slots for p in self.removal.blank.get(c, [])))

    def domain_codes(self, n: int, domain: str | np.ndarray | None) -> np.ndarray:
        """Per-row domain code (0 MC, 1 Data) from a name, an array of codes or None (default)."""
        if domain is None:
            domain = self.default_domain
        if isinstance(domain, str):
            if domain not in DOMAINS:
                raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
            return np.full(n, DOMAINS.index(domain), dtype=np.int64)
        codes = np.asarray(domain)
        if codes.shape != (n,):
            raise ValueError(f"domain codes have shape {codes.shape}, expected ({n},)")
        return np.rint(codes).astype(np.int64)

    def calibrate(self, cols: Mapping[str, Any], layout: Any, domain: str | np.ndarray | None = None
                  ) -> dict[str, np.ndarray]:
        """The calibrated columns of ``cols`` (raw values, NaN missing): the tracker charge
        branch divided by the gains, the scaled columns multiplied by their factors, for
        each row's domain (a name for every row, or codes 0 MC / 1 Data per row), and the
        count columns of the noise overlay present in ``cols`` with the Data noise added
        to MC rows. With a hit removal, the dropped MC hits are missing in the charge
        columns and in the position columns present, and their clusters are taken off the
        count columns present; the position columns and the columns that only exist with
        the hit go missing with it (all returned). Only these columns are returned (float64);
        the others stay as they are."""
        ccols = layout.feature_columns(self.charge_branch)
        n = len(np.asarray(cols[ccols[0]]))
        charge = branch_array(cols, layout, self.charge_branch)
        pos = branch_array(cols, layout, self.position_branch)
        codes = self.domain_codes(n, domain)
        mc_rows = np.flatnonzero(codes == 0)
        seeds = SeedKeys(cols)  # one hash of the raw charges for every step that draws
        dropped = self.removal.dropped(cols, mc_rows, seeds) if self.removal is not None else {}
        if dropped:
            # a removed hit's position is gone before the gains are applied: its other side's
            # charge then takes the (layer, side) gain, as a Data hit without that position does
            flat_pos = pos.reshape(n, -1)
            where = {c: j for j, c in enumerate(layout.feature_columns(self.position_branch))}
            for c, mask in dropped.items():
                for p in self.removal.blank.get(c, []):  # type: ignore[union-attr]
                    if p in where:
                        flat_pos[mask, where[p]] = np.nan
        scaled = sorted({c for v in self.scales.values() for c in v})
        out_scaled = {c: np.asarray(cols[c], dtype=np.float64).copy() for c in scaled}
        for code, name in enumerate(DOMAINS):
            rows = np.flatnonzero(codes == code)
            if not len(rows):
                continue
            every = len(rows) == n
            if name in self.maps:
                self.maps[name].apply(charge, pos, slice(None) if every else rows)
            for c, f in self.scales.get(name, {}).items():
                if every:
                    out_scaled[c] = out_scaled[c] * f
                else:
                    out_scaled[c][rows] = out_scaled[c][rows] * f
        overlaid: dict[str, np.ndarray] = {}
        if self.overlay is not None:  # keyed on the raw charges: before they are calibrated
            overlaid = self.overlay.apply(cols, mc_rows, seeds)
        flat = charge.reshape(n, -1)
        if self.smearing is not None and len(mc_rows):
            where = {c: j for j, c in enumerate(ccols)}
            for c, e in self.smearing.noise(cols, mc_rows, seeds).items():
                flat[mc_rows, where[c]] += e
        out = {**{c: flat[:, j] for j, c in enumerate(ccols)}, **out_scaled, **overlaid}
        if self.removal is not None:
            for c, mask in dropped.items():
                out[c] = np.where(mask, np.nan, out[c])
                for p in self.removal.blank.get(c, []):
                    if p in cols:
                        out[p] = np.where(mask, np.nan, out.get(p, np.asarray(cols[p], dtype=np.float64)))
                k = self.removal.count.get(c)
                if k is not None and k in cols:
                    out[k] = out.get(k, np.asarray(cols[k], dtype=np.float64)) - mask
        return out


def branch_array(cols: Mapping[str, Any], layout: Any, branch: str) -> np.ndarray:
    """Raw float64 values of an array branch in its ROOT shape ``[N, *shape]``."""
    names = layout.feature_columns(branch)
    n = len(np.asarray(cols[names[0]]))
    return np.stack([np.asarray(cols[c], dtype=np.float64) for c in names], axis=1).reshape(
        n, *layout.feature_shape(branch))


def charge_scale(values: np.ndarray) -> float:
    """Factor that puts the peak of a charge distribution at the nearest integer (1 when
    there is no peak above 1)."""
    peak = _mode(np.asarray(values, dtype=np.float64))
    if not np.isfinite(peak) or round(peak) < 1:
        return 1.0
    return float(round(peak) / peak)


def scale_columns(ds: Any) -> list[str]:
    """Charge columns of the MDA vectors calibrated by a scale: the TOF branches of the
    layout named like a charge (``*charge*``), scalar ones."""
    layout = ds.manifest["mda"]
    out: list[str] = []
    for b in layout.get("tof", []):
        if "charge" in b.lower() and not ds.feature_shape(b):
            out += ds.feature_columns(b)
    return out


def overlay_counts(ds: Any) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """The MDA count columns a noise overlay may change, each with the main track's charge
    column on the same layer and side and the count column of the layer's other side
    (:func:`autopid.calibration.noise.fit_noise_overlay`), and the columns that flag a second track (the
    charge branch's other tracks, the ``second_tracks`` role): the layout's cluster
    branch ``[layer, side]`` against the charge branch ``[track, layer, side]``, when
    their shapes match."""
    layout = ds.manifest["mda"]
    cb = layout["charge"]["branch"]
    counts: dict[str, tuple[str, str]] = {}
    cshape = ds.feature_shape(cb)
    clusters = (layout.get("clusters") or {}).get("branch")
    if clusters and len(cshape) == 3 and cshape[2] == 2 and tuple(ds.feature_shape(clusters)) == tuple(cshape[1:]):
        charge_cols = np.asarray(ds.feature_columns(cb)).reshape(cshape)
        count_cols = np.asarray(ds.feature_columns(clusters)).reshape(cshape[1:])
        for li, si in np.ndindex(*cshape[1:]):
            counts[str(count_cols[li, si])] = (str(charge_cols[0, li, si]), str(count_cols[li, 1 - si]))
    roles = ds.manifest.get("roles") or {}
    stored = {*ds.manifest.get("columns", []), *ds.manifest.get("auxiliary", [])}
    second = list(np.asarray(ds.feature_columns(cb)).reshape(cshape)[1:].ravel()) if len(cshape) == 3 else []
    if roles.get("second_tracks") in stored:
        second.append(roles["second_tracks"])
    return counts, second


def removal_slots(ds: Any) -> dict[str, tuple[str | None, str | None]]:
    """The main track's hit slots of the MDA charge layers (charge branch ``[track, layer,
    side]``), each with its position column (the position branch, same shape) and its
    cluster-count column (the cluster branch ``[layer, side]``), where those exist."""
    layout = ds.manifest["mda"]
    cb, pb = layout["charge"]["branch"], layout["position"]["branch"]
    cshape = tuple(ds.feature_shape(cb))
    if len(cshape) != 3:
        return {}
    charge_cols = np.asarray(ds.feature_columns(cb)).reshape(cshape)
    pos_cols = np.asarray(ds.feature_columns(pb)).reshape(cshape) if tuple(ds.feature_shape(pb)) == cshape else None
    clusters = (layout.get("clusters") or {}).get("branch")
    count_cols = (np.asarray(ds.feature_columns(clusters)).reshape(cshape[1:])
                  if clusters and tuple(ds.feature_shape(clusters)) == cshape[1:] else None)
    out: dict[str, tuple[str | None, str | None]] = {}
    for layer in layout["charge"]["layers"]:
        li = int(layer) - 1
        if not 0 <= li < cshape[1]:
            continue
        for si in range(cshape[2]):
            out[str(charge_cols[0, li, si])] = (None if pos_cols is None else str(pos_cols[0, li, si]),
                                                None if count_cols is None else str(count_cols[li, si]))
    return out


def _residual_width(r: np.ndarray) -> float:
    """Width of a residual's peak from its lower side (see :mod:`autopid.calibration.resolution`)."""
    centre = _peak_centre(r)
    below = centre - r[np.isfinite(r) & (r < centre)]
    return 1.4826 * float(np.median(below)) if below.size >= MIN_SMEAR_ROWS else float("nan")


MIN_SMEAR_ROWS = 200  # hits below the peak each domain needs for a width


def fit_resolution_smearing(q_mc: np.ndarray, q_data: np.ndarray, columns: np.ndarray,
                            key_columns: Sequence[str]) -> ResolutionSmearing:
    """The smearing that gives MC Data's width of (layer charge / event truncated mean),
    from calibrated main-track charges ``[N, L, S]`` of each domain's train split;
    ``columns`` ``[L, S]`` names their columns. The widths are relative (a ratio peaks at
    1, which :func:`_mode` resolves to 0.2 %); the noise is in charge units at MC's
    median truncated mean (the selected species)."""
    n_layers, sides = q_mc.shape[1], q_mc.shape[2]
    kept = n_layers - 2 if n_layers >= 4 else n_layers  # layers the truncated mean averages
    # noise of variance v on every hit adds v (1 - 1/(sides k)) to a hit's residual from the
    # mean of k layers of `sides` sides each (the trimmed layers, where it is one, add a little more)
    share = 1.0 - 1.0 / max(sides * kept, 1)
    widths: dict[str, dict[str, float | None]] = {}
    extra: dict[str, float] = {}
    res, level = {}, {}
    for name, q in (("mc", q_mc), ("data", q_data)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            tm = truncated_mean(np.nanmean(q, axis=2))
            res[name] = q / tm[:, None, None]
        level[name] = float(np.nanmedian(tm)) if np.isfinite(tm).any() else float("nan")
    for li, si in np.ndindex(*columns.shape):
        c = str(columns[li, si])
        w_mc, w_data = _residual_width(res["mc"][:, li, si]), _residual_width(res["data"][:, li, si])
        ok = np.isfinite(w_mc) and np.isfinite(w_data) and w_mc > 0
        ok = ok and np.isfinite(level["mc"])
        extra[c] = float(level["mc"] * np.sqrt(max(w_data**2 - w_mc**2, 0.0) / share)) if ok else 0.0
        widths[c] = {"mc": w_mc if np.isfinite(w_mc) else None, "data": w_data if np.isfinite(w_data) else None}
    return ResolutionSmearing(extra, list(key_columns), {"relative_width": widths, "charge": level["mc"]})


def fit_charge_calibration(ds: Any, *, split: str = "train", noise_overlay: bool = True,
                           hit_removal: bool = True, resolution_smearing: bool = True,
                           **kwargs: Any) -> ChargeCalibration:
    """Gain maps of MC and Data, each fitted on its own ``split`` of the cache ``ds``
    (raw charge and position columns; no truth read), the TOF charge scales (peak at
    the nearest integer) and, with ``noise_overlay``, the Data noise to add to MC
    cluster counts (:mod:`autopid.calibration.noise`) and, with ``hit_removal``, the MC
    hits to drop down to Data's hit efficiency (:mod:`autopid.calibration.hits`) and,
    with ``resolution_smearing``, the noise that gives MC charges Data's resolution
    (:mod:`autopid.calibration.resolution`). A domain without rows gets unit gains (and
    none of these is fitted)."""
    layout = ds.manifest["mda"]
    cb, pb = layout["charge"]["branch"], layout["position"]["branch"]
    layers = list(layout["charge"]["layers"])
    extra = scale_columns(ds)
    counts, second = overlay_counts(ds) if noise_overlay else ({}, [])
    count_cols = [c for c in [*counts, *second] if c not in ds.feature_columns(cb)]
    slots = removal_slots(ds) if hit_removal else {}
    # scalar MDA inputs that may exist only with a hit (a rigidity fitted with it)
    others = [c for b in [*layout.get("rigidity", []), *layout.get("tof", [])] if not ds.feature_shape(b)
              for c in ds.feature_columns(b)] if slots else []
    maps: dict[str, GainMap] = {}
    scales: dict[str, dict[str, float]] = {}
    raw: dict[str, dict[str, np.ndarray]] = {}
    for domain in DOMAINS:
        frame = ds.frame(split, domain, list(dict.fromkeys([*ds.feature_columns(cb), *ds.feature_columns(pb), *extra,
                                                             *count_cols, *others])))
        cols = {c: frame[c].to_numpy(np.float64) for c in frame.columns}
        raw[domain] = cols
        if len(frame) == 0:
            maps[domain] = GainMap(layers, [np.array([-np.inf, np.inf])] * len(layers),
                                   [np.ones((ds.feature_shape(cb)[-1], 1)) for _ in layers],
                                   np.ones((len(layers), ds.feature_shape(cb)[-1])), {"events": 0})
            continue
        maps[domain] = fit_gain_map(branch_array(cols, ds, cb), branch_array(cols, ds, pb), layers, **kwargs)
        maps[domain].info["split"] = split
        # one scale for all TOF charges: a relation between them (the upper-TOF charge is
        # the mean of planes 1 and 2) must survive the calibration in both domains
        factor = charge_scale(np.concatenate([cols[c] for c in extra])) if extra else 1.0
        scales[domain] = {c: factor for c in extra}
    overlay, removal = None, None
    both = all(len(next(iter(raw[d].values()), [])) for d in DOMAINS)
    if counts and both:
        overlay = fit_noise_overlay(raw["mc"], raw["data"], counts, second, ds.feature_columns(cb))
        overlay.info["split"] = split
    if slots and both:
        removal = fit_hit_removal(raw["mc"], raw["data"], slots, ds.feature_columns(cb), others)
        removal.info["split"] = split
    smearing = None
    cshape = tuple(ds.feature_shape(cb))
    if resolution_smearing and both and len(cshape) == 3:
        li = [int(v) - 1 for v in layers if 0 < int(v) <= cshape[1]]
        main = {}
        for d in DOMAINS:
            q = branch_array(raw[d], ds, cb)
            maps[d].apply(q, branch_array(raw[d], ds, pb))
            main[d] = q[:, 0][:, li]
        names = np.asarray(ds.feature_columns(cb)).reshape(cshape)[0][li]
        smearing = fit_resolution_smearing(main["mc"], main["data"], names, ds.feature_columns(cb))
        smearing.info["split"] = split
    return ChargeCalibration(cb, pb, maps, scales=scales, overlay=overlay, removal=removal, smearing=smearing)
