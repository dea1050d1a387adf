"""``autopid benchmark``: the record schema of benchmark.json, every method for its
experiment, the Markdown and plots, the second-track veto against the MDA, and a dataset
YAML with other branch names (found through its roles)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from autopid.benchmark import (
    PRESETS,
    cases_from_configs,
    run_benchmark,
    validate_records,
)
from autopid.benchmark.records import (
    DOMAINS,
    FRAG_BINS,
    KEYS,
    METHODS,
    METRICS,
    parse_bin,
)
from autopid.cli import main
from autopid.config.dataset import DatasetConfig, builtin_dataset_path

EXPECTED = {
    "alice": {"fse", "nsigma", "xgboost", "mlp_imputation"},
    "ams": {"mda", "mda_no_adaptation", "cut", "xgboost", "mlp_imputation"},
}
SPECIES = {"alice": {"pion", "kaon", "proton"}, "ams": {"phosphorus", "sulfur"}}
MODELS = {"fse", "mda", "mda_no_adaptation"}


def _check_schema(records: list[dict[str, Any]], *, seeds: int, methods: set[str]) -> None:
    """The issue's schema, checked by hand (not only by validate_records)."""
    assert isinstance(records, list) and records
    for r in records:
        assert list(r) == list(KEYS), r  # exactly these keys, in this order
        assert isinstance(r["experiment"], str) and isinstance(r["species"], str)
        assert r["charge"] in (None, 1, -1) and not isinstance(r["charge"], bool)
        assert r["method"] in methods
        assert r["domain"] in DOMAINS
        assert r["metric"] in METRICS
        for k in ("value", "std"):
            v = r[k]
            assert v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)), r
        if seeds == 1:
            assert r["std"] is None
        if r["std"] is not None:
            assert r["std"] >= 0
        b = r["bin"]
        assert b is None or b in FRAG_BINS.values() or (b.startswith("[") and b.endswith(")")
                                                         and parse_bin(b)[0] < parse_bin(b)[1]), b
        if r["metric"] in ("efficiency_gap", "domain_accuracy"):
            assert r["domain"] == "data"
        if r["metric"] in ("f1", "efficiency", "purity", "auc", "domain_accuracy") and r["value"] is not None:
            assert 0.0 <= r["value"] <= 1.0, r
    keys = [tuple(r[k] for k in KEYS if k not in ("value", "std")) for r in records]
    assert len(keys) == len(set(keys)), "duplicate records"


def _get(records: list[dict[str, Any]], **kw: Any) -> list[dict[str, Any]]:
    return [r for r in records if all(r[k] == v for k, v in kw.items())]


def test_validate_records_rejects_what_the_schema_forbids() -> None:
    good = {"experiment": "alice", "species": "pion", "charge": 1, "method": "fse", "domain": "mc",
            "metric": "f1", "value": 0.9, "std": 0.01, "bin": "[0.5,0.8)"}
    validate_records([good], seeds=2)
    bad = [
        {**good, "method": "bdt"}, {**good, "domain": "both"}, {**good, "metric": "accuracy"},
        {**good, "value": float("nan")}, {**good, "value": float("inf")}, {**good, "charge": 2},
        {**good, "bin": "0.5-0.8"}, {**good, "bin": "frag:somewhere"}, {**good, "bin": "[0.8,0.5)"},
        {k: v for k, v in good.items() if k != "std"}, {**good, "extra": 1},
    ]
    for rec in bad:
        with pytest.raises(ValueError):
            validate_records([rec], seeds=2)
    with pytest.raises(ValueError, match="one seed"):
        validate_records([good], seeds=1)
    with pytest.raises(ValueError, match="duplicate"):
        validate_records([good, dict(good)], seeds=2)
    validate_records([{**good, "method": "second_track_veto"}], seeds=2, extra=True)
    with pytest.raises(ValueError):
        validate_records([good], seeds=2, extra=True)


