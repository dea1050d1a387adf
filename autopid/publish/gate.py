"""The promotion gate: does a candidate model replace the one now serving?

Both models are evaluated on the same held-out data (:func:`evaluate_pair` does that;
:func:`decide` refuses metrics whose sample sizes differ). The candidate is promoted
only if the chosen metric improves by at least ``margin`` and no guard metric gets worse
beyond its tolerance. A guard reads one value, or one value per bin of the kinematic
variable (every bin must pass). With no serving model the candidate is promoted.

Metrics are dicts as :func:`autopid.publish.evaluation.held_out_metrics` writes them
(``{"mc": {...}, "data": {...}, "gap": {...}, "data_hidden_truth": {...}}``); paths are
dotted, e.g. ``mc.auc``, ``gap.gap``, ``mc.binned.background_efficiency_90``.

No hidden truth in any decision: the default efficiency-gap guard reads ``gap.gap``, the
MC efficiency (MC truth) minus the Data efficiency *estimated without truth* (template
fit, :mod:`autopid.estimate`). The gate never looks into ``data_hidden_truth`` (hidden
truth of simulated Data, for reports): a metric or guard path into it is refused, and the
key is dropped before any lookup. A guard whose value is missing (e.g. the Data
efficiency is not estimable: the dataset maps no ``l1_charge`` role) is reported as NOT
CHECKED, with the reason, in the decision and the log; ``required=True`` makes that block
the promotion instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from autopid._logging import get_logger
from autopid.errors import ConfigError

_log = get_logger(__name__)
HIDDEN_TRUTH_KEY = "data_hidden_truth"  # = autopid.evaluate.HIDDEN_TRUTH_KEY (not imported: keeps the gate lean)


def check_truth_free_path(path: str, what: str = "metric path") -> str:
    """Refuse a dotted path into the hidden truth of simulated Data."""
    if path.split(".", 1)[0] == HIDDEN_TRUTH_KEY:
        raise ConfigError(f"{what} {path!r} reads {HIDDEN_TRUTH_KEY}, the hidden truth of simulated Data: "
                          "reports only, never a promotion decision (use gap.gap, the truth-free estimate)")
    return path


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
        error_path: dotted path to the value's uncertainty (e.g. ``gap.gap_error``): the
            allowance grows to ``error_sigmas * sqrt(err_candidate^2 + err_serving^2)``.
        explain_path: dotted path to a text saying why the value is missing (shown).
        required: a missing value blocks the promotion (default: reported as NOT CHECKED).
        binomial: for binned efficiencies (bins with ``n`` rows, ``n_signal`` of them
            signal): the allowance of each bin grows to ``error_sigmas`` binomial errors of
            the difference, ``sqrt(2 p (1 - p) / N)`` with ``p`` the mean of the two values
            and ``N`` the bin's ``"background"`` (``n - n_signal``) or ``"signal"`` rows. Both
            models score the same rows, so the true error of the difference is smaller:
            this only keeps a bin with a handful of events (1 of 23 against 2 of 23) from
            deciding alone.
    """

    name: str
    path: str
    higher_is_better: bool
    tolerance: float = 0.0
    relative_tolerance: float = 0.0
    absolute_value: bool = False
    error_path: str | None = None
    error_sigmas: float = 1.0
    explain_path: str | None = None
    required: bool = False
    binomial: Literal["background", "signal"] | None = None

    def __post_init__(self) -> None:
        for p in (self.path, self.error_path, self.explain_path):
            if p is not None:
                check_truth_free_path(p, f"guard {self.name!r}: path")
        if self.error_sigmas < 0:
            raise ConfigError(f"guard {self.name!r}: error_sigmas must be >= 0, got {self.error_sigmas}")


