"""HTML reports with PNG figures for a training run, a search or a retraining directory.

``make_report(directory)`` evaluates each trained model against the baselines on the
held-out test split and writes ``<directory>/report/index.html`` next to its figures.
Nothing here is imported by ``autopid`` itself: matplotlib is loaded only when a report
is made.
"""

from __future__ import annotations

from autopid.report.build import Report, make_report
from autopid.report.inputs import discover

__all__ = ["Report", "discover", "make_report"]