@pytest.mark.slow
def test_benchmark_command_writes_the_records_tables_and_plots(tmp_path: Path) -> None:
    """The whole command on tiny simulated data (the --quick pipeline at test size):
    ALICE (pion, kaon, proton) and AMS (phosphorus, sulfur), 2 seeds, 2 workers."""
    out = tmp_path / "bench"
    assert main(["benchmark", "--tiny", "--seeds", "2", "--workers", "2", "--out", str(out), "-q"]) == 0
    records = json.loads((out / "benchmark.json").read_text())
    extra = json.loads((out / "extra.json").read_text())
    _check_schema(records, seeds=2, methods=set(METHODS))
    _check_schema(extra, seeds=2, methods={"second_track_veto", "irreducible_limit"})

    # every method for its experiment, every species, nothing else
    for exp, methods in EXPECTED.items():
        assert {r["method"] for r in _get(records, experiment=exp)} == methods
        assert {r["species"] for r in _get(records, experiment=exp)} == SPECIES[exp]
        for sp in SPECIES[exp]:
            for m in methods:
                got = {(r["domain"], r["metric"]) for r in _get(records, experiment=exp, species=sp, method=m,
                                                                   bin=None, charge=None)}
                need = {("mc", "f1"), ("mc", "efficiency"), ("mc", "purity"), ("mc", "auc"),
                        ("data", "efficiency"), ("data", "purity"), ("data", "rejection_at_90"),
                        ("data", "efficiency_gap")}
                if m in MODELS:
                    need.add(("data", "domain_accuracy"))
                assert need <= got, (exp, sp, m, need - got)
                # two seeds: the integrated MC numbers carry their spread
                for metric in ("f1", "auc"):
                    (r,) = _get(records, experiment=exp, species=sp, method=m, domain="mc", metric=metric,
                                bin=None, charge=None)
                    assert r["value"] is not None and r["std"] is not None, r
    assert {r["experiment"] for r in records} == set(EXPECTED)
    assert {(r["experiment"], r["method"]) for r in extra} == {("ams", "second_track_veto"),
                                                               ("ams", "irreducible_limit")}
    assert {r["species"] for r in extra} == SPECIES["ams"]
    # the irreducible limit: one integrated value per species and domain, no spread, and no
    # selection beats it on the same rows (up to the 90 % cut's granularity)
    limits = []
    for sp in SPECIES["ams"]:
        for domain in ("mc", "data"):
            (lim,) = _get(extra, species=sp, method="irreducible_limit", domain=domain)
            assert lim["metric"] == "rejection_at_90" and lim["bin"] is None and lim["std"] is None
            limits.append(lim["value"])
            if lim["value"] is None:  # no background that interacted above L1 in these test rows
                continue
            assert lim["value"] > 1
            for m in ("mda", "cut", "xgboost"):
                (r,) = _get(records, experiment="ams", species=sp, method=m, domain=domain,
                            metric="rejection_at_90", bin=None, charge=None)
                assert r["value"] is None or r["value"] <= 1.25 * lim["value"], (sp, domain, m, r, lim)
    assert any(v is not None for v in limits)

    # ALICE split by charge, AMS not; momentum / rigidity bins; AMS fragmentation categories
    assert {r["charge"] for r in _get(records, experiment="alice")} == {None, 1, -1}
    assert {r["charge"] for r in _get(records, experiment="ams")} == {None}
    alice_bins = {r["bin"] for r in _get(records, experiment="alice") if r["bin"]}
    assert alice_bins == {"[0.1,0.5)", "[0.5,0.8)", "[0.8,1.5)", "[1.5,3)", "[3,10)"}
    ams_bins = {r["bin"] for r in _get(records, experiment="ams") if r["bin"] and r["bin"].startswith("[")}
    assert ams_bins == {"[2,5)", "[5,10)", "[10,30)", "[30,100)", "[100,2000)"}
    frag = {r["bin"] for r in _get(records, experiment="ams", metric="rejection_at_90") if r["bin"]
            and r["bin"].startswith("frag:")}
    assert {"frag:above_l1", "frag:l1_l2"} <= frag
    assert not [r for r in _get(records, experiment="alice") if r["bin"] and r["bin"].startswith("frag:")]
    assert {r["bin"] for r in extra if r["bin"] and r["bin"].startswith("frag:")} >= {"frag:above_l1", "frag:l1_l2"}

    # the second-track veto alone cannot reach the MDA's rejection (MC test split, 90 % signal)
    for sp in SPECIES["ams"]:
        (veto,) = _get(extra, species=sp, method="second_track_veto", domain="mc", metric="rejection_at_90",
                       bin=None)
        (mda,) = _get(records, experiment="ams", species=sp, method="mda", domain="mc", metric="rejection_at_90",
                      bin=None)
        assert veto["value"] is not None
        assert mda["value"] is None or mda["value"] > veto["value"], (sp, veto, mda)
        # above L1 the nucleus already arrives as the fragment: the veto sees nothing
        above = _get(extra, species=sp, domain="mc", metric="rejection_at_90", bin="frag:above_l1")
        assert above and above[0]["value"] < 1.5

    md = (out / "benchmark.md").read_text()
    assert md.startswith("# autopid benchmark")
    assert "command: `autopid benchmark --tiny" in md and "date: " in md
    assert "hidden truth, evaluation only" in md and "[lo,hi)" in md
    assert "| species | FSE+attention | n-sigma | XGBoost | MLP (imputation) |" in md
    assert "| species | MDA | MDA w/o adaptation | classic cut | XGBoost | MLP (imputation) |" in md
    assert "veto only" in md and "does not reach the MDA's rejection" in md
    assert "Irreducible limit" in md and "twice the classic cut's" in md
    assert "FAILED" not in md
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert pngs == sorted(f"{e}_{s}_efficiency_purity.png" for e, ss in SPECIES.items() for s in ss)
    assert all(f"plots/{p}" in md for p in pngs)

    # a second run reuses the simulated files and the cache, and one seed has no std
    assert main(["benchmark", "--tiny", "--seeds", "1", "--workers", "1", "--no-plots", "--out", str(out),
                 "-q"]) == 0
    records1 = json.loads((out / "benchmark.json").read_text())
    _check_schema(records1, seeds=1, methods=set(METHODS))
    assert "simulation: alice reused, ams reused" in (out / "benchmark.md").read_text()