DEFAULT_GUARDS: tuple[Guard, ...] = (
    Guard("|MC-Data efficiency gap| (Data efficiency estimated without truth)", "gap.gap", higher_is_better=False,
          tolerance=0.01, absolute_value=True, error_path="gap.gap_error", explain_path="gap.reason"),
    Guard("background efficiency at 90% signal efficiency (MC), per kinematic bin",
          "mc.binned.background_efficiency_90", higher_is_better=False, tolerance=0.005, relative_tolerance=0.10,
          binomial="background"),
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
    unchecked: list[str] = field(default_factory=list)  # guards that could not be checked, and why

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


def _truth_free(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics`` without the hidden truth of simulated Data (never read by the gate)."""
    return {k: v for k, v in metrics.items() if k != HIDDEN_TRUTH_KEY}


def _why(guard: Guard, candidate: Mapping[str, Any], serving: Mapping[str, Any], c: Any, s: Any) -> str:
    side = "candidate and serving model" if c is None and s is None else ("candidate" if c is None else "serving model")
    why = [str(w) for w in (_lookup(candidate, guard.explain_path) if guard.explain_path else None,
                            _lookup(serving, guard.explain_path) if guard.explain_path else None) if w]
    return f"{guard.path} missing or NaN for the {side}" + (f": {'; '.join(dict.fromkeys(why))}" if why else "")


def _check(guard: Guard, label: str | None, cand: Any, serv: Any, err: float = 0.0, why: str = "") -> GuardResult:
    c, s = _number(cand), _number(serv)
    if c is None or s is None:
        if guard.required:
            return GuardResult(guard.name, label, c, s, None, 0.0, False, f"NOT CHECKED, required: {why}")
        return GuardResult(guard.name, label, c, s, None, 0.0, True, f"NOT CHECKED: {why}")
    if guard.absolute_value:
        c, s = abs(c), abs(s)
    if math.isinf(s) and math.isinf(c) and (s > 0) == (c > 0):
        return GuardResult(guard.name, label, c, s, 0.0, 0.0, True)
    worse = (s - c) if guard.higher_is_better else (c - s)
    allowed = guard.tolerance if math.isinf(s) else max(guard.tolerance, guard.relative_tolerance * abs(s))
    note = ""
    if err > allowed:
        what = "binomial errors" if guard.binomial else "sigma of the estimates"
        allowed, note = err, f"allowance widened to {guard.error_sigmas:g} {what} ({err:.3g})"
    return GuardResult(guard.name, label, c, s, worse, allowed, not worse > allowed, note)


def _error(guard: Guard, candidate: Mapping[str, Any], serving: Mapping[str, Any]) -> float:
    if not guard.error_path:
        return 0.0
    ec, es = _number(_lookup(candidate, guard.error_path)), _number(_lookup(serving, guard.error_path))
    if ec is None or es is None:
        return 0.0
    return guard.error_sigmas * math.hypot(ec, es)


def _binomial_error(guard: Guard, bin_: Mapping[str, Any], serving_value: Any) -> float:
    if guard.binomial is None:
        return 0.0
    c, s = _number(bin_.get("value")), _number(serving_value)
    n, n_sig = bin_.get("n"), bin_.get("n_signal")
    if c is None or s is None or n is None or n_sig is None:
        return 0.0
    rows = int(n) - int(n_sig) if guard.binomial == "background" else int(n_sig)
    p = min(max((c + s) / 2, 0.0), 1.0)
    return guard.error_sigmas * math.sqrt(2 * p * (1 - p) / rows) if rows > 0 else 0.0


def _check_guard(guard: Guard, candidate: Mapping[str, Any], serving: Mapping[str, Any]) -> list[GuardResult]:
    cand, serv = _lookup(candidate, guard.path), _lookup(serving, guard.path)
    if isinstance(cand, list) or isinstance(serv, list):
        sbins = {(b.get("low"), b.get("high")): b.get("value") for b in (serv or [])}
        out = []
        for b in cand or []:
            key = (b.get("low"), b.get("high"))
            value, other = b.get("value"), sbins.get(key)
            out.append(_check(guard, f"[{key[0]:g}, {key[1]:g})", value, other, _binomial_error(guard, b, other),
                              why=f"{guard.path} bin missing or NaN"))
        return out
    return [_check(guard, None, cand, serv, _error(guard, candidate, serving),
                   _why(guard, candidate, serving, _number(cand), _number(serv)))]


def decide(candidate: Mapping[str, Any], serving: Mapping[str, Any] | None, *, metric: str = "mc.auc",
           margin: float = 0.002, higher_is_better: bool = True,
           guards: Sequence[Guard] = DEFAULT_GUARDS) -> GateDecision:
    """Promote ``candidate`` over ``serving`` (metrics dicts) or not, and why.

    Reads no hidden truth: ``data_hidden_truth`` is dropped from both dicts first and a
    ``metric`` into it is refused."""
    if margin < 0:
        raise ConfigError(f"margin must be >= 0, got {margin}")
    check_truth_free_path(metric, "promotion metric")
    for g in guards:
        g.__post_init__()  # a guard built with object.__setattr__ tricks is still checked
    candidate = _truth_free(candidate)
    serving = None if serving is None else _truth_free(serving)
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
    unchecked = [f"{r.name}{f' in bin {r.bin}' if r.bin else ''}: {r.note.split(': ', 1)[-1]}"
                 for r in results if r.worse_by is None and r.note.startswith("NOT CHECKED")]
    improved = improvement >= margin
    parts = [f"{metric}: candidate {c:.5g} vs serving {s:.5g} (improvement {improvement:+.3g}, "
             f"needed >= {margin:g}) -> {'ok' if improved else 'not enough'}"]
    for r in failed:
        where = f" in bin {r.bin}" if r.bin else ""
        if r.worse_by is None:
            parts.append(f"guard {r.name}{where} {r.note}")
            continue
        parts.append(f"guard {r.name}{where} worse by {r.worse_by:.3g} (allowed {r.allowed:.3g}): "
                     f"candidate {r.candidate:.5g} vs serving {r.serving:.5g}")
    promote = improved and not failed
    checked = sum(1 for r in results if r.worse_by is not None)
    head = "promote" if promote else "keep the serving model"
    reason = f"{head}: " + "; ".join(parts) + (f"; {checked} guard checks passed" if promote else "")
    for u in unchecked:
        if not any(u.startswith(r.name) for r in failed):
            reason += f"; guard NOT CHECKED: {u}"
            _log.warning("promotion gate: guard NOT CHECKED: %s", u)
    return GateDecision(promote, reason, metric, c, s, improvement, margin, results, unchecked)


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
