"""The selection a published model was trained under, applied again at inference.

Training only ever saw entries that passed the dataset's preselection (``selection``
cuts, e.g. the AMS inner-tracker charge window and rigidity > 2) and had every
``required`` feature present; elsewhere preprocessing refused the file. A model scores
anything it is given, so scores outside that phase space are meaningless (a P model
run on every entry of a Data file "selects" silicon). ``preprocessing.json`` therefore
records both, and :class:`Selection` applies them in the order preprocessing did:
sentinels are NaN first, then the required features, then the cuts one after the other.
Counting what each step drops among the entries still alive gives the cut flow that
:class:`SelectionReport` prints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from autopid.config.dataset import Cut
from autopid.errors import InputError
from autopid.preprocess._chunk import cut_mask

NO_SELECTION = ("the model carries no selection (exported before selections were recorded): "
                "every entry is scored")


@dataclass
class CutCount:
    """One step of the cut flow: what it tests and how many entries it dropped."""

    label: str
    branch: str
    dropped: int = 0
    missing: int = 0  # of ``dropped``: the branch was NaN, inf or a sentinel there


@dataclass
class SelectionReport:
    """How many entries the model's selection kept, and why the others were dropped."""

    recorded: bool  # the model carries a selection
    applied: bool  # it was applied to this input
    entries: int = 0
    kept: int = 0
    cuts: list[CutCount] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # why it was not applied, suspicious inputs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """The cut flow, one line per step, for the CLI and logs."""
        def pct(n: int) -> str:
            return f"{100.0 * n / self.entries:.1f}%" if self.entries else "-"

        if not self.applied:
            head = f"selection not applied: {self.entries} entries, all scored"
        else:
            head = f"selection: kept {self.kept} of {self.entries} entries ({pct(self.kept)})"
        lines = [head]
        for c in self.cuts:
            why = f"; {c.missing} with {c.branch!r} missing" if c.missing else ""
            lines.append(f"  {c.label}: dropped {c.dropped} ({pct(c.dropped)}{why})")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


class Selection:
    """Required features and cuts, as recorded in ``preprocessing.json`` (``selection``)."""

    def __init__(self, cuts: Sequence[Cut], required: Sequence[str]) -> None:
        self.cuts = list(cuts)
        self.required = list(required)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], where: str) -> Selection | None:
        """None for a model exported before selections were recorded."""
        raw = spec.get("selection")
        if raw is None:
            return None
        try:
            cuts = [Cut.model_validate(c) for c in raw.get("cuts", [])]
            required = [str(b) for b in raw.get("required", [])]
        except (AttributeError, TypeError, ValueError) as exc:
            raise InputError(f"{where}: the selection recorded in preprocessing.json is malformed ({exc})") from exc
        return cls(cuts, required)

    @staticmethod
    def to_spec(cuts: Sequence[Any], required: Sequence[str], source: str) -> dict[str, Any]:
        """The ``selection`` entry of ``preprocessing.json`` (cuts as dicts or :class:`Cut`)."""
        dumped = [Cut.model_validate(c).model_dump(mode="json") for c in cuts]
        return {"cuts": dumped, "required": list(required), "source": source,
                "order": "sentinels to NaN, then required features present, then each cut in turn"}

    def describe(self) -> str:
        """``a, b present; x > 1; ...``: the steps in order, on one line."""
        parts = [f"{', '.join(self.required)} present"] if self.required else []
        return "; ".join(parts + [c.describe() for c in self.cuts]) or "none"

    @property
    def branches(self) -> list[str]:
        return list(dict.fromkeys([*self.required, *(c.branch for c in self.cuts)]))

    def new_report(self) -> SelectionReport:
        steps = [CutCount(f"{b} present (required in training)", b) for b in self.required]
        steps += [CutCount(c.describe(), c.branch) for c in self.cuts]
        return SelectionReport(recorded=True, applied=True, cuts=steps)

    def mask(self, arrays: Mapping[str, np.ndarray], report: SelectionReport, where: str) -> np.ndarray:
        """Entries that pass, from ``arrays`` (branch -> values, sentinels already NaN);
        the cut flow of these entries is added to ``report``."""
        n = len(next(iter(arrays.values()))) if arrays else 0
        keep = np.ones(n, dtype=bool)
        steps = iter(report.cuts)
        for branch in self.required:
            values = np.asarray(arrays[branch]).reshape(n, -1)
            step = next(steps)
            ok = np.isfinite(values).all(axis=1)
            lost = keep & ~ok
            step.dropped += int(lost.sum())
            step.missing += int(lost.sum())
            keep &= ok
        for cut in self.cuts:
            values = np.asarray(arrays[cut.branch])
            if values.ndim != 1:
                raise InputError(f"{where}: the selection cuts on {cut.branch!r}, which holds arrays of shape "
                                 f"{list(values.shape[1:])} here; a cut needs one number per entry")
            step = next(steps)
            ok = cut_mask(values, cut)
            lost = keep & ~ok
            step.dropped += int(lost.sum())
            step.missing += int((lost & np.isnan(values)).sum())
            keep &= ok
        report.entries += n
        report.kept += int(keep.sum())
        return keep