# ALICE branches renamed the way another framework might call them
RENAMED = {"fTPCSignal": "tpc_dedx", "fTRDSignal": "trd_signal", "fTRDPattern": "trd_pattern",
           "fTOFSignal": "tof_time_ps", "fBeta": "tof_beta_meas", "fP": "p_tot", "fPt": "p_t", "fPx": "px",
           "fPy": "py", "fPz": "pz", "fSign": "q_sign", "fX": "x_trk", "fY": "y_trk", "fZ": "z_trk",
           "fAlpha": "alpha_trk", "fTrackType": "track_kind", "fTPCNClsShared": "tpc_shared",
           "fDcaXY": "dca_xy", "fDcaZ": "dca_z", "fTPCNClsFound": "tpc_ncls", "fLength": "track_len",
           "fPdgCode": "pdg", "hidden_fPdgCode": "hidden_pdg", "fTPCNClsCrossedRows": "tpc_rows", "fEta": "eta",
           "fIsPhysicalPrimary": "is_primary", "hidden_fIsPhysicalPrimary": "hidden_is_primary"}


def _renamed_dataset(src_root: Path, dst_root: Path) -> DatasetConfig:
    """The ALICE-like files of ``src_root`` rewritten with other branch names, and a
    dataset YAML mapping them (features, auxiliary, roles, truth, cuts)."""
    import uproot

    from autopid.simulate._common import write_root

    for path in sorted(src_root.glob("LHC26a/*/*.root")):
        with uproot.open(path) as fh:
            arrays = fh["O2pidtracks"].arrays(library="np")
        out = {RENAMED.get(k, k): v for k, v in arrays.items()}
        write_root(dst_root / path.parent.name / path.name, "pid", out)
    raw = yaml.safe_load(builtin_dataset_path("alice").read_text())

    def rn(value: Any) -> Any:
        if isinstance(value, str):
            return RENAMED.get(value, value)
        if isinstance(value, list):
            return [rn(v) for v in value]
        if isinstance(value, dict):
            return {(RENAMED.get(k, k) if k in RENAMED else k): rn(v) for k, v in value.items()}
        return value

    raw = rn(raw)
    raw.update(name="renamed_tracks", experiment="other", targets=["kaon"],
               sources=[{"domain": d, "files": [str(dst_root / d / "*.root")], "tree": "pid"} for d in ("mc", "data")])
    assert raw["roles"]["momentum"] == "p_tot" and raw["roles"]["tpc_signal"] == "tpc_dedx"
    assert "fP" not in json.dumps(raw)
    return DatasetConfig.model_validate(raw)


@pytest.mark.slow
def test_a_dataset_with_other_branch_names_runs_through_its_roles(alice_root: Path, tmp_path: Path) -> None:
    cfg = _renamed_dataset(alice_root, tmp_path / "files")
    yaml_path = tmp_path / "renamed.yaml"
    yaml_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    preset = PRESETS["tiny"]
    out = tmp_path / "bench"
    from autopid.benchmark import user_cases

    cases = user_cases([str(yaml_path)])
    res = run_benchmark(cases, out, preset=preset, seeds=1, workers=1, cache_dir=tmp_path / "cache", plots=False)
    assert not res.failures, [j.error for j in res.failures]
    records = json.loads((out / "benchmark.json").read_text())
    _check_schema(records, seeds=1, methods=set(METHODS))
    assert {r["experiment"] for r in records} == {"renamed_tracks"}
    assert {r["species"] for r in records} == {"kaon"}
    assert {r["method"] for r in records} == {"fse", "nsigma", "xgboost", "mlp_imputation"}
    # charge from the role charge_sign (branch q_sign), bins from the role momentum (p_tot)
    assert {r["charge"] for r in records} == {None, 1, -1}
    bins = sorted({r["bin"] for r in records if r["bin"]}, key=lambda b: parse_bin(b)[0])
    assert len(bins) >= 3
    edges = [parse_bin(b) for b in bins]
    assert all(a[1] == b[0] for a, b in zip(edges, edges[1:]))  # contiguous
    nsig = _get(records, method="nsigma", domain="mc", metric="auc", bin=None, charge=None)
    assert nsig and nsig[0]["value"] > 0.7
    assert json.loads((out / "extra.json").read_text()) == []

    # the same files under the built-in names give the same n-sigma numbers: only names differ
    raw = yaml.safe_load(builtin_dataset_path("alice").read_text())
    raw.update(targets=["kaon"], sources=[{"domain": d, "files": [str(alice_root / "LHC26a" / d / "*.root")],
                                             "tree": "O2pidtracks"} for d in ("mc", "data")])
    same = cases_from_configs([(DatasetConfig.model_validate(raw), "built-in names")])
    res2 = run_benchmark(same, tmp_path / "bench2", preset=preset, seeds=1, workers=1,
                         cache_dir=tmp_path / "cache", plots=False)
    r2 = _get(res2.records, method="nsigma", domain="mc", metric="auc", bin=None, charge=None)
    assert np.isclose(r2[0]["value"], nsig[0]["value"])


