"""The records of ``benchmark.json``: one number per (experiment, species, charge, method,
domain, metric, bin), the mean over the seeds with its standard deviation.

Record shape (every key always present)::

    {"experiment": "alice", "species": "proton", "charge": 1, "method": "fse",
     "domain": "mc", "metric": "f1", "value": 0.95, "std": 0.004, "bin": null}

* ``charge``: ``1`` or ``-1`` for the tracks of that charge sign, ``null`` for both
  together (and for every AMS record: nuclei are not split by charge).
* ``bin``: ``null`` for the integrated value; ``"[lo,hi)"`` for a bin of the dataset's
  kinematic variable (p in GeV/c for ALICE, inner rigidity in GV for AMS), lower edge
  included, upper edge excluded, edges written with ``%g``; ``"frag:none"``,
  ``"frag:above_l1"``, ``"frag:l1_l2"`` or ``"frag:deep"`` for the background of one
  fragmentation category (AMS; truth of MC, hidden truth of Data).
* ``value``: mean over the seeds where the metric is defined; ``null`` where it is not
  (no signal in a bin, no background selected so the rejection is unbounded).
* ``std``: sample standard deviation over the seeds (``ddof=1``) when ``--seeds`` > 1 and
  at least two seeds define the metric; ``null`` otherwise.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

METHODS: tuple[str, ...] = ("fse", "mda", "mda_no_adaptation", "nsigma", "cut", "xgboost", "mlp_imputation")
# second_track_veto: the veto alone; irreducible_limit: the rejection at 90 % signal
# efficiency of a selection that removes every background event except the interactions
# above L1, which pass like signal (n_background / (0.9 n_above_L1); hidden truth, one value)
EXTRA_METHODS: tuple[str, ...] = ("second_track_veto", "irreducible_limit")
DOMAINS: tuple[str, ...] = ("mc", "data")
METRICS: tuple[str, ...] = ("f1", "efficiency", "purity", "auc", "rejection_at_90", "efficiency_gap",
                            "domain_accuracy")
KEYS: tuple[str, ...] = ("experiment", "species", "charge", "method", "domain", "metric", "value", "std", "bin")
FRAG_BINS: dict[int, str] = {0: "frag:none", 1: "frag:above_l1", 2: "frag:l1_l2", 3: "frag:deep"}


def bin_label(lo: float, hi: float) -> str:
    """``"[0.5,0.8)"``: lower edge included, upper excluded, ``%g`` edges."""
    return f"[{lo:g},{hi:g})"


def parse_bin(label: str) -> tuple[float, float]:
    lo, hi = label.strip("[)").split(",")
    return float(lo), float(hi)


@dataclass(frozen=True)
class Measurement:
    """One number of one seed (before aggregation)."""

    experiment: str
    species: str
    charge: int | None
    method: str
    domain: str
    metric: str
    bin: str | None
    seed: int
    value: float | None

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.experiment, self.species, self.charge, self.method, self.domain, self.metric, self.bin)


def _finite(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def aggregate(measurements: Iterable[Measurement], seeds: int) -> list[dict[str, Any]]:
    """Mean and standard deviation over the seeds, in first-seen order of the keys."""
    groups: dict[tuple[Any, ...], list[float | None]] = {}
    for m in measurements:
        groups.setdefault(m.key, []).append(_finite(m.value))
    out = []
    for key, values in groups.items():
        ok = [v for v in values if v is not None]
        value = float(np.mean(ok)) if ok else None
        std = float(np.std(ok, ddof=1)) if seeds > 1 and len(ok) >= 2 else None
        exp, species, charge, method, domain, metric, bin_ = key
        out.append({"experiment": exp, "species": species, "charge": charge, "method": method, "domain": domain,
                    "metric": metric, "value": value, "std": std, "bin": bin_})
    return out


def validate_records(records: Sequence[dict[str, Any]], *, seeds: int, extra: bool = False) -> None:
    """Raise ``ValueError`` naming the first record that breaks the schema."""
    methods = EXTRA_METHODS if extra else METHODS
    metrics = METRICS
    seen: set[tuple[Any, ...]] = set()
    for i, r in enumerate(records):
        where = f"record {i} ({r!r})"
        if not isinstance(r, dict) or tuple(sorted(r)) != tuple(sorted(KEYS)):
            raise ValueError(f"{where}: keys must be exactly {list(KEYS)}")
        for k in ("experiment", "species"):
            if not isinstance(r[k], str) or not r[k]:
                raise ValueError(f"{where}: {k} must be a non-empty string")
        if r["charge"] is not None and (isinstance(r["charge"], bool) or r["charge"] not in (1, -1)):
            raise ValueError(f"{where}: charge must be 1, -1 or null")
        if r["method"] not in methods:
            raise ValueError(f"{where}: method must be one of {list(methods)}")
        if r["domain"] not in DOMAINS:
            raise ValueError(f"{where}: domain must be one of {list(DOMAINS)}")
        if r["metric"] not in metrics:
            raise ValueError(f"{where}: metric must be one of {list(metrics)}")
        for k in ("value", "std"):
            v = r[k]
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise ValueError(f"{where}: {k} must be a finite number or null")
        if r["std"] is not None and seeds < 2:
            raise ValueError(f"{where}: std must be null with one seed")
        if r["std"] is not None and r["std"] < 0:
            raise ValueError(f"{where}: std must not be negative")
        b = r["bin"]
        if b is not None:
            if not isinstance(b, str):
                raise ValueError(f"{where}: bin must be a string or null")
            if b.startswith("frag:"):
                if b not in FRAG_BINS.values():
                    raise ValueError(f"{where}: unknown fragmentation bin {b!r}")
            else:
                try:
                    lo, hi = parse_bin(b)
                except ValueError as exc:
                    raise ValueError(f"{where}: bin must look like '[lo,hi)' or 'frag:...'") from exc
                if not (b.startswith("[") and b.endswith(")") and lo < hi):
                    raise ValueError(f"{where}: bin must look like '[lo,hi)' with lo < hi")
        key = tuple(r[k] for k in KEYS if k not in ("value", "std"))
        if key in seen:
            raise ValueError(f"{where}: duplicate record")
        seen.add(key)


def write_records(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """JSON list, one record per line (readable and diff-able), NaN never written."""
    lines = [json.dumps(r, allow_nan=False, sort_keys=False) for r in records]
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("[\n" + ",\n".join(lines) + ("\n" if lines else "") + "]\n")
    tmp.replace(path)


def irreducible_limit(y: np.ndarray, frag: np.ndarray, efficiency: float = 0.9) -> float | None:
    """The best rejection at ``efficiency`` any selection can reach when the background that
    interacted above L1 (fragmentation code 1) cannot be told from the signal: it passes
    with the signal's efficiency, every other background event is rejected. None without
    such background (unbounded)."""
    bkg = ~np.asarray(y, dtype=bool)
    above = int((bkg & (np.asarray(frag) == 1)).sum())
    return float(bkg.sum()) / (efficiency * above) if above else None
