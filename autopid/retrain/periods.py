"""New-period detection: a period counts once its directory holds the completion marker.

A period directory is written file by file (``autopid simulate`` writes the ROOT files,
then ``period.json`` last; a data-transfer tool should do the same: copy the files, then
write the marker). Until the marker exists the period is *incomplete* and ignored, so a
period is never picked up half-way. Whether a complete period was already handled is the
state database's business (:mod:`autopid.retrain.state`), not this module's.

A marker that cannot be read (not JSON, unreadable, a bad ``runs`` entry) does not stop
the scan: the period is returned with its ``error`` set, and the pass marks that period's
attempt failed with the error while the other periods proceed.
"""

from __future__ import annotations

import glob
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autopid.retrain.job import PERIOD_PLACEHOLDER, PeriodSource


@dataclass(frozen=True)
class Period:
    name: str
    directory: Path
    manifest: dict[str, Any]
    error: str | None = None  # the completion marker is broken: the period's attempt fails with this

    @property
    def runs(self) -> tuple[int, int] | None:
        """The run range the manifest declares (``runs: [first, last]``), if any."""
        runs = self.manifest.get("runs")
        if isinstance(runs, list) and len(runs) == 2:
            return int(runs[0]), int(runs[1])
        return None


def _name_regex(pattern: str) -> re.Pattern[str]:
    head, tail = pattern.split(PERIOD_PLACEHOLDER)
    return re.compile(re.escape(head) + r"(?P<period>[^/]+)" + re.escape(tail.rstrip("/")) + "/?$")


def _check_runs(marker: Path, manifest: dict[str, Any]) -> str | None:
    runs = manifest.get("runs")
    if runs is None:
        return None
    try:
        if not isinstance(runs, list) or len(runs) != 2 or any(isinstance(r, (bool, float)) for r in runs):
            raise ValueError
        first, last = int(runs[0]), int(runs[1])
        if first < 0 or last < first:
            raise ValueError
    except (TypeError, ValueError):
        return f"{marker}: runs must be [first, last] (integers, 0 <= first <= last), got {runs!r}"
    return None


def scan_periods(source: PeriodSource) -> tuple[list[Period], list[str]]:
    """Complete periods (sorted by name) and the names of incomplete ones."""
    pattern = source.pattern.rstrip("/")
    extract = _name_regex(pattern)
    wanted = re.compile(source.name_regex)
    complete: list[Period] = []
    incomplete: list[str] = []
    for path in sorted(glob.glob(glob.escape(pattern).replace(glob.escape(PERIOD_PLACEHOLDER), "*"))):
        m = extract.search(path)
        if m is None or not Path(path).is_dir():
            continue
        name = m.group("period")
        if not wanted.fullmatch(name) or (source.after is not None and name <= source.after):
            continue
        marker = Path(path) / source.complete_marker
        if not marker.is_file():
            incomplete.append(name)
            continue
        error = None
        manifest: Any = {}
        try:
            manifest = json.loads(marker.read_text(encoding="utf-8")) if marker.stat().st_size else {}
        except (OSError, ValueError) as exc:
            error = (f"{marker}: unreadable completion marker ({type(exc).__name__}: {exc}); fix it, then "
                     "`autopid scheduler retry`")
        if error is None and not isinstance(manifest, dict):
            error = f"{marker}: the completion marker is not a JSON object (got {type(manifest).__name__})"
        if error is None:
            error = _check_runs(marker, manifest)
        complete.append(Period(name, Path(path), manifest if error is None else {}, error))
    return sorted(complete, key=lambda p: p.name), sorted(incomplete)
