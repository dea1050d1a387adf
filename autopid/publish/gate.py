"""The promotion gate: does a candidate model replace the one now serving?

Both models are evaluated on the same held-out data (:func:`evaluate_pair` does that;
:func:`decide` refuses metrics whose sample sizes differ). The candidate is promoted
only if the chosen metric improves by at least ``margin`` and no guard metric gets worse
beyond its tolerance. A guard reads one value, or one value per bin of the kinematic
variable (every bin must pass). With no serving model the candidate is promoted.

Metrics are dicts as :func:`autopid.publish.evaluation.held_out_metrics` writes them
(``{"mc": {...}, "data": {...}, "gap": {...}}``); paths are dotted, e.g. ``mc.auc``,
``gap.gap``, ``mc.binned.background_efficiency_90``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from autopid.errors import ConfigError


@dataclass(frozen=True)
class Guard:
    """A metric that must not get worse by more than ``max(tolerance, relative_tolerance * |serving|)``.

    Args:
        name: shown in the decision.
        path: dotted path into the metrics dict; a list of bins (``{"low", "high", "value"}``)
            is checked bin by bin.
        higher_is_better: direction of the metric.
        tolerance: absolute allowance.
        relative_tolerance: allowance as a fraction of the serving value.
        absolute_value: compare ``|value|`` (e.g. the MC-Data efficiency gap).
    """

    name: str
    path: str
    higher_is_better: bool
    tolerance: float = 0.0
    relative_tolerance: float = 0.0
    absolute_value: bool = False


DEFAULT_GUARDS: tuple[Guard, ...] = (
    Guard("|MC-Data efficiency gap|", "gap.gap", higher_is_better=False, tolerance=0.01, absolute_value=True),
    Guard("background efficiency at 90% signal efficiency (MC), per kinematic bin",
          "mc.binned.background_efficiency_90", higher_is_better=False, tolerance=0.005, relative_tolerance=0.10),
)


@dataclass
class GuardResult:
    name: str
    bin: str | None
    candidate: float | None
    serving: float | None
    worse_by: float | None  # > 0: the candidate is worse
    allowed: float
    ok: bool
    note: str = ""


@dataclass
class GateDecision:
    """The decision with the numbers behind it."""

    promote: bool
    reason: str
    metric: str
    candidate: float | None = None
    serving: float | None = None
    improvement: float | None = None
    margin: float = 0.0
    guards: list[GuardResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        if value in ("inf", "-inf"):
            return float(value)
        raise ConfigError(f"metric value {value!r} is not a number")
    v = float(value)
    return None if math.isnan(v) else v


def _lookup(metrics: Mapping[str, Any], path: str) -> Any:
    node: Any = metrics
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def _same_data(candidate: Mapping[str, Any], serving: Mapping[str, Any]) -> None:
    for domain in ("mc", "data"):
        a, b = _lookup(candidate, f"{domain}.n"), _lookup(serving, f"{domain}.n")
        if a is not None and b is not None and int(a) != int(b):
            raise ConfigError(f"the candidate and the serving model were not evaluated on the same held-out data "
                              f"({domain}: {a} vs {b} rows); evaluate both on one sample (see evaluate_pair)")


def _check(guard: Guard, label: str | None, cand: Any, serv: Any) -> GuardResult:
    c, s = _number(cand), _number(serv)
    if c is None or s is None:
        return GuardResult(guard.name, label, c, s, None, 0.0, True, "not comparable (missing or NaN): skipped")
    if guard.absolute_value:
        c, s = abs(c), abs(s)
    if math.isinf(s) and math.isinf(c) and (s > 0) == (c > 0):
        return GuardResult(guard.name, label, c, s, 0.0, 0.0, True)
    worse = (s - c) if guard.higher_is_better else (c - s)
    allowed = guard.tolerance if math.isinf(s) else max(guard.tolerance, guard.relative_tolerance * abs(s))
    return GuardResult(guard.name, label, c, s, worse, allowed, not worse > allowed)


def _check_guard(guard: Guard, candidate: Mapping[str, Any], serving: Mapping[str, Any]) -> list[GuardResult]:
    cand, serv = _lookup(candidate, guard.path), _lookup(serving, guard.path)
    if isinstance(cand, list) or isinstance(serv, list):
        sbins = {(b.get("low"), b.get("high")): b.get("value") for b in (serv or [])}
        out = []
        for b in cand or []:
            key = (b.get("low"), b.get("high"))
            out.append(_check(guard, f"[{key[0]:g}, {key[1]:g})", b.get("value"), sbins.get(key)))
        return out
    return [_check(guard, None, cand, serv)]


def decide(candidate: Mapping[str, Any], serving: Mapping[str, Any] | None, *, metric: str = "mc.auc",
           margin: float = 0.002, higher_is_better: bool = True,
           guards: Sequence[Guard] = DEFAULT_GUARDS) -> GateDecision:
    """Promote ``candidate`` over ``serving`` (metrics dicts) or not, and why."""
    if margin < 0:
        raise ConfigError(f"margin must be >= 0, got {margin}")
    c = _number(_lookup(candidate, metric))
    if serving is None:
        return GateDecision(True, "no model is serving: the candidate is promoted", metric, c, None, None, margin)
    _same_data(candidate, serving)
    s = _number(_lookup(serving, metric))
    if c is None or s is None:
        return GateDecision(False, f"{metric} is missing or NaN for the {'candidate' if c is None else 'serving model'}",
                            metric, c, s, None, margin)
    improvement = (c - s) if higher_is_better else (s - c)
    results = [r for g in guards for r in _check_guard(g, candidate, serving)]
    failed = [r for r in results if not r.ok]
    improved = improvement >= margin
    parts = [f"{metric}: candidate {c:.5g} vs serving {s:.5g} (improvement {improvement:+.3g}, "
             f"needed >= {margin:g}) -> {'ok' if improved else 'not enough'}"]
    for r in failed:
        where = f" in bin {r.bin}" if r.bin else ""
        parts.append(f"guard {r.name}{where} worse by {r.worse_by:.3g} (allowed {r.allowed:.3g}): "
                     f"candidate {r.candidate:.5g} vs serving {r.serving:.5g}")
    promote = improved and not failed
    checked = sum(1 for r in results if r.worse_by is not None)
    head = "promote" if promote else "keep the serving model"
    reason = f"{head}: " + "; ".join(parts) + (f"; {checked} guard checks passed" if promote else "")
    return GateDecision(promote, reason, metric, c, s, improvement, margin, results)


def evaluate_pair(candidate: Any, serving: Any, ds: Any, species: str, *, max_rows: int | None = 200_000,
                  seed: int = 0, threads: int | None = 1) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Metrics of two models (ModelVersion, id or exported directory; ``serving`` may be
    None) on the same held-out rows of ``ds``, each at its own threshold."""
    from autopid.publish.evaluation import held_out_metrics
    from autopid.publish.predict import open_model

    out = []
    for model in (candidate, serving):
        if model is None:
            out.append(None)
            continue
        p = open_model(model, threads=threads, apply_selection=False)  # cache rows: already selected
        if p.threshold is None:
            raise ConfigError(f"{p.name}: no thresholds.json; cannot evaluate at its working point")
        out.append(held_out_metrics(p, ds, species, p.threshold, max_rows=max_rows, seed=seed))
    return out[0], out[1]  # type: ignore[return-value]
