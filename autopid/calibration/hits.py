"""Truth-free hit removal: MC tracker hits given the Data hit efficiency.

Data loses more tracker hits than MC (in the AMS-like simulation 96 % against 98 % per
layer and side, as in a detector whose MC predates dead strips and ageing). The MDA's
graph has one node per hit, so a Data-vs-MC classifier reads the domains off the number
and pattern of missing hits (0.58 accuracy on the main track's missing-hit pattern alone).
Experiments remove MC hits to the efficiency measured in Data ("hit killing"); autopid does
the same, without truth:

* the efficiency of a hit slot (the main track's layer and side) is the fraction of rows
  of each domain's train split with a measured charge there;
* an MC hit in a slot whose Data efficiency is lower is dropped with probability
  ``1 - eps_Data / eps_MC`` (hits can be removed, not added): its charge and position go
  missing and the slot's cluster count loses the hit's cluster;
* a column that only exists with the hit (in the AMS-like files, the inner+L1 rigidity
  needs the L1 y hit) goes missing with it: among the candidates the caller names (the
  MDA's scalar rigidity and TOF inputs), a column that is missing in every train-split row
  without the hit and present in most rows with it, in both domains;
* the draw of a row is a function of its raw charges (a hash, as for the noise overlay)
  and the slot's name, so an event loses the same hits in training, evaluation and
  inference, whatever else is in the frame.

Other summaries computed from the hits upstream (a mean L1 charge, a truncated mean) are
left as they are. NumPy only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autopid.calibration.noise import SeedKeys, column_salt, uniforms

MIN_ROWS = 200  # rows each domain needs for an efficiency
MIN_MISSING = 20  # rows without a hit each domain needs to tie a column to it


@dataclass
class HitRemoval:
    """Per hit slot (the main track's charge column) the probability that an MC hit is
    dropped, the columns blanked with it (its position, columns that only exist with the
    hit) and its cluster-count column (one cluster fewer); ``key_columns`` seed each row's
    draws."""

    drop: dict[str, float]
    blank: dict[str, list[str]]
    count: dict[str, str]
    key_columns: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "hit_removal", "drop": {c: float(v) for c, v in self.drop.items()},
                "blank": {c: list(v) for c, v in self.blank.items()}, "count": dict(self.count),
                "key_columns": list(self.key_columns), "info": self.info}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HitRemoval:
        if d.get("kind") != "hit_removal":
            raise ValueError(f"not a hit removal: kind {d.get('kind')!r}")
        return cls({str(c): float(v) for c, v in d["drop"].items()},
                   {str(c): [str(x) for x in v] for c, v in (d.get("blank") or {}).items()},
                   {str(c): str(v) for c, v in (d.get("count") or {}).items()},
                   [str(c) for c in d["key_columns"]], dict(d.get("info") or {}))

    @property
    def slots(self) -> list[str]:
        """The charge columns whose hits may be dropped."""
        return [c for c, p in self.drop.items() if p > 0]

    def dropped(self, cols: Mapping[str, Any], mc_rows: np.ndarray | slice,
                seeds: SeedKeys | None = None) -> dict[str, np.ndarray]:
        """Per slot present in ``cols``, a boolean mask over all rows of ``cols``: True
        where an MC row (``mc_rows``) has a hit there that is dropped."""
        present = [c for c in self.slots if c in cols]
        if not present:
            return {}
        n = len(np.asarray(cols[present[0]]))
        keys = (seeds or SeedKeys(cols)).get(self.key_columns, "hit removal")[mc_rows]
        out = {}
        for c in present:
            mask = np.zeros(n, dtype=bool)
            hit = np.isfinite(np.asarray(cols[c], dtype=np.float64)[mc_rows])
            mask[mc_rows] = hit & (uniforms(keys, column_salt("drop:" + c)) < self.drop[c])
            out[c] = mask
        return out


def _tied(cols: Mapping[str, Any], slot: str, other: str) -> bool | None:
    """Whether ``other`` is missing in every row without the hit of ``slot`` and present
    in most rows with it (None: too few rows without the hit to tell)."""
    gone = ~np.isfinite(np.asarray(cols[slot], dtype=np.float64))
    if gone.sum() < MIN_MISSING or gone.all():
        return None
    o = ~np.isfinite(np.asarray(cols[other], dtype=np.float64))
    return bool(o[gone].all() and o[~gone].mean() < 0.5)


def fit_hit_removal(mc: Mapping[str, Any], data: Mapping[str, Any], slots: Mapping[str, tuple[str | None, str | None]],
                    key_columns: Sequence[str], others: Sequence[str] = ()) -> HitRemoval:
    """Estimate the removal from raw columns of both domains' train splits (no truth).

    ``slots`` maps each main-track charge column (a layer and side) to ``(position,
    count)``: the position column of the same hit and the cluster-count column of its
    layer and side (either None). Each of ``others`` that both domains show to exist only
    with a slot's hit (see the module docstring) is blanked with it."""
    drop: dict[str, float] = {}
    eff: dict[str, dict[str, float | None]] = {}
    for c in slots:
        e = {}
        for name, cols in (("mc", mc), ("data", data)):
            v = np.asarray(cols[c], dtype=np.float64)
            e[name] = (float(np.mean(np.isfinite(v))), len(v))
        (e_mc, n_mc), (e_data, n_data) = e["mc"], e["data"]
        ok = min(n_mc, n_data) >= MIN_ROWS and e_mc > 0
        drop[c] = float(max(1.0 - e_data / e_mc, 0.0)) if ok else 0.0
        eff[c] = {"mc": e_mc if n_mc else None, "data": e_data if n_data else None}
    blank: dict[str, list[str]] = {}
    for c, (p, _) in slots.items():
        tied = [o for o in others if o not in slots
                and [_tied(cols, c, o) for cols in (mc, data)] == [True, True]]
        if p is not None or tied:
            blank[c] = [*([p] if p is not None else []), *tied]
    count = {c: k for c, (_, k) in slots.items() if k is not None}
    return HitRemoval(drop, blank, count, list(key_columns), {"efficiency": eff})
