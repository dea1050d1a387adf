"""``autopid train``: one model, one run directory.

Layout of a run directory::

    config.yaml, metadata.json   resolved config, versions, git revision, input hashes
    ray/                         Ray Train results: checkpoint_* of each epoch
    metrics.csv                  validation metrics per epoch
    model.pt                     the best epoch's model (weights_only loadable)
    result.json                  best epoch, its metrics, the preprocessing cache used
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd

from autopid._logging import get_logger
from autopid.config import load_dataset_config, load_yaml_config
from autopid.data import PreprocessedDataset
from autopid.errors import AutopidError
from autopid.models.check import check_model_params
from autopid.preprocess import PreprocessResult, preprocess
from autopid.provenance import atomic_write_text, write_run_info
from autopid.train import artifacts
from autopid.train.config import TrainConfig

_log = get_logger(__name__)


def prepare_data(cfg: TrainConfig, scheduler: str | None = None) -> PreprocessResult:
    ds_cfg = load_dataset_config(cfg.dataset).with_period(cfg.period)
    ds_cfg.species_of(cfg.species)
    for name in (cfg.training.background_mix or {}):
        if name != "other":
            ds_cfg.species_of(name)
    return preprocess(ds_cfg, cache_root=cfg.cache_dir, scheduler=scheduler)


def best_checkpoint(result: Any) -> Any:
    """The checkpoint with the highest objective among those Ray kept."""
    ranked = [(m.get("objective", float("-inf")), c) for c, m in (result.best_checkpoints or [])]
    if ranked:
        return max(ranked, key=lambda t: t[0])[1]
    return result.checkpoint


def finish_run_dir(run_dir: Path, result: Any, prep: PreprocessResult, epochs_max: int | None = None) -> dict[str, Any]:
    """Copy the best model next to the run's metrics and write ``result.json``.

    The epochs run and the history come from the LATEST checkpoint (the loop's final
    state); the model from the best one. (The best checkpoint's own state stops at the
    best epoch: reading the epoch count there reported ``best epoch 4/4`` after 8.)"""
    ckpt = best_checkpoint(result)
    if ckpt is None:
        raise AutopidError(f"{run_dir}: training produced no checkpoint ({result.error})")
    with ckpt.as_directory() as d:
        shutil.copyfile(Path(d) / artifacts.MODEL_FILE, run_dir / f".{artifacts.MODEL_FILE}.tmp")
        state = artifacts.load_checkpoint(Path(d) / artifacts.CHECKPOINT_FILE)["state"]
    (run_dir / f".{artifacts.MODEL_FILE}.tmp").replace(run_dir / artifacts.MODEL_FILE)
    final = state
    latest = result.checkpoint
    if latest is not None:
        with latest.as_directory() as d:
            final = artifacts.load_checkpoint(Path(d) / artifacts.CHECKPOINT_FILE)["state"]
    pd.DataFrame(final["history"]).to_csv(run_dir / "metrics.csv", index=False)
    best_epoch = int(final["best_epoch"])
    if int(state["epoch"]) != best_epoch:
        _log.warning("%s: the best checkpoint kept is epoch %s, the loop's best epoch is %s", run_dir, state["epoch"],
                     best_epoch)
    best = next((h for h in final["history"] if int(h["epoch"]) == best_epoch), final["history"][-1])
    summary = {"best_epoch": best_epoch, "best_metrics": best, "epochs_run": int(final["epoch"]),
               "epochs_max": epochs_max,
               "cache": str(prep.path), "cache_key": prep.manifest["key"], "model": str(run_dir / artifacts.MODEL_FILE)}
    atomic_write_text(run_dir / "result.json", json.dumps(summary, indent=2) + "\n")
    return summary


# what may change when a run is resumed: how long it trains and on what resources
_RESUMABLE_CHANGES = ("scaling", "training.epochs", "training.threads")


def _has_checkpoint(run_dir: Path) -> bool:
    return any(p.is_dir() for p in (run_dir / "ray").glob("**/checkpoint_*"))


def check_resumable(run_dir: Path, cfg: TrainConfig, inputs: dict[str, str]) -> None:
    """An existing run directory is resumed from its last checkpoint; refuse when that
    checkpoint belongs to another configuration or other input files, which would go on
    training the old model under the new config's name. Without a checkpoint (the first
    attempt died before its first epoch) there is nothing to resume: anything goes."""
    if not (run_dir / "config.yaml").is_file() or not _has_checkpoint(run_dir):
        return
    try:
        old = load_yaml_config(run_dir / "config.yaml", TrainConfig)
    except Exception as exc:  # noqa: BLE001 - any reason it cannot be read refuses
        raise AutopidError(f"{run_dir}: holds a config.yaml that is not a training config ({exc}); "
                           "give another --out") from None
    before, now = _flat(old.model_dump(mode="json")), _flat(cfg.model_dump(mode="json"))
    changed = sorted(k for k in before.keys() | now.keys()
                     if before.get(k) != now.get(k) and not k.startswith(_RESUMABLE_CHANGES))
    if changed:
        shown = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed[:4])
        more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        raise AutopidError(f"{run_dir}: holds a run of another configuration ({shown}{more}); the same --out "
                           "resumes a run, so give another --out, or remove the directory to start over")
    try:
        old_inputs = json.loads((run_dir / "metadata.json").read_text()).get("inputs")
    except (OSError, ValueError):
        old_inputs = None
    # the files' contents: the same files found under another path are the same data
    if old_inputs is not None and sorted(old_inputs.values()) != sorted(inputs.values()):
        raise AutopidError(f"{run_dir}: the run's input files changed since it began; its checkpoints were "
                           "trained on the old data. Give another --out, or remove the directory to start over")


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def default_run_dir(cfg: TrainConfig) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"train-{cfg.model.family}-{cfg.species}-{stamp}"


def train(cfg: TrainConfig, *, run_dir: str | Path | None = None, address: str | None = None,
          scheduler: str | None = None) -> dict[str, Any]:
    """Preprocess (or hit the cache), train on Ray Train, keep the best model."""
    from autopid.train.ray_train import init_ray, make_trainer

    t0 = time.perf_counter()
    run_path = Path(run_dir) if run_dir is not None else default_run_dir(cfg)
    check_model_params(cfg.model.family, cfg.model.params, where="model.params")
    prep = prepare_data(cfg, scheduler)
    inputs = {i["path"]: i["sha256"] for i in prep.manifest["inputs"]}
    check_resumable(run_path, cfg, inputs)
    run_path.mkdir(parents=True, exist_ok=True)
    write_run_info(run_path, cfg, inputs=inputs, cache=str(prep.path))
    init_ray(address)
    result = make_trainer(cfg, prep.path, storage_path=run_path, name="ray").fit()
    summary = finish_run_dir(run_path, result, prep, epochs_max=cfg.training.epochs)
    summary["run_dir"] = str(run_path)
    summary["seconds"] = time.perf_counter() - t0
    return summary


def load_trained(run_dir: str | Path) -> tuple[Any, dict[str, Any], PreprocessedDataset]:
    """The best model of a run directory, with its payload and dataset."""
    run_dir = Path(run_dir)
    info = json.loads((run_dir / "result.json").read_text())
    ds = PreprocessedDataset(info["cache"])
    model, payload = artifacts.load_model(run_dir / artifacts.MODEL_FILE, ds)
    return model, payload, ds
