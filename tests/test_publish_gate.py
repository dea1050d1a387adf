"""The promotion gate on metrics dicts shaped like held_out_metrics' output, and on real
held-out metrics of simulated AMS Data: no decision reads the hidden truth."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from autopid.errors import ConfigError
from autopid.publish.gate import DEFAULT_GUARDS, Guard, decide

GAP = DEFAULT_GUARDS[0].name


def _metrics(auc: float = 0.90, gap: float = 0.02, bkg: tuple[float, ...] = (0.10, 0.05, 0.20)) -> dict[str, Any]:
    bins = [{"low": lo, "high": hi, "n": 10_000, "n_signal": 3_000, "value": v}
            for (lo, hi), v in zip(((0.1, 0.5), (0.5, 1.5), (1.5, 10.0)), bkg)]
    return {"mc": {"auc": auc, "n": 1000, "binned": {"background_efficiency_90": bins}},
            "data": {"n": 900, "n_selected": 300}, "gap": {"gap": gap, "gap_error": 0.0, "estimable": True},
            "data_hidden_truth": {"auc": auc - 0.02, "efficiency": 0.5, "gap": {"gap": gap + 0.3}}}


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
    assert len(bad) == 1 and bad[0].name == GAP and bad[0].worse_by == pytest.approx(0.03)
    assert "efficiency gap" in d.reason and "worse by 0.03" in d.reason


def test_a_worse_background_rejection_in_one_bin_blocks_promotion() -> None:
    d = decide(_metrics(auc=0.95, bkg=(0.10, 0.08, 0.15)), _metrics(), margin=0.01)
    assert not d.promote
    bad = [g for g in d.guards if not g.ok]
    assert [g.bin for g in bad] == ["[0.5, 1.5)"] and "bin [0.5, 1.5)" in d.reason
    # within the tolerance (10% relative or 0.005 absolute) it passes
    assert decide(_metrics(auc=0.95, bkg=(0.104, 0.054, 0.2)), _metrics(), margin=0.01).promote


def test_a_bin_with_a_handful_of_background_events_does_not_decide_alone() -> None:
    """1 of 23 background events selected against 2 of 23: noise, not a worse model; the
    same efficiencies on 7,000 background events are a real loss."""
    def few(values: tuple[float, ...], n: int) -> dict[str, Any]:
        m = _metrics(auc=0.95 if values[1] > 0.05 else 0.90, bkg=values)
        for b in m["mc"]["binned"]["background_efficiency_90"]:
            b.update(n=n + 77, n_signal=77)
        return m

    small = decide(few((0.10, 2 / 23, 0.20), 23), few((0.10, 1 / 23, 0.20), 23), margin=0.01)
    assert small.promote, small.reason
    widened = next(g for g in small.guards if g.bin == "[0.5, 1.5)")
    assert widened.worse_by == pytest.approx(1 / 23) and widened.allowed == pytest.approx(
        (2 * 1.5 / 23 * (1 - 1.5 / 23) / 23) ** 0.5) and "binomial" in widened.note
    large = decide(few((0.10, 2 / 23, 0.20), 7_000), few((0.10, 1 / 23, 0.20), 7_000), margin=0.01)
    assert not large.promote and [g.bin for g in large.guards if not g.ok] == ["[0.5, 1.5)"]
    # a guard without the binomial allowance keeps its fixed tolerance
    strict = Guard("bkg", "mc.binned.background_efficiency_90", higher_is_better=False, tolerance=0.005)
    assert not decide(few((0.10, 2 / 23, 0.20), 23), few((0.10, 1 / 23, 0.20), 23), margin=0.01,
                      guards=[strict]).promote


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
    # absent on both sides: not checked, and the decision says so
    assert any(g.note.startswith("NOT CHECKED") for g in d.guards if g.name == "purity")
    assert "guard NOT CHECKED: purity" in d.reason and d.unchecked
    nan = _metrics(auc=float("nan"))
    assert not decide(nan, _metrics()).promote


# --- no hidden truth in any decision -------------------------------------------------------


def test_the_hidden_truth_never_changes_a_decision() -> None:
    cand, serv = _metrics(auc=0.93, gap=0.02), _metrics(gap=0.015)
    base = decide(cand, serv, margin=0.01)
    for change in ({"auc": 0.0, "gap": {"gap": 0.9}}, {}, None):
        c2, s2 = copy.deepcopy(cand), copy.deepcopy(serv)
        if change is None:
            del c2["data_hidden_truth"], s2["data_hidden_truth"]
        else:
            c2["data_hidden_truth"] = change
        assert decide(c2, s2, margin=0.01).to_dict() == base.to_dict()


def test_paths_into_the_hidden_truth_are_refused() -> None:
    with pytest.raises(ConfigError, match="hidden truth"):
        decide(_metrics(), _metrics(), metric="data_hidden_truth.auc")
    with pytest.raises(ConfigError, match="hidden truth"):
        Guard("Data efficiency", "data_hidden_truth.efficiency", higher_is_better=True)
    with pytest.raises(ConfigError, match="hidden truth"):
        Guard("gap", "gap.gap", higher_is_better=False, error_path="data_hidden_truth.gap.gap")


def test_an_inestimable_gap_is_reported_loudly_not_skipped_silently() -> None:
    cand, serv = _metrics(auc=0.95), _metrics()
    for m in (cand, serv):
        m["gap"] = {"estimable": False, "gap": None,
                    "reason": "dataset 'x' maps no role 'l1_charge' (needed: l1_charge)"}
    d = decide(cand, serv, margin=0.01)
    assert d.promote  # by default a guard that cannot be checked does not block ...
    assert "guard NOT CHECKED: " + GAP in d.reason and "maps no role 'l1_charge'" in d.reason  # ... but says so
    assert len(d.unchecked) == 1 and "l1_charge" in d.unchecked[0]
    gap = next(g for g in d.guards if g.name == GAP)
    assert gap.worse_by is None and gap.note.startswith("NOT CHECKED")
    strict = [Guard(GAP, "gap.gap", higher_is_better=False, tolerance=0.01, absolute_value=True,
                    explain_path="gap.reason", required=True)]
    d = decide(cand, serv, margin=0.01, guards=strict)
    assert not d.promote and "NOT CHECKED, required" in d.reason and "l1_charge" in d.reason


def test_the_estimate_uncertainty_widens_the_gap_allowance() -> None:
    cand, serv = _metrics(auc=0.95, gap=0.05), _metrics(gap=0.02)
    assert not decide(cand, serv, margin=0.01).promote  # worse by 0.03 > 0.01
    cand["gap"]["gap_error"] = serv["gap"]["gap_error"] = 0.03  # 1 sigma of the difference: 0.042
    d = decide(cand, serv, margin=0.01)
    assert d.promote
    gap = next(g for g in d.guards if g.name == GAP)
    assert gap.allowed == pytest.approx(0.03 * 2**0.5) and "widened" in gap.note


# --- real held-out metrics of simulated AMS Data -------------------------------------------

class _Scores:
    """A stand-in for an exported model: a fixed, truth-free function of the features
    (not of the L1 charge)."""

    def __init__(self, weight: float) -> None:
        self.weight = weight
        self.spec = {"columns": ["tof_charge_upper", "trk_charge_inner",
                                 *[f"trk_nclusters[{layer}][{side}]" for layer in (1, 2, 3) for side in (0, 1)]]}
        self.threshold = -0.6

    def predict(self, frame: Any, domain: str = "mc") -> Any:
        from types import SimpleNamespace

        import numpy as np

        extra = sum(frame[c].fillna(0).to_numpy() for c in self.spec["columns"][2:])
        score = (-np.abs(frame["tof_charge_upper"].fillna(0).to_numpy() - 15.0) - self.weight * extra
                 - 0.3 * np.abs(frame["trk_charge_inner"].to_numpy() - 15.0))
        return SimpleNamespace(score=score)


@pytest.fixture(scope="module")
def ams_gate_ds(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from autopid.data import PreprocessedDataset
    from autopid.preprocess import preprocess
    from autopid.simulate import AMS, AmsSimConfig, simulate_period
    from autopid.testing import dataset_for

    root = tmp_path_factory.mktemp("ams_gate")
    simulate_period(AMS, AmsSimConfig(), root / "sim", "P2026a", runs=2, events_per_run=30000, seed=11)
    cfg = dataset_for("ams", root / "sim", chunk_size=20000, split={"train": 0.3, "validation": 0.2, "test": 0.5, "seed": 0})
    return PreprocessedDataset(preprocess(cfg, cache_root=root / "cache").path)


def test_gate_decision_is_identical_with_the_hidden_truth_scrambled(ams_gate_ds: Any,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from autopid.publish.evaluation import held_out_metrics

    ds = ams_gate_ds
    cand_p, serv_p = _Scores(0.1), _Scores(0.4)

    def run() -> tuple[Any, dict[str, Any], dict[str, Any]]:
        c = held_out_metrics(cand_p, ds, "phosphorus", cand_p.threshold, max_rows=None)
        s = held_out_metrics(serv_p, ds, "phosphorus", serv_p.threshold, max_rows=None)
        return decide(c, s, margin=0.0), c, s

    d1, c1, _ = run()
    gap = c1["gap"]
    assert gap["estimable"], gap["reason"]
    assert "L1 charge" in gap["method"] and gap["efficiency_mc"] is not None
    assert {"gap", "gap_error", "efficiency_data", "efficiency_data_error"} <= set(gap)
    assert "auc" not in c1["data"]  # the Data side a decision may read carries no truth-based number
    assert c1["data_hidden_truth"]["estimate_check"]["efficiency_in_estimate_region"] is not None
    assert any(g.name == GAP and g.worse_by is not None for g in d1.guards)  # the gap guard was checked

    truth = ds.evaluation_truth

    def scrambled(split: str, domain: str = "data") -> Any:
        t = truth(split, domain)
        if domain == "data":
            rng = np.random.default_rng(5)
            for col in [c for c in t.columns if c.startswith("hidden_")]:
                t[col] = rng.permutation(t[col].to_numpy())
        return t

    monkeypatch.setattr(ds, "evaluation_truth", scrambled)
    d2, c2, _ = run()
    assert c2["data_hidden_truth"]["efficiency"] != c1["data_hidden_truth"]["efficiency"]  # the truth did change
    assert c2["gap"] == c1["gap"] and c2["data"] == c1["data"]
    assert d2.to_dict() == d1.to_dict()