def test_a_dataset_without_roles_skips_the_classic_selection_with_a_note(tmp_path: Path) -> None:
    from autopid.benchmark import methods_for

    raw = yaml.safe_load(builtin_dataset_path("alice").read_text())
    raw.pop("roles", None)
    raw.pop("auxiliary", None)
    raw.update(name="no_roles", experiment="other")
    (case,) = cases_from_configs([(DatasetConfig.model_validate(raw), "test")])
    assert methods_for(case) == ["fse", "xgboost", "mlp_imputation"]


def test_the_fixed_model_configurations_are_the_search_spaces_bases() -> None:
    """The benchmark's FSE and MDA are the bases of search_spaces/{fse,mda}.yaml."""
    from autopid.benchmark.cases import FSE_BEST, MDA_BEST

    root = Path(__file__).resolve().parents[1] / "search_spaces"
    for name, fixed in (("fse", FSE_BEST), ("mda", MDA_BEST)):
        base = yaml.safe_load((root / f"{name}.yaml").read_text())["base"]
        assert fixed["model"] == base["model"]
        assert fixed["training"] == base["training"]
    assert PRESETS["quick"].fse == FSE_BEST and PRESETS["quick"].mda == MDA_BEST
    mda_space = yaml.safe_load((root / "mda.yaml").read_text())
    assert MDA_BEST["domain_penalty"] == mda_space["objective"]["domain_penalty"]


def test_the_working_point_is_taken_on_every_validation_row(alice_ds: Any) -> None:
    # training validates on max_eval_rows; the cut, taken once, must use the whole split
    from autopid.benchmark.methods import training_frames, training_spec, working_point_rows

    spec = training_spec("fse", PRESETS["tiny"], 0, 1)
    frames, _ = training_frames(alice_ds, "proton", spec)
    rows = working_point_rows(alice_ds, "proton")
    n_val = alice_ds.manifest["splits"]["validation"]["mc"]["rows"]
    assert len(rows) == n_val > len(frames.validation)
    assert 0 < rows["y"].mean() < 0.3  # the natural composition, not a resampled mix


@pytest.mark.slow
def test_real_data_without_truth_is_scored_on_mc_only(alice_root: Path, tmp_path: Path) -> None:
    """Real Data have no truth: the benchmark scores every method on MC and writes no
    Data record instead of failing on the missing labels."""
    raw = yaml.safe_load(builtin_dataset_path("alice").read_text())
    raw["truth"] = {"label": {"mc": "fPdgCode"}, "extra": {"primary": {"mc": "fIsPhysicalPrimary"}}}
    raw.update(name="real_data", targets=["kaon"],
               sources=[{"domain": d, "files": [str(alice_root / "LHC26a" / d / "*.root")], "tree": "O2pidtracks"}
                        for d in ("mc", "data")])
    cases = cases_from_configs([(DatasetConfig.model_validate(raw), "no Data truth")])
    res = run_benchmark(cases, tmp_path / "bench", preset=PRESETS["tiny"], seeds=1, workers=1,
                        cache_dir=tmp_path / "cache", plots=False)
    assert not res.failures, [j.error for j in res.failures]
    records = json.loads((tmp_path / "bench" / "benchmark.json").read_text())
    assert {r["method"] for r in records} == {"fse", "nsigma", "xgboost", "mlp_imputation"}
    assert {r["domain"] for r in records} == {"mc"}
    assert _get(records, method="xgboost", domain="mc", metric="auc", bin=None, charge=None)[0]["value"] > 0.7
