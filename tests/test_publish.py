"""Publishing with real (small) simulated data: ONNX export and parity, batch inference,
publish/resolve/revoke through the registry, corruption, and the CLI.

Models are trained for one epoch without Ray (autopid.train.fit) on the conftest caches.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch

from autopid.cli import main
from autopid.config import dump_yaml
from autopid.data import PreprocessedDataset
from autopid.data.dataset import SPLITS
from autopid.errors import AutopidError, ConfigError, InputError
from autopid.features import expand_columns
from autopid.publish import onnx_export, parity
from autopid.publish.gate import decide, evaluate_pair
from autopid.publish.onnx_export import ExportResult, export_model
from autopid.publish.parity import ParityError
from autopid.publish.predict import Predictor, predict
from autopid.publish.publisher import publish_model
from autopid.publish.registry import Registry
from autopid.simulate import ALICE, AMS, AliceSimConfig, AmsSimConfig, read_period_manifest, simulate_period
from autopid.train import artifacts, core
from autopid.train.config import TrainConfig
from autopid.train.fit import fit

FSE_PARAMS = {"embed_channels": [32, 16], "ff_channels": 32, "num_layers": 1, "pool_channels": 16,
              "classifier_channels": 16}
MDA_PARAMS = {"token_channels": 16, "gnn_hidden": 16, "gnn_layers": 2, "cnn_channels": 4, "mlp_hidden": 16,
              "classifier_channels": 16}


def _train(ds: PreprocessedDataset, name: str, family: str, species: str, params: dict, lambda_max: float,
           out: Path) -> Path:
    torch.set_num_threads(1)
    cfg = TrainConfig(dataset=name, species=species, model={"family": family, "params": params},
                      training={"epochs": 1, "max_train_rows": 800, "max_eval_rows": 400, "batch_size": 64,
                                "lambda_max": lambda_max})
    model, _ = fit(cfg, ds)
    out.mkdir(parents=True, exist_ok=True)
    artifacts.save_atomic(artifacts.model_payload(model, cfg, ds), out / "model.pt")
    # a training run directory as `autopid train` leaves it (what publishing reads)
    (out / "config.yaml").write_text(dump_yaml(cfg))
    (out / "result.json").write_text(json.dumps({"cache": str(ds.path), "cache_key": ds.manifest["key"]}))
    return out / "model.pt"


@pytest.fixture(scope="module")
def fse_pt(alice_ds: PreprocessedDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(alice_ds, "alice", "fse", "proton", FSE_PARAMS, 0.0, tmp_path_factory.mktemp("run-fse"))


@pytest.fixture(scope="module")
def mda_pt(ams_ds: PreprocessedDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # trained with the domain head, which the export must drop
    return _train(ams_ds, "ams", "mda", "phosphorus", MDA_PARAMS, 0.5, tmp_path_factory.mktemp("run-mda"))


@pytest.fixture(scope="module")
def fse_export(fse_pt: Path, alice_ds: PreprocessedDataset, tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    return export_model(fse_pt, alice_ds, tmp_path_factory.mktemp("exports") / "fse")


@pytest.fixture(scope="module")
def mda_export(mda_pt: Path, ams_ds: PreprocessedDataset, tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    return export_model(mda_pt, ams_ds, tmp_path_factory.mktemp("exports") / "mda")


def _cache_rows(ds: PreprocessedDataset, domain: str) -> pd.DataFrame:
    return pd.concat([ds.frame(s, domain) for s in SPLITS], ignore_index=True)


def _onnx_dims(path: Path) -> tuple[list[str], list[str], set[str]]:
    m = onnx.load(str(path))
    inputs = [i.name for i in m.graph.input]
    batch_dims = [i.type.tensor_type.shape.dim[0].dim_param for i in m.graph.input]
    return inputs, batch_dims, {t.name for t in m.graph.initializer}


# -- export and parity -------------------------------------------------------------------------


def test_fse_export_parity_covers_every_missing_pattern(fse_export: ExportResult, alice_ds: PreprocessedDataset,
                                                        fse_pt: Path) -> None:
    rep = fse_export.parity
    # every isfinite pattern of the validation and test rows, counted independently here
    frames = [alice_ds.frame(s, d) for s in ("validation", "test") for d in ("mc", "data")]
    present = np.isfinite(pd.concat(frames)[alice_ds.columns].to_numpy(np.float64))
    patterns = {tuple(r) for r in present}
    assert len(patterns) >= 3 and len(rep.patterns) == len(patterns)
    assert all(n >= 1 for n in rep.patterns.values())
    assert rep.max_abs_diff <= 1e-5 and set(rep.checks) >= {"one batch", "one row at a time"}

    d = fse_export.directory
    assert json.loads((d / "columns_for_training.json").read_text()) == alice_ds.columns
    assert json.loads((d / "scaling_params.json").read_text()) == alice_ds.normaliser.scaling_params()
    thr = json.loads((d / "thresholds.json").read_text())
    assert 0 < thr["best_f1"] < 1 and 0 < thr["efficiency_90"] < 1
    inputs, batch_dims, _ = _onnx_dims(d / "model.onnx")
    assert inputs == ["features"] and batch_dims == ["tracks"]

    # independently: ONNX on the raw cache rows, any batch size, equals the PyTorch pipeline
    model, _ = artifacts.load_model(fse_pt, alice_ds)
    rows = alice_ds.frame("test", "mc").iloc[:300]
    ref = core.predict_frame(model, "fse", rows, alice_ds)["score"]
    pred = Predictor(d, threads=1)
    x = rows[alice_ds.columns].to_numpy(np.float32)
    for bs in (1, 37, 300):
        assert np.abs(pred.score_matrix(x, batch_size=bs) - ref).max() <= 1e-5


def test_fse_graph_applies_missing_rules_itself(fse_export: ExportResult, alice_ds: PreprocessedDataset) -> None:
    pred = Predictor(fse_export.directory, threads=1)
    rows = alice_ds.frame("test", "mc")
    cols = alice_ds.columns
    tof = [cols.index("fTOFSignal"), cols.index("fBeta")]
    x = rows[cols].to_numpy(np.float32)
    low = rows["fP"].to_numpy() < 0.5
    high = (rows["fP"].to_numpy() >= 0.5) & np.isfinite(x[:, tof[0]])
    assert low.sum() > 5 and high.sum() > 5
    base = pred.score_matrix(x)
    y = x.copy()
    y[:, tof] = np.array([12000.0, 0.9], dtype=np.float32)  # a TOF measurement for every track
    changed = pred.score_matrix(y)
    # below 0.5 GeV/c the graph blanks TOF (the dataset's missing rule): nothing changes
    assert np.abs(changed[low] - base[low]).max() <= 1e-6
    # above it, TOF is used: the same edit moves the score
    assert np.abs(changed[high] - base[high]).max() > 1e-4


@pytest.mark.parametrize("breakage", ["normalisation", "missing rule"])
def test_parity_mismatch_refuses_export(breakage: str, fse_pt: Path, alice_ds: PreprocessedDataset,
                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = onnx_export.fse_module

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        m = original(*args, **kwargs)
        if breakage == "normalisation":
            m.std.mul_(1.05)
        else:
            m.rules = []  # the graph forgets the TOF/TRD rules
        return m

    monkeypatch.setattr(onnx_export, "fse_module", broken)
    with pytest.raises(ParityError, match=r"max \|diff\| = .* > tolerance 1e-05") as exc:
        export_model(fse_pt, alice_ds, tmp_path / "out")
    assert "nothing written" in str(exc.value)
    if breakage == "missing rule":
        assert "as recorded" in str(exc.value)
    assert list(tmp_path.iterdir()) == []  # no output, no staging left behind


def test_mda_export_parity_covers_branch_inputs(mda_export: ExportResult, ams_ds: PreprocessedDataset,
                                                mda_pt: Path) -> None:
    rep = mda_export.parity
    keys = list(rep.patterns)
    assert any("tracks=2" in k for k in keys) and any("tracks=1" in k for k in keys)
    assert any("missing_hits=0" in k for k in keys) and any("missing_hits=1" in k for k in keys)
    assert any("rigidity=10" in k for k in keys)  # no L1 rigidity
    assert rep.max_abs_diff <= 1e-5 and rep.rows >= len(keys)

    inputs, batch_dims, init = _onnx_dims(mda_export.directory / "model.onnx")
    assert inputs == ["x", "edge_index", "edge_type", "batch", "image", "rigidity", "tof"]
    assert batch_dims[0] == "nodes" and batch_dims[4] == "events"
    payload = artifacts.load_checkpoint(mda_pt)
    assert payload["domain_head"] and any(k.startswith("domain.") for k in payload["state_dict"])
    assert not any("domain" in name for name in init)  # the head is gone from the graph

    model, _ = artifacts.load_model(mda_pt, ams_ds)
    rows = ams_ds.frame("test", "data").iloc[:150]
    ref = core.predict_frame(model, "mda", rows, ams_ds)["score"]
    pred = Predictor(mda_export.directory, threads=1)
    for bs in (1, 64):
        assert np.abs(pred.predict(rows[pred.spec["columns"]], batch_size=bs).score - ref).max() <= 1e-5


# -- inference -------------------------------------------------------------------------------


def test_predict_root_file_written_by_the_simulator(fse_export: ExportResult, fse_pt: Path,
                                                    alice_ds: PreprocessedDataset, alice_root: Path) -> None:
    import awkward as ak
    import uproot

    path = sorted((alice_root / "LHC26a" / "mc").glob("run*.root"))[0]
    res = predict(fse_export.directory, path, threads=1, batch_size=1000, apply_selection=False)
    with uproot.open(path) as fh:
        tree = fh["O2pidtracks"]
        n = tree.num_entries
        arrays = tree.arrays(alice_ds.columns + ["run", "event"], library="np")
    assert len(res.score) == n and np.isfinite(res.score).all()
    assert np.array_equal(res.selected, res.score >= res.threshold) and 0 < res.selected.sum() < n
    assert res.threshold == json.loads((fse_export.directory / "thresholds.json").read_text())["best_f1"]
    # the tracks that passed the selection are in the cache: same score as the PyTorch pipeline
    # (an event has several tracks: match on the event and the track's own values)
    out = res.to_frame()
    for k in ("fP", "fTPCSignal", "fDcaXY"):
        out[k] = arrays[k]
    key = ["run", "event", "fP", "fTPCSignal", "fDcaXY"]
    cache = _cache_rows(alice_ds, "mc")
    cache = cache[cache["run"] == out["run"].iloc[0]]
    assert not cache.duplicated(key).any() and not out.duplicated(key).any()
    merged = cache.merge(out, on=key, how="inner")
    assert len(merged) == len(cache)
    model, _ = artifacts.load_model(fse_pt, alice_ds)
    ref = core.predict_frame(model, "fse", merged, alice_ds)["score"]
    assert np.abs(ref - merged["score"].to_numpy()).max() <= 1e-5
    # the other input kinds give the same scores
    frame = pd.DataFrame({k: arrays[k] for k in alice_ds.columns})
    matrix = frame.to_numpy(np.float32)
    record = ak.Array({k: arrays[k] for k in alice_ds.columns})
    for data in (frame, matrix, record):
        assert np.abs(predict(fse_export.directory, data, threads=1, apply_selection=False).score
                      - res.score).max() <= 1e-6


def test_predict_mda_on_simulated_root_file(mda_export: ExportResult, mda_pt: Path, ams_ds: PreprocessedDataset,
                                            tmp_path: Path) -> None:
    import awkward as ak
    import uproot

    simulate_period(AMS, AmsSimConfig(), tmp_path, "P2026c", runs=1, events_per_run=300, seed=11)
    path = next((tmp_path / "P2026c" / "data").glob("run*.root"))
    res = predict(mda_export.directory, path, threads=1, apply_selection=False)
    assert len(res.score) == 300 and np.isfinite(res.score).all()
    # reference: the file read here, sentinels to NaN, through the training pipeline with the cache normaliser
    branches = list(ams_ds.manifest["features"])
    with uproot.open(path) as fh:
        arrays = fh["amstree"].arrays(branches, library="np")
    cols = {}
    for b in branches:
        flat = arrays[b].reshape(len(arrays[b]), -1).astype(np.float64)
        for j, c in enumerate(expand_columns(b, ams_ds.feature_shape(b))):
            cols[c] = np.where(flat[:, j] == -9999.0, np.nan, flat[:, j])
    frame = pd.DataFrame(cols)
    model, _ = artifacts.load_model(mda_pt, ams_ds)
    ref = core.predict_frame(model, "mda", frame, ams_ds)["score"]
    assert np.abs(ref - res.score).max() <= 1e-5
    # awkward records of the raw (array) branches work too
    rec = ak.Array({b: arrays[b] for b in branches})
    assert np.abs(predict(mda_export.directory, rec, threads=1, apply_selection=False).score - res.score).max() <= 1e-6


def test_predict_refuses_bad_inputs(fse_export: ExportResult, alice_ds: PreprocessedDataset) -> None:
    rows = alice_ds.frame("test", "mc").iloc[:10]
    with pytest.raises(InputError, match="fBeta"):
        predict(fse_export.directory, rows[alice_ds.columns].drop(columns=["fBeta"]))
    with pytest.raises(InputError, match=r"\[rows, 19\]"):
        predict(fse_export.directory, rows[alice_ds.columns].to_numpy()[:, :5])
    with pytest.raises(InputError, match="no tree 'nope'"):
        predict(fse_export.directory, Path(alice_ds.manifest["inputs"][0]["path"]), tree="nope")


# -- publish, resolve, revoke, corruption ---------------------------------------------------------


def _period_runs(alice_root: Path, period: str) -> tuple[int, int]:
    first, last = read_period_manifest(alice_root / period)["runs"]
    return int(first), int(last)


def test_publish_metadata_resolve_and_revoke(fse_pt: Path, alice_ds: PreprocessedDataset, alice_root: Path,
                                             tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    a_first, a_last = _period_runs(alice_root, "LHC26a")
    b_first, b_last = _period_runs(alice_root, "LHC26b")
    v1 = publish_model(fse_pt.parent, species="proton", period="LHC26a", registry=reg)
    assert str(v1.id) == "alice/proton/v0001" and v1.runs == (a_first, a_last) and v1.periods == ["LHC26a"]
    m = v1.metadata
    assert m["experiment"] == "alice" and m["family"] == "fse" and m["version"] == 1 and m["replaces"] is None
    assert {i["sha256"] for i in m["training_data"]["inputs"]} == {i["sha256"] for i in alice_ds.manifest["inputs"]}
    assert m["training_data"]["cache_key"] == alice_ds.manifest["key"]
    import hashlib

    assert m["config"]["sha256"] == hashlib.sha256((fse_pt.parent / "config.yaml").read_bytes()).hexdigest()
    # Data: truth-free numbers and an estimated gap; hidden-truth metrics only under their own key
    for dom in ("mc", "data_hidden_truth"):
        assert 0.5 < m["metrics"][dom]["auc"] <= 1.0
    assert "auc" not in m["metrics"]["data"] and m["metrics"]["data"]["n"] > 0
    assert {"estimable", "gap", "reason", "method"} <= set(m["metrics"]["gap"])
    assert len(m["metrics"]["mc"]["binned"]["background_efficiency_90"]) == 5
    assert m["versions"]["onnxruntime"] and "git_revision" in m and m["created"]
    assert m["parity"]["max_abs_diff"] <= 1e-5
    assert set(m["files"]) >= {"model.onnx", "columns_for_training.json", "scaling_params.json", "thresholds.json"}
    v1.verify()

    v2 = publish_model(fse_pt.parent, species="proton", period="LHC26b", registry=reg)
    # a run-range override overlapping LHC26a: the latest upload wins there
    v3 = publish_model(fse_pt, species="proton", runs=(a_last, b_first), registry=reg)
    assert [v.id.version for v in reg.versions()] == [1, 2, 3]
    assert v3.metadata["replaces"] == str(v2.id)
    assert reg.resolve("proton", a_first).id == v1.id
    assert reg.resolve("proton", a_last).id == v3.id
    assert reg.resolve("proton", b_last).id == v2.id
    with pytest.raises(AutopidError, match=r"species 'proton' covers run 123"):
        reg.resolve("proton", 123)
    reg.revoke(v3.id, "bad calibration")
    assert reg.resolve("proton", a_last).id == v1.id  # revoked: kept, but no longer served
    assert (v3.path / "model.onnx").is_file() and reg.get(v3.id).revoked["reason"] == "bad calibration"
    with pytest.raises(ConfigError, match="already revoked"):
        reg.revoke(v3.id)

    # the resolved version scores a ROOT file of its run
    path = alice_root / "LHC26a" / "data" / f"run{a_first}.root"
    res = predict(reg.resolve("proton", a_first), path, threads=1)
    assert len(res.score) > 0 and res.selected.dtype == bool


def test_corrupted_artifact_is_refused(fse_export: ExportResult, tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    meta = {"experiment": "alice", "species": "proton", "family": "fse", "validity": {"runs": [1, 100]}}
    v = reg.publish(fse_export.directory, meta)
    assert predict(v, np.zeros((2, 19), np.float32) + 1.0).score.shape == (2,)
    onnx_path = v.path / "model.onnx"
    original = onnx_path.read_bytes()
    blob = bytearray(original)
    blob[len(blob) // 2] ^= 0xFF
    onnx_path.write_bytes(bytes(blob))
    for call in (lambda: reg.get(v.id), lambda: reg.resolve("proton", 50),
                 lambda: predict(str(v.id), np.ones((1, 19), np.float32), registry=reg),
                 lambda: predict(v.path, np.ones((1, 19), np.float32))):
        with pytest.raises(InputError, match=r"model.onnx: sha256 .* corrupted .*alice/proton/v0001 refused"):
            call()
    # metadata tampering is caught too
    onnx_path.write_bytes(original)
    reg.get(v.id)  # intact again
    meta_path = v.path / "metadata.json"
    text = meta_path.read_text()
    assert '"version": 1' in text
    meta_path.write_text(text.replace('"version": 1', '"version": 2'))
    with pytest.raises(InputError, match="metadata.json: sha256 .* corrupted"):
        reg.get(v.id)


# -- promotion gate on real held-out metrics -------------------------------------------------------


def test_gate_on_the_same_held_out_data(fse_export: ExportResult, alice_ds: PreprocessedDataset) -> None:
    cand, serv = evaluate_pair(fse_export.directory, fse_export.directory, alice_ds, "proton")
    assert serv is not None and cand["mc"]["n"] == serv["mc"]["n"]
    same = decide(cand, serv, metric="mc.auc", margin=0.001)
    assert not same.promote and same.improvement == 0.0 and "not enough" in same.reason
    assert decide(cand, serv, margin=0.0).promote
    assert decide(cand, None).promote
    cand_only, none = evaluate_pair(fse_export.directory, None, alice_ds, "proton")
    assert none is None and cand_only["mc"]["auc"] == cand["mc"]["auc"]


# -- CLI -----------------------------------------------------------------------------------------


def test_cli_models_and_predict(fse_pt: Path, alice_root: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    reg = str(tmp_path / "reg")
    first, last = _period_runs(alice_root, "LHC26a")
    assert main(["models", "publish", str(fse_pt.parent), "--species", "proton", "--period", "LHC26a",
                 "--registry", reg, "-q"]) == 0
    out = capsys.readouterr().out
    assert f"published alice/proton/v0001: runs {first}-{last} (LHC26a)" in out
    assert main(["models", "list", "--registry", reg]) == 0
    assert "alice/proton/v0001" in capsys.readouterr().out
    assert main(["models", "show", "alice/proton/v0001", "--registry", reg]) == 0
    assert "verified (sha256)" in capsys.readouterr().out
    assert main(["models", "resolve", "--species", "proton", "--run", str(first), "--registry", reg]) == 0
    assert capsys.readouterr().out.startswith("alice/proton/v0001")
    assert main(["models", "resolve", "--species", "proton", "--run", "500123", "--registry", reg]) == 1
    err = capsys.readouterr().err
    assert "run 500123" in err and "'proton'" in err and "Traceback" not in err
    scores = tmp_path / "scores.parquet"
    root = alice_root / "LHC26a" / "data" / f"run{first}.root"
    assert main(["predict", "--species", "proton", "--run", str(first), "--input", str(root), "--tree",
                 "O2pidtracks", "--out", str(scores), "--registry", reg, "--threads", "1"]) == 0
    frame = pd.read_parquet(scores)
    assert list(frame.columns) == ["entry", "run", "event", "score", "selected"] and len(frame) > 100
    assert set(frame["run"]) == {first}
    assert main(["models", "publish", str(fse_pt.parent), "--species", "../proton", "--period", "LHC26a",
                 "--registry", reg]) == 2
    assert "species '../proton'" in capsys.readouterr().err
    assert main(["models", "revoke", "alice/proton/v0001", "--registry", reg]) == 0
    assert main(["models", "resolve", "--species", "proton", "--run", str(first), "--registry", reg]) == 1
    assert main(["models", "show", "alice/../v0001", "--registry", reg]) == 2


def test_publish_refuses_wrong_species_and_unknown_period(fse_pt: Path, tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    with pytest.raises(ConfigError, match="selects 'proton', not 'kaon'"):
        publish_model(fse_pt.parent, species="kaon", period="LHC26a", registry=reg)
    with pytest.raises(ConfigError, match="no input file lies under a directory named 'LHC27z'"):
        publish_model(fse_pt.parent, species="proton", period="LHC27z", registry=reg)
    assert reg.versions() == []


def test_parity_sample_helpers_group_by_pattern(alice_ds: PreprocessedDataset) -> None:
    sample = parity.fse_sample(alice_ds, per_pattern=3)
    counts = sample["_pattern"].value_counts()
    assert (counts <= 3).all() and "all present" in counts.index
    miss = sample[sample["_pattern"] == "missing: fTOFSignal, fBeta"]
    assert len(miss) and miss[["fTOFSignal", "fBeta"]].isna().all().all()
    assert miss.drop(columns=["fTOFSignal", "fBeta", "_pattern"]).notna().all().all()


def test_predict_in_batches_on_a_new_simulated_period(tmp_path: Path, fse_export: ExportResult) -> None:
    # a fresh period written by the simulator, scored in batches with the exported model
    simulate_period(ALICE, AliceSimConfig(), tmp_path, "LHC26c", runs=1, events_per_run=500, seed=3)
    path = next((tmp_path / "LHC26c" / "mc").glob("*.root"))
    small = predict(fse_export.directory, path, batch_size=64, threads=1, apply_selection=False)
    big = predict(fse_export.directory, path, threads=1, apply_selection=False)
    assert len(small.score) == 500 and np.abs(small.score - big.score).max() <= 1e-6


def test_find_model_in_run_study_and_search_directories(fse_pt: Path, alice_ds: PreprocessedDataset,
                                                        tmp_path: Path) -> None:
    from autopid.publish.publisher import find_dataset, find_model

    run = find_model(fse_pt.parent)
    assert run.model == fse_pt and run.config == fse_pt.parent / "config.yaml" and run.cache == alice_ds.path
    search = tmp_path / "search"
    for name in ("proton-LHC26a", "proton-LHC26b", "kaon-LHC26a"):
        study = search / "studies" / name
        study.mkdir(parents=True)
        (study / "best_model.pt").write_bytes(fse_pt.read_bytes())
        (study / "best_config.yaml").write_text((fse_pt.parent / "config.yaml").read_text())
        (study / "summary.json").write_text(json.dumps({"cache": str(alice_ds.path)}))
    found = find_model(search, "proton", "LHC26b")
    assert found.directory.name == "proton-LHC26b" and found.config.name == "best_config.yaml"
    with pytest.raises(ConfigError, match="pick one study"):
        find_model(search, "proton")
    key = alice_ds.manifest["key"]
    assert find_dataset(found, key).path == alice_ds.path
    with pytest.raises(ConfigError, match="cannot find its preprocessing cache"):
        find_dataset(find_model(tmp_path / "search" / "studies" / "kaon-LHC26a" / "best_model.pt"), "0" * 64)
