"""The command line of retraining, registry and training: every option says what it does
and its default; `autopid train` reports the epochs it ran (a real Ray Train run)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

COMMANDS = [("models", "publish"), ("models", "list"), ("models", "show"), ("models", "resolve"), ("models", "revoke"),
            ("scheduler", "run"), ("scheduler", "status"), ("scheduler", "retry"), ("retrain",), ("train",)]


def _subparser(path: tuple[str, ...]) -> argparse.ArgumentParser:
    from autopid.cli import _parser

    parser = _parser()
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_every_option_has_help_with_its_default(path: tuple[str, ...]) -> None:
    parser = _subparser(path)
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        text = action.help or ""
        if not text or text == argparse.SUPPRESS:
            missing.append(f"{name}: no help")
            continue
        takes_value = action.nargs != 0 and not isinstance(action, (argparse._StoreTrueAction, argparse._CountAction))
        if action.option_strings and takes_value and not action.required and "default" not in text:
            missing.append(f"{name}: the help does not give the default ({text!r})")
        if action.option_strings and action.required and "required" not in text:
            missing.append(f"{name}: the help does not say it is required ({text!r})")
    assert not missing, f"autopid {' '.join(path)}: " + "; ".join(missing)


def test_readme_examples_use_the_simulators_run_numbers() -> None:
    """The README's registry and retraining examples name runs `autopid simulate ams` writes."""
    from autopid.simulate import AMS
    from autopid.simulate._common import default_first_run

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    first = default_first_run(AMS.run_base, "P2026a")
    assert f"--run {first}" in readme and f"run{first}.root" in readme
    assert "600100" not in readme.replace(str(first), "")


@pytest.mark.slow
def test_train_reports_the_epochs_it_ran(alice_cfg, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Early stopping after the 2nd epoch (a learning rate too small to change a float32
    weight, so epoch 2 cannot improve on epoch 1): the summary, result.json and
    metrics.csv agree on 2 epochs run, best epoch 1 (it printed 'best epoch 1/1')."""
    from autopid.testing import write_dataset_yaml

    dataset = write_dataset_yaml(alice_cfg, tmp_path / "alice.yaml")
    cfg = {"dataset": str(dataset), "species": "proton", "period": "LHC26a",
           "model": {"family": "fse", "params": {"num_layers": 1, "embed_channels": [16, 8], "ff_channels": 16,
                                                 "pool_channels": 8, "classifier_channels": 8}},
           "training": {"epochs": 6, "batch_size": 128, "max_train_rows": 800, "max_eval_rows": 400, "lr": 1e-12,
                        "early_stopping_patience": 1, "threads": 1},
           "scaling": {"num_workers": 1, "cpus_per_worker": 1}, "cache_dir": str(tmp_path / "cache")}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    ray_tmp = tempfile.mkdtemp(prefix="rc", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(RAY_TMPDIR=ray_tmp, RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1")
    try:
        r = subprocess.run([str(Path(sys.executable).with_name("autopid")), "train", "--config", str(path), "--out",
                            str(run), "-q"], capture_output=True, text=True, timeout=480, env=env)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads((run / "result.json").read_text())
    history = pd.read_csv(run / "metrics.csv")
    assert info["epochs_run"] == len(history) == 2 and info["best_epoch"] == 1 and info["epochs_max"] == 6
    assert list(history["epoch"]) == [1.0, 2.0]
    assert "best epoch 1 of 2 run, stopped early (max 6)" in r.stdout
