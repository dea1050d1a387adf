from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from autopid.config.dataset import DatasetConfig
from autopid.errors import ConfigError
from autopid.search.space import load_search_space
from autopid.testing import write_dataset_yaml

EXE = str(Path(sys.executable).with_name("autopid"))


def _space(tmp_path: Path, dataset: Path, **over: object) -> dict:
    space = {
        "name": "tiny",
        "base": {"dataset": str(dataset), "species": "proton", "model": {"family": "fse", "params": {"num_layers": 1}},
                 "training": {"epochs": 3, "batch_size": 128, "max_train_rows": 1500, "max_eval_rows": 600,
                              "signal_fraction": 0.3},
                 "scaling": {"num_workers": 1}, "cache_dir": str(tmp_path / "cache")},
        "studies": [{"species": "proton", "period": "LHC26a"}],
        "params": {"training.lr": {"type": "loguniform", "low": 1e-5, "high": 3e-3},
                   "model.params.ff_channels": {"type": "categorical", "choices": [32, 64]}},
        "budget": {"num_samples": 4},
        "scheduler": {"grace_period": 1, "reduction_factor": 2},
    }
    space.update(over)
    return space


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module", autouse=True)
def _shutdown_ray():
    yield
    import ray

    ray.shutdown()  # the resume test's subprocesses must find no other Ray instance


@pytest.fixture(scope="module")
def dataset_yaml(alice_cfg: DatasetConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset_yaml(alice_cfg, tmp_path_factory.mktemp("ds") / "alice.yaml")


@pytest.mark.parametrize(("key", "value", "message"), [
    ("model.params.bogus", {"type": "int", "low": 1, "high": 2}, "unknown fse model parameter 'bogus'"),
    ("training.lr", {"type": "uniform", "low": 0.1, "high": 0.01}, r"params.training.lr.*low \(0.1\) > high \(0.01\)"),
    ("training.batch_size", {"type": "categorical", "choices": []}, r"params.training.batch_size.*at least 1 item"),
    ("training.not_a_field", {"type": "uniform", "low": 0, "high": 1},
     r"params.training.not_a_field: the value 0.0 does not fit"),
])
def test_invalid_space_refused_before_ray_starts(tmp_path: Path, key: str, value: dict, message: str) -> None:
    import ray

    data = _space(tmp_path, tmp_path / "d.yaml")
    data["params"][key] = value
    path = _write(tmp_path / "space.yaml", data)
    with pytest.raises(ConfigError, match=message) as err:
        load_search_space(path)
    assert str(path) in str(err.value)
    from autopid.cli import main

    assert main(["search", "--space", str(path), "--out", str(tmp_path / "s")]) == 2
    assert not ray.is_initialized()


def test_shipped_spaces_are_valid() -> None:
    root = Path(__file__).resolve().parents[1] / "search_spaces"
    for path in root.glob("*.yaml"):
        space = load_search_space(path)
        keys = set(space.params)
        if space.base["model"]["family"] == "mda":
            assert {"training.lambda_max", "model.params.gnn_hidden", "model.params.cnn_channels",
                    "model.params.mlp_hidden", "training.lr", "training.batch_size", "model.params.dropout"} <= keys
            assert any(k.startswith("training.background_mix.") for k in keys)


@pytest.mark.slow
def test_two_worker_training_run(tmp_path: Path, dataset_yaml: Path) -> None:
    from autopid.cli import main
    from autopid.data import PreprocessedDataset
    from autopid.train import artifacts, core
    from autopid.train.config import TrainConfig

    cfg = {"dataset": str(dataset_yaml), "species": "proton", "period": "LHC26a",
           "model": {"family": "fse", "params": {"num_layers": 1}},
           "training": {"epochs": 2, "batch_size": 128, "max_train_rows": 1200, "max_eval_rows": 500},
           "scaling": {"num_workers": 2}, "cache_dir": str(tmp_path / "cache")}
    path = _write(tmp_path / "train.yaml", cfg)
    run = tmp_path / "run"
    assert main(["train", "--config", str(path), "--out", str(run), "-q"]) == 0
    for name in ("config.yaml", "metadata.json", "metrics.csv", "model.pt", "result.json"):
        assert (run / name).is_file(), name
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["epoch"]) == [1.0, 2.0]
    assert len([p for p in (run / "ray").glob("checkpoint_*") if p.is_dir()]) == 2
    info = json.loads((run / "result.json").read_text())
    ds = PreprocessedDataset(info["cache"])
    model, payload = artifacts.load_model(run / "model.pt", ds)
    assert payload["family"] == "fse" and payload["species"] == "proton"
    # data parallel: each of the two workers saw half of the training sample
    frames = core.load_frames(ds, "proton", TrainConfig.model_validate(cfg).training, with_data=False)
    assert metrics["events"].iloc[0] == pytest.approx(len(frames.train) / 2, abs=1)
    meta = json.loads((run / "metadata.json").read_text())
    assert meta["inputs"] and "torch" in meta["versions"]


@pytest.mark.slow
def test_search_stops_early_and_writes_results(tmp_path: Path, dataset_yaml: Path) -> None:
    import optuna

    from autopid.config import load_yaml_config
    from autopid.search.runner import run_search
    from autopid.train.config import TrainConfig

    space = _write(tmp_path / "space.yaml", _space(tmp_path, dataset_yaml, budget={"num_samples": 5}))
    search_dir, (summary,) = run_search(space, out_dir=tmp_path / "search")
    sdir = search_dir / "studies" / "proton-LHC26a"
    trials = pd.read_csv(sdir / "trials.csv")
    assert len(trials) == 5 and summary["failed"] == 0
    # ASHA's decisions depend on the values; what must hold is that the files say the same
    stopped = trials[trials["status"] == "stopped_early"]
    assert (stopped["epochs"] < 3).all() and (stopped["stop_reason"] == "asha").all(), trials
    assert summary["stopped_early"] == len(stopped) and summary["completed"] == 5 - len(stopped)
    study = optuna.load_study(study_name="tiny-proton-LHC26a", storage=f"sqlite:///{search_dir / 'optuna.db'}")
    assert len(study.trials) == 5
    best = load_yaml_config(sdir / "best_config.yaml", TrainConfig)
    assert best.species == "proton" and best.period == "LHC26a"
    assert best.training.lr == pytest.approx(summary["best_params"]["training.lr"])
    assert (sdir / "best_model.pt").is_file()
