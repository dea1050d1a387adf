"""``autopid report`` on real (tiny) trained models: figures are valid PNGs, the page links
each one, Data figures that read hidden truth say so, and bad directories are refused.

Models are trained for one epoch without Ray (as in test_publish.py) on the conftest
caches; the search directory is laid out as ``autopid search`` leaves it, with a real
Optuna SQLite storage, so that no Ray search has to run here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
import torch

from autopid.cli import main
from autopid.config import dump_yaml
from autopid.data import PreprocessedDataset
from autopid.errors import ConfigError
from autopid.report import discover, make_report
from autopid.report.evaluation import evaluate_source
from autopid.train import artifacts, core
from autopid.train.config import TrainConfig
from autopid.train.fit import fit

FSE_PARAMS = {"embed_channels": [32, 16], "ff_channels": 32, "num_layers": 1, "pool_channels": 16,
              "classifier_channels": 16}
MDA_PARAMS = {"token_channels": 16, "gnn_hidden": 16, "gnn_layers": 2, "cnn_channels": 4, "mlp_hidden": 16,
              "classifier_channels": 16}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ROWS = 400  # --max-rows: keeps evaluation and baseline fits to a few seconds


def _train_run(ds: PreprocessedDataset, family: str, species: str, params: dict, lambda_max: float,
               out: Path, metrics_csv: bool = True) -> Path:
    """A run directory as ``autopid train`` leaves it (without the Ray checkpoints)."""
    torch.set_num_threads(1)
    cfg = TrainConfig(dataset=ds.manifest["experiment"], species=species, model={"family": family, "params": params},
                      training={"epochs": 1, "max_train_rows": 800, "max_eval_rows": 400, "batch_size": 64,
                                "lambda_max": lambda_max, "signal_fraction": 0.5})
    model, state = fit(cfg, ds)
    out.mkdir(parents=True, exist_ok=True)
    artifacts.save_atomic(artifacts.model_payload(model, cfg, ds), out / "model.pt")
    (out / "config.yaml").write_text(dump_yaml(cfg))
    (out / "result.json").write_text(json.dumps({"cache": str(ds.path), "cache_key": ds.manifest["key"]}))
    if metrics_csv:
        pd.DataFrame(state.history).to_csv(out / "metrics.csv", index=False)
    return out


@pytest.fixture(scope="module")
def ams_run(ams_ds: PreprocessedDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train_run(ams_ds, "mda", "phosphorus", MDA_PARAMS, 0.5, tmp_path_factory.mktemp("run-ams"))


@pytest.fixture(scope="module")
def alice_run(alice_ds: PreprocessedDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train_run(alice_ds, "fse", "proton", FSE_PARAMS, 0.0, tmp_path_factory.mktemp("run-alice"))


def _check_png(path: Path) -> None:
    import matplotlib.image

    raw = path.read_bytes()
    assert raw[:8] == PNG_SIGNATURE, path
    assert len(raw) > 5_000, f"{path}: only {len(raw)} bytes"
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] >= 200 and img.shape[1] >= 300, (path, img.shape)
    # something was drawn: not one flat colour
    assert float(np.asarray(img[..., :3]).std()) > 0.02, path


def _figures_in_html(index: Path) -> dict[str, str]:
    """src -> caption of every figure on the page."""
    page = index.read_text()
    found = re.findall(r'<img src="([^"]+)" alt="[^"]*"></a><figcaption[^>]*>([^<]*)</figcaption>', page)
    return dict(found)


def _check_report(index: Path, expected: set[str]) -> dict[str, str]:
    assert index.is_file()
    pngs = {p.name for p in index.parent.glob("*.png")}
    assert pngs == expected, sorted(pngs ^ expected)
    linked = _figures_in_html(index)
    assert set(linked) == pngs, sorted(set(linked) ^ pngs)
    for name, caption in linked.items():
        _check_png(index.parent / name)
        # figures that read the hidden truth of Data say so, and only those do
        assert ("hidden-truth" in name) == ("hidden truth (evaluation only)" in caption), (name, caption)
    return linked


def test_not_a_report_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "empty"))):
        discover(tmp_path / "empty")
    with pytest.raises(ConfigError, match="no such directory"):
        discover(tmp_path / "missing")
    # a run directory missing its model is not a run directory
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "result.json").write_text("{}")
    assert main(["report", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "run") in err and "not a run directory" in err
    with pytest.raises(SystemExit) as stop:  # argparse: a usage error
        main(["report", str(tmp_path / "run"), "--max-rows", "0"])
    assert stop.value.code == 2


def test_evaluation_scores_the_trained_model(ams_run: Path, ams_ds: PreprocessedDataset) -> None:
    ev = evaluate_source(discover(ams_run).models[0], max_rows=ROWS, learned_baselines=False)
    assert len(ev.mc) == ROWS and 0 < len(ev.data) <= ROWS
    # independently: the model's scores are those of the saved model on the same rows
    model, _ = artifacts.load_model(ams_run / "model.pt", ams_ds)
    ref = core.predict_frame(model, "mda", ev.mc, ams_ds, domain="mc")["score"]
    np.testing.assert_allclose(ev.model.mc, ref, atol=1e-6)
    names = [s.name for s in ev.selections]
    assert names == ["MDA", "classic (calibrated L1, UTOF, veto)", "second-track veto"]
    # the classic selection's working point: windows chosen on validation MC for 90 % efficiency
    classic = ev.selections[1]
    assert classic.details["efficiency_validation"] >= 0.9 and classic.details["l1_half_width"] > 0
    assert classic.threshold == -1.0
    # roles ride along with the test rows: the L1 window is applied to the same rows
    np.testing.assert_array_equal(ev.mc["role:l1_charge"].to_numpy(), ev.mc["trk_charge_l1"].to_numpy())
    # Data truth comes from the hidden branches, MC truth from MC
    assert set(ev.data["true_species"]) <= {*ams_ds.species, "other"}
    assert (ev.mc["y"].to_numpy() == (ev.mc["true_species"] == "phosphorus").to_numpy()).all()
    assert ev.branch_names == ["gnn", "cnn", "rigidity", "tof"]
    assert ev.attention["mc"].shape == (ROWS, 4)
    np.testing.assert_allclose(ev.attention["mc"].sum(axis=1), 1.0, atol=1e-4)


@pytest.mark.slow
def test_ams_run_report(ams_run: Path) -> None:
    rep = make_report(ams_run, max_rows=ROWS)
    assert rep.path == ams_run / "report" / "index.html"
    linked = _check_report(rep.path, {f"run-{n}.png" for n in (
        "training", "roc-mc", "roc-data-hidden-truth", "efficiency-purity-mc",
        "efficiency-purity-data-hidden-truth", "scores", "l1-charge-mc", "l1-charge-data-hidden-truth",
        "attention")})
    assert sorted(p.name for p in rep.figures) == sorted(linked)
    page = rep.path.read_text()
    assert "XGBoost" in page and "classic (calibrated L1, UTOF, veto)" in page


@pytest.mark.slow
def test_alice_run_report_from_the_cli(alice_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (alice_run / "metrics.csv").unlink()  # an older run without per-epoch metrics: no training figure
    out = tmp_path / "elsewhere" / "page.html"
    assert main(["report", str(alice_run), "--out", str(out), "--max-rows", str(ROWS), "-q"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out)
    _check_report(out, {f"run-{n}.png" for n in (
        "roc-mc", "roc-data-hidden-truth", "efficiency-purity-mc", "efficiency-purity-data-hidden-truth",
        "scores")})
    page = out.read_text()
    for name in ("FSE+attention", "n-sigma (fitted, n&lt;", "XGBoost (NaN native, tuned)", "MLP, mean imputation (tuned)"):
        assert name in page, name


def _search_dir(root: Path, run: Path, ds: PreprocessedDataset) -> Path:
    """Studies as ``autopid search`` leaves them: one with 4 trials and a best model, one
    with a single trial whose model was not kept, and one still running (3 trials)."""
    root.mkdir(parents=True)
    storage = f"sqlite:///{(root / 'optuna.db').resolve()}"
    studies = []
    (root / "config.yaml").write_text("name: tiny\n")  # the space as run (names the Optuna studies)
    for name, n_trials in (("phosphorus-P2026a", 4), ("phosphorus-P2026b", 1), ("phosphorus-P2026c", 3)):
        study = optuna.create_study(study_name=f"tiny-{name}", storage=storage, direction="maximize",
                                    sampler=optuna.samplers.RandomSampler(seed=1))

        def objective(trial: optuna.Trial) -> float:
            lr = trial.suggest_float("training.lr", 1e-5, 3e-3, log=True)
            hidden = trial.suggest_categorical("model.params.gnn_hidden", [8, 16])
            return 0.9 - abs(np.log10(lr) + 3.0) * 0.05 + hidden * 1e-4

        study.optimize(objective, n_trials=n_trials)
        sdir = root / "studies" / name
        sdir.mkdir(parents=True)
        if name.endswith("c"):
            continue  # still running: trials in optuna.db, no results in the study directory yet
        if n_trials > 1:
            (sdir / "best_model.pt").write_bytes((run / "model.pt").read_bytes())
            (sdir / "best_config.yaml").write_text((run / "config.yaml").read_text())
        (sdir / "summary.json").write_text(json.dumps({
            "study": name, "optuna_study": f"tiny-{name}", "best_trial": "0", "cache": str(ds.path),
            "best_params": study.best_params}))
        studies.append({"species": "phosphorus", "period": name.split("-")[1]})
    (root / "search.json").write_text(json.dumps({"storage": storage, "studies": studies}))
    return root


@pytest.mark.slow
def test_search_report(ams_run: Path, ams_ds: PreprocessedDataset, tmp_path: Path) -> None:
    search = _search_dir(tmp_path / "search", ams_run, ams_ds)
    rep = make_report(search, max_rows=ROWS, learned_baselines=False)
    per_model = ("roc-mc", "roc-data-hidden-truth", "efficiency-purity-mc", "efficiency-purity-data-hidden-truth",
                 "scores", "l1-charge-mc", "l1-charge-data-hidden-truth", "attention")
    expected = {f"phosphorus-P2026a-{n}.png" for n in per_model}
    expected |= {"phosphorus-P2026a-search-history.png", "phosphorus-P2026a-param-importances.png",
                 "phosphorus-P2026b-search-history.png", "phosphorus-P2026c-search-history.png",
                 "phosphorus-P2026c-param-importances.png"}
    _check_report(rep.path, expected)
    page = rep.path.read_text()
    # one completed trial: a note instead of importances
    assert "1 completed trial(s): parameter importances need at least 2" in page
    assert "study phosphorus-P2026b: no best model" in page
    assert "study phosphorus-P2026c: unfinished (no summary.json): search history only" in page
    assert f"optuna-dashboard sqlite:///{(search / 'optuna.db').resolve()}" in page


def test_png_check_can_fail(tmp_path: Path) -> None:
    """The figure check used above rejects a blank image and a non-PNG file."""
    from autopid.report import figures

    fig, _ = figures.new_figure()
    fig.clear()  # nothing drawn: one flat colour
    blank = figures.save(fig, tmp_path / "blank.png")
    with pytest.raises(AssertionError):
        _check_png(blank)
    (tmp_path / "fake.png").write_bytes(b"GIF89a" + bytes(10_000))
    with pytest.raises(AssertionError):
        _check_png(tmp_path / "fake.png")


@pytest.mark.slow
def test_retraining_report(ams_run: Path, ams_ds: PreprocessedDataset, tmp_path: Path) -> None:
    from autopid.retrain.state import REJECTED, StateStore

    work = tmp_path / "retrain"  # state.work_dir of a job: state.db and <job>/<period>/search
    _search_dir(work / "ams-p" / "P2026a" / "search", ams_run, ams_ds)
    store = StateStore(f"sqlite:///{(work / 'state.db').resolve()}")
    store.seen("ams-p", "P2026a")
    assert store.claim("ams-p", "P2026a", "me", 60) is not None
    store.finish("ams-p", "P2026a", "me", REJECTED, published=None, timings={"searched": 1.0},
                 decision={"candidate": 0.91, "serving": 0.93, "improvement": -0.02, "reason": "below the margin"},
                 message="rejected")
    rep = make_report(work, max_rows=ROWS, learned_baselines=False)
    linked = _check_report(rep.path, {p.name for p in rep.figures})
    assert "ams-p-P2026a-phosphorus-P2026a-search-history.png" in linked
    assert "ams-p-P2026a-phosphorus-P2026a-attention.png" in linked
    page = rep.path.read_text()
    assert "Retraining decisions" in page and "below the margin" in page and "rejected" in page
    # one job's directory below the work directory is a retraining directory too
    job = discover(work / "ams-p")
    assert job.kind == "retrain"
    assert [s.name for s in job.studies] == [f"P2026a/phosphorus-P2026{p}" for p in "abc"]
    assert [(d["job"], d["period"], d["status"]) for d in job.decisions] == [("ams-p", "P2026a", "rejected")]
    # a state database alone, next to an unrelated directory, does not make it a retraining directory
    (work / "other").mkdir()
    with pytest.raises(ConfigError, match=re.escape(str(work / "other"))):
        discover(work / "other")


@pytest.mark.slow
def test_report_on_real_data_without_truth(alice_cfg: Any, tmp_path: Path) -> None:
    """Real Data have no truth: the report shows MC metrics, the truth-free Data estimate
    and the score distributions, and no figure or column that would need Data labels."""
    from autopid.preprocess import preprocess

    raw = alice_cfg.model_dump(mode="json")
    raw["truth"] = {"label": {"mc": raw["truth"]["label"]["mc"]},
                    "extra": {k: {"mc": v["mc"]} for k, v in (raw["truth"].get("extra") or {}).items()}}
    raw["name"] = "alice_real"
    real = PreprocessedDataset(preprocess(type(alice_cfg).model_validate(raw), cache_root=tmp_path / "cache").path)
    assert "hidden_label" not in real.evaluation_truth("test", "data")
    run = _train_run(real, "fse", "proton", FSE_PARAMS, 0.0, tmp_path / "run")
    ev = evaluate_source(discover(run).models[0], max_rows=ROWS, learned_baselines=False)
    assert len(ev.data) > 0 and "y" not in ev.data and "true_species" not in ev.data
    assert all("data" not in s.metrics and "data_estimate" in s.metrics for s in ev.selections)
    assert any("no truth" in n for n in ev.notes)
    rep = make_report(run, max_rows=ROWS, learned_baselines=False)
    _check_report(rep.path, {"run-training.png", "run-roc-mc.png", "run-efficiency-purity-mc.png", "run-scores.png"})
