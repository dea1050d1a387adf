"""One search trial, run by Ray Tune.

A one-worker trial trains in the Tune trial's own process (``fit`` directly: no Ray
Train controller, worker group or placement group of its own, and a reused actor keeps
torch and the data loaded between trials). A trial with several workers launches a Ray
Train ``TorchTrainer``, as ``autopid train`` does. Both checkpoint into the trial's own
directory, keyed by its Optuna trial number, so a trial cut short by a crash or Ctrl-C
continues from its last epoch when the search is resumed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autopid.search import records
from autopid.search.space import SearchSpace, Study


def run_trial(config: dict[str, Any], context: dict[str, Any], dataset: Any = None) -> None:
    space = SearchSpace.model_validate(context["space"])
    study = Study.model_validate(context["study"])
    number = int(config["trial"])
    params = dict(config["params"])
    cfg = space.train_config(study, params).model_copy(update={"period": study.period})
    tdir = records.trial_dir(context["trials_dir"], number)
    tdir.mkdir(parents=True, exist_ok=True)
    penalty = space.objective.domain_penalty
    if cfg.scaling.num_workers == 1:
        _fit_here(cfg, dataset, tdir, number, params, penalty)
    else:
        _fit_ray_train(cfg, context["cache_path"], tdir, number, params, penalty)


def epoch_hook(cfg: Any, ds: Any, tdir: Path, number: int, params: dict[str, Any], report: Any) -> Any:
    """What a trial does after each epoch: keep the best model, checkpoint, write the record,
    then report (in this order, so that a kill at any point leaves a consistent directory)."""
    from autopid.train import artifacts

    t = cfg.training

    def hook(metrics: dict[str, float], model: Any, opt: Any, sched: Any, state: Any, improved: bool) -> None:
        inner = model.module if hasattr(model, "module") else model
        if improved:
            artifacts.save_atomic(artifacts.model_payload(inner, cfg, ds), tdir / records.model_file(state.best_epoch))
        artifacts.save_atomic(artifacts.checkpoint_payload(model, opt, sched, state), tdir / records.STATE_FILE)
        for old in tdir.glob("model-epoch*.pt"):
            if old.name != records.model_file(state.best_epoch):
                old.unlink(missing_ok=True)
        stop = _stop_reason(state, t.epochs, t.early_stopping_patience)
        records.write_record(tdir, number, params, state.history, state.best_epoch, t.epochs, stop)
        report({**metrics, "trial": number, "best_objective": state.best_objective,
                "best_epoch": state.best_epoch})

    return hook


def _stop_reason(state: Any, epochs: int, patience: int | None) -> str | None:
    if state.epoch >= epochs:
        return "epochs"
    if patience is not None and state.epochs_without_improvement >= patience:
        return "patience"
    return None


def load_resume(tdir: Path) -> dict[str, Any] | None:
    from autopid.train import artifacts

    state = tdir / records.STATE_FILE
    return artifacts.load_checkpoint(state) if state.is_file() else None


def _fit_here(cfg: Any, ds: Any, tdir: Path, number: int, params: dict[str, Any], penalty: float) -> None:
    import torch
    from ray import tune

    from autopid.train.fit import fit

    torch.set_num_threads(cfg.training.threads or max(1, int(cfg.scaling.cpus_per_worker)))
    device = torch.device("cuda") if cfg.scaling.use_gpu and torch.cuda.is_available() else torch.device("cpu")
    resume = load_resume(tdir)
    hook = epoch_hook(cfg, ds, tdir, number, params, tune.report)
    fit(cfg, ds, on_epoch_end=hook, resume=resume, device=device, domain_penalty=penalty)


def _fit_ray_train(cfg: Any, cache_path: str, tdir: Path, number: int, params: dict[str, Any],
                   penalty: float) -> None:
    from ray.tune.integration.ray_train import TuneReportCallback

    from autopid.train.ray_train import make_trainer

    trainer = make_trainer(cfg, cache_path, storage_path=tdir, name="ray", callbacks=[TuneReportCallback()],
                           domain_penalty=penalty, trial={"dir": str(tdir), "number": number, "params": params})
    trainer.fit()
