"""What a rerun must not trip over or silently mix: a search refused before it began, a
search resumed on changed input files, a training run re-run with another config, and
the text a failed trial is reported with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from autopid.config.dataset import DatasetConfig
from autopid.errors import AutopidError, ConfigError
from autopid.provenance import write_run_info
from autopid.search.runner import run_search
from autopid.search.space import load_search_space
from autopid.search.study import error_summary
from autopid.testing import write_dataset_yaml
from autopid.train.config import TrainConfig
from autopid.train.run import check_resumable, train


def _space(tmp_path: Path, alice_cfg: DatasetConfig, cache_root: Path, params: dict) -> Path:
    dataset = write_dataset_yaml(alice_cfg, tmp_path / "alice.yaml")
    space = {
        "name": "refusals",
        "base": {"dataset": str(dataset), "species": "proton", "model": {"family": "fse", "params": {"num_layers": 1}},
                 "training": {"epochs": 1, "max_train_rows": 500, "max_eval_rows": 300},
                 "cache_dir": str(cache_root)},
        "studies": [{"species": "proton", "period": "LHC26a"}],
        "params": params,
        "budget": {"num_samples": 1},
    }
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


LR = {"training.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-3}}
# the simulated periods hold no deuterons: a fraction of them cannot act and is refused
# once the data are read, after the directory was claimed
NO_ROWS = {**LR, "training.background_mix.deuteron": {"type": "uniform", "low": 0.1, "high": 0.5}}


def test_a_search_refused_at_setup_leaves_nothing_to_trip_over(tmp_path: Path, alice_cfg: DatasetConfig,
                                                               cache_root: Path) -> None:
    space = _space(tmp_path, alice_cfg, cache_root, NO_ROWS)
    out = tmp_path / "search"
    with pytest.raises(ConfigError, match="0 deuteron row"):
        run_search(space, out_dir=out)
    assert not out.exists()  # the corrected space may use the same --out
    # a setup cut short (kill -9 between config.yaml and search.json) is no search: the same
    # --out is set up again, not refused with "already holds a search"
    out.mkdir()
    write_run_info(out, load_search_space(space))
    with pytest.raises(ConfigError, match="0 deuteron row"):
        run_search(space, out_dir=out)
    assert (out / "config.yaml").is_file()  # a directory that was there before is left alone
    assert not (out / "search.json").exists()
    (out / "metadata.json").unlink()  # killed between the two writes: the YAML tells
    with pytest.raises(ConfigError, match="0 deuteron row"):
        run_search(space, out_dir=out)
    # a training run's directory is not a search set up halfway: refused, left as it was
    run = tmp_path / "run"
    write_run_info(run, load_search_space(space).train_config(load_search_space(space).studies[0], {}))
    before = (run / "config.yaml").read_text()
    with pytest.raises(ConfigError, match="holds a TrainConfig of something else"):
        run_search(space, out_dir=run)
    assert (run / "config.yaml").read_text() == before


def test_resume_on_changed_input_files_is_refused(tmp_path: Path, alice_cfg: DatasetConfig,
                                                  cache_root: Path) -> None:
    space_path = _space(tmp_path, alice_cfg, cache_root, LR)
    out = tmp_path / "search"
    write_run_info(out, load_search_space(space_path))
    state = {"storage": f"sqlite:///{out / 'optuna.db'}", "studies": [{"species": "proton", "period": "LHC26a"}],
             "optuna_studies": {}, "inputs": {"proton-LHC26a": ["0" * 64, "1" * 64]}}
    (out / "search.json").write_text(json.dumps(state))
    with pytest.raises(ConfigError, match="input files of study proton-LHC26a changed") as err:
        run_search(resume_dir=out)
    assert str(out) in str(err.value)
    assert not (out / "optuna.db").exists()  # refused before anything ran


def _train_cfg(alice_cfg: DatasetConfig, tmp_path: Path, cache_root: Path, **training: object) -> TrainConfig:
    dataset = write_dataset_yaml(alice_cfg, tmp_path / "alice.yaml")
    return TrainConfig.model_validate({
        "dataset": str(dataset), "species": "proton", "period": "LHC26a", "cache_dir": str(cache_root),
        "model": {"family": "fse", "params": {"num_layers": 1}},
        "training": {"epochs": 2, "max_train_rows": 500, "max_eval_rows": 300, **training}})


def test_rerun_of_a_training_run_with_another_config_is_refused(tmp_path: Path, alice_cfg: DatasetConfig,
                                                                cache_root: Path) -> None:
    from autopid.train.run import prepare_data

    cfg = _train_cfg(alice_cfg, tmp_path, cache_root)
    prep = prepare_data(cfg)
    run = tmp_path / "run"
    inputs = {i["path"]: i["sha256"] for i in prep.manifest["inputs"]}
    write_run_info(run, cfg, inputs=inputs)
    kaon = cfg.model_copy(update={"species": "kaon"})
    # no checkpoint yet (the first attempt died before its first epoch): nothing to resume
    check_resumable(run, kaon, inputs)
    (run / "ray" / "checkpoint_2026-12-01_00-00-00.000000").mkdir(parents=True)
    check_resumable(run, cfg.model_copy(update={"scaling": cfg.scaling.model_copy(update={"num_workers": 2})}),
                    {f"/elsewhere/{i}.root": sha for i, sha in enumerate(inputs.values())})  # same contents
    with pytest.raises(AutopidError, match=r"another configuration \(species: 'proton' -> 'kaon'\)"):
        train(kaon, run_dir=run)
    wider = _train_cfg(alice_cfg, tmp_path, cache_root, lr=5e-3)
    with pytest.raises(AutopidError, match=r"training.lr: 0.0005 -> 0.005"):
        train(wider, run_dir=run)
    assert yaml.safe_load((run / "config.yaml").read_text())["species"] == "proton"  # not overwritten
    # the inputs recorded differ from the files now read
    meta = json.loads((run / "metadata.json").read_text())
    meta["inputs"] = {k: "0" * 64 for k in meta["inputs"]}
    (run / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(AutopidError, match="input files changed"):
        train(cfg.model_copy(update={"training": cfg.training.model_copy(update={"epochs": 5})}), run_dir=run)


def test_bad_model_params_are_refused_before_training(tmp_path: Path, alice_cfg: DatasetConfig,
                                                      cache_root: Path) -> None:
    cfg = _train_cfg(alice_cfg, tmp_path, cache_root)
    bad = cfg.model_copy(update={"model": cfg.model.model_copy(update={"params": {"num_heads": 3}})})
    with pytest.raises(ConfigError, match=r"model.params .*num_heads.* divisible"):
        train(bad, run_dir=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize(("text", "summary"), [
    ("Traceback (most recent call last):\n  File \"a.py\", line 1, in f\nray.exceptions.RayTaskError(ValueError): "
     "ray::f()\n  File \"b.py\", line 2, in g\nValueError: embed_dim must be divisible by num_heads\n",
     "ValueError: embed_dim must be divisible by num_heads"),
    ("pydantic_core._pydantic_core.ValidationError: 1 validation error for TrainConfig\ntraining.signal_fraction\n"
     "  Input should be less than 1 [type=less_than, input_value=1.2, input_type=float]\n"
     "    For further information visit https://errors.pydantic.dev/2.14/v/less_than\n",
     "ValidationError: 1 validation error for TrainConfig training.signal_fraction Input should be less than 1 "
     "[type=less_than, input_value=1.2, input_type=float]"),
    ("Traceback (most recent call last):\n  File \"a.py\", line 1\nAssertionError\n", "AssertionError"),
    ("killed by the OOM killer", "killed by the OOM killer"),
    ("Traceback (most recent call last):\n  File \"a.py\", line 1\nKeyError: 'k'\n\nDuring handling of the above "
     "exception, another exception occurred:\n\nTraceback (most recent call last):\n  File \"b.py\", line 9\n"
     "    raise TrialPruned()\noptuna.exceptions.TrialPruned\n", "KeyError: 'k'"),
])
def test_a_failed_trial_is_summed_up_by_its_exception(text: str, summary: str) -> None:
    assert error_summary(text) == summary


@pytest.mark.slow
def test_a_search_where_every_trial_fails_exits_non_zero(tmp_path: Path, alice_cfg: DatasetConfig,
                                                        cache_root: Path) -> None:
    """Each value makes a model alone (the space loads), but 4 heads never divide 6
    channels: every trial fails, and the command says so with its exit status."""
    import subprocess
    import sys

    exe = str(Path(sys.executable).with_name("autopid"))
    space = _space(tmp_path, alice_cfg, cache_root, {
        **LR, "model.params.num_heads": {"type": "categorical", "choices": [4]},
        "model.params.embed_channels": {"type": "categorical", "choices": [[64, 6]]}})
    data = yaml.safe_load(space.read_text())
    data["budget"] = {"num_samples": 2, "max_concurrent": 1}
    space.write_text(yaml.safe_dump(data))
    out = tmp_path / "search"
    run = subprocess.run([exe, "search", "--space", str(space), "--out", str(out)], capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 1, (run.stdout + run.stderr)[-3000:]
    assert "study proton-LHC26a: no trial produced a model (2 failed" in run.stderr
    summary = json.loads((out / "studies" / "proton-LHC26a" / "summary.json").read_text())
    assert summary["state"] == "finished" and summary["failed"] == 2 and summary["best_model"] is None
