"""``autopid benchmark``: every method on the same splits and seeds, as records, tables and plots.

See :mod:`autopid.benchmark.records` for the record format of ``benchmark.json``.
"""

from __future__ import annotations

from autopid.benchmark.cases import (
    PRESETS,
    Case,
    Preset,
    builtin_case_configs,
    cases_from_configs,
    user_cases,
)
from autopid.benchmark.records import DOMAINS, METHODS, METRICS, validate_records
from autopid.benchmark.runner import BenchmarkResult, methods_for, run_benchmark

__all__ = [
    "DOMAINS",
    "METHODS",
    "METRICS",
    "PRESETS",
    "BenchmarkResult",
    "Case",
    "Preset",
    "builtin_case_configs",
    "cases_from_configs",
    "methods_for",
    "run_benchmark",
    "user_cases",
    "validate_records",
]
