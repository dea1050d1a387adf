"""Helpers for tests of autopid and of code built on it: tiny simulated datasets."""

from __future__ import annotations

from pathlib import Path

import yaml

from autopid.config.dataset import (
    DatasetConfig,
    builtin_dataset_path,
    load_dataset_config,
)


def dataset_for(name: str, data_root: str | Path, **overrides: object) -> DatasetConfig:
    """The built-in dataset ``name`` (alice, ams) pointed at simulated files under ``data_root``."""
    raw = yaml.safe_load(builtin_dataset_path(name).read_text())
    root = Path(data_root)
    for src in raw["sources"]:
        src["files"] = [str(root / "{period}" / src["domain"] / "*.root")]
    raw.update(overrides)
    return DatasetConfig.model_validate(raw)


def write_dataset_yaml(cfg: DatasetConfig, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    assert load_dataset_config(path) == cfg
    return path


def write_run_dir(model: object, cfg: object, ds: object, run: str | Path) -> Path:
    """A training run directory (``model.pt``, ``config.yaml``, ``result.json``) as
    ``autopid train`` leaves it, for a model trained in-process by a test."""
    import json

    from autopid.config import dump_yaml
    from autopid.train import artifacts

    run = Path(run)
    run.mkdir(parents=True)
    artifacts.save_atomic(artifacts.model_payload(model, cfg, ds), run / "model.pt")
    (run / "config.yaml").write_text(dump_yaml(cfg))
    (run / "result.json").write_text(json.dumps({"cache": str(ds.path), "cache_key": ds.manifest["key"]}))
    return run


def mda_datasets_three_ways(frame: object, ds: object, calibration: object) -> tuple[object, object, object]:
    """MC rows built as the MDA reads them: gain-calibrated only (no overlay, removal or
    smearing), with ``calibration`` as MC, and with ``calibration`` as Data (which must
    leave them as the first)."""
    from autopid.calibration.gains import fit_charge_calibration
    from autopid.data.mda import MDADataset

    plain = fit_charge_calibration(ds, noise_overlay=False, hit_removal=False,  # type: ignore[arg-type]
                                   resolution_smearing=False)
    return (MDADataset(frame, ds, calibration=plain, domain="mc"),  # type: ignore[arg-type]
            MDADataset(frame, ds, calibration=calibration, domain="mc"),  # type: ignore[arg-type]
            MDADataset(frame, ds, calibration=calibration, domain="data"))  # type: ignore[arg-type]
