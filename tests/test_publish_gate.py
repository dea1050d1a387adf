"""The promotion gate on metrics dicts shaped like held_out_metrics' output."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from autopid.errors import ConfigError
from autopid.publish.gate import DEFAULT_GUARDS, Guard, decide


def _metrics(auc: float = 0.90, gap: float = 0.02, bkg: tuple[float, ...] = (0.10, 0.05, 0.20)) -> dict[str, Any]:
    bins = [{"low": lo, "high": hi, "n": 100, "n_signal": 30, "value": v}
            for (lo, hi), v in zip(((0.1, 0.5), (0.5, 1.5), (1.5, 10.0)), bkg)]
    return {"mc": {"auc": auc, "n": 1000, "binned": {"background_efficiency_90": bins}},
            "data": {"auc": auc - 0.02, "n": 900}, "gap": {"gap": gap}}


def test_promotes_a_clear_improvement_with_guards_intact() -> None:
    d = decide(_metrics(auc=0.93, gap=-0.025, bkg=(0.09, 0.05, 0.21)), _metrics(), margin=0.01)
    assert d.promote and d.improvement == pytest.approx(0.03)
    assert d.reason.startswith("promote:") and "guard checks passed" in d.reason
    assert len(d.guards) == 4 and all(g.ok for g in d.guards)


def test_keeps_the_serving_model_below_the_margin() -> None:
    d = decide(_metrics(auc=0.905), _metrics(), margin=0.01)
    assert not d.promote and "not enough" in d.reason and d.candidate == 0.905 and d.serving == 0.90


def test_a_worse_efficiency_gap_blocks_promotion() -> None:
    d = decide(_metrics(auc=0.95, gap=-0.05), _metrics(gap=0.02), margin=0.01)
    assert not d.promote
    bad = [g for g in d.guards if not g.ok]
    assert len(bad) == 1 and bad[0].name == "|MC-Data efficiency gap|" and bad[0].worse_by == pytest.approx(0.03)
    assert "efficiency gap" in d.reason and "worse by 0.03" in d.reason


def test_a_worse_background_rejection_in_one_bin_blocks_promotion() -> None:
    d = decide(_metrics(auc=0.95, bkg=(0.10, 0.08, 0.15)), _metrics(), margin=0.01)
    assert not d.promote
    bad = [g for g in d.guards if not g.ok]
    assert [g.bin for g in bad] == ["[0.5, 1.5)"] and "bin [0.5, 1.5)" in d.reason
    # within the tolerance (10% relative or 0.005 absolute) it passes
    assert decide(_metrics(auc=0.95, bkg=(0.104, 0.054, 0.2)), _metrics(), margin=0.01).promote


def test_no_serving_model_promotes_and_mismatched_data_is_refused() -> None:
    assert decide(_metrics(), None).promote
    other = copy.deepcopy(_metrics())
    other["mc"]["n"] = 999
    with pytest.raises(ConfigError, match="same held-out data"):
        decide(_metrics(), other)
    with pytest.raises(ConfigError):
        decide(_metrics(), _metrics(), margin=-1)


def test_custom_metric_direction_and_missing_values() -> None:
    lower = Guard("purity", "mc.purity", higher_is_better=True, tolerance=0.0)
    cand, serv = _metrics(), _metrics()
    cand["gap"]["gap"], serv["gap"]["gap"] = 0.01, 0.03
    d = decide(cand, serv, metric="gap.gap", higher_is_better=False, margin=0.01, guards=[*DEFAULT_GUARDS, lower])
    assert d.promote and d.improvement == pytest.approx(0.02)
    assert any("skipped" in g.note for g in d.guards if g.name == "purity")  # absent on both sides
    nan = _metrics(auc=float("nan"))
    assert not decide(nan, _metrics()).promote
