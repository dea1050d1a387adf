"""Training on Ray Train: a ``TorchTrainer`` runs :func:`autopid.train.fit.fit` on N workers.

Each epoch every worker reports the validation metrics and rank 0 a checkpoint (model,
optimizer, scheduler and loop state); after a worker failure Ray restarts the group and
the loop resumes from the latest checkpoint (``FailureConfig``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from autopid._logging import get_logger
from autopid.train.config import TrainConfig

_log = get_logger(__name__)


def _train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train
    import torch

    from autopid.data import PreprocessedDataset
    from autopid.train import artifacts
    from autopid.train.fit import fit

    cfg = TrainConfig.model_validate(config["train_config"])
    ctx = ray.train.get_context()
    # Ray sets OMP_NUM_THREADS=1 in workers; use the CPUs this worker reserved
    torch.set_num_threads(cfg.training.threads or max(1, int(cfg.scaling.cpus_per_worker)))
    ds = PreprocessedDataset(config["cache_path"])
    resume = None
    ckpt = ray.train.get_checkpoint()
    trial = config.get("trial")
    if ckpt is not None:
        with ckpt.as_directory() as d:
            resume = artifacts.load_checkpoint(Path(d) / artifacts.CHECKPOINT_FILE)
    elif trial is not None:
        from autopid.search.trial import load_resume

        resume = load_resume(Path(trial["dir"]))  # a search trial cut short: its own checkpoint
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    wrap = ray.train.torch.prepare_model if world > 1 else None

    def report_only(metrics: dict[str, float]) -> None:
        ray.train.report(metrics)

    def on_epoch_end(metrics: dict[str, float], model: Any, opt: Any, sched: Any, state: Any, improved: bool) -> None:
        with tempfile.TemporaryDirectory() as d:
            checkpoint = None
            if rank == 0:
                artifacts.save_atomic(artifacts.checkpoint_payload(model, opt, sched, state),
                                      Path(d) / artifacts.CHECKPOINT_FILE)
                inner = model.module if hasattr(model, "module") else model
                artifacts.save_atomic(artifacts.model_payload(inner, cfg, ds), Path(d) / artifacts.MODEL_FILE)
                checkpoint = ray.train.Checkpoint.from_directory(d)
            ray.train.report({**metrics, "best_objective": state.best_objective}, checkpoint=checkpoint)

    hook = on_epoch_end
    if trial is not None:
        # a search trial: the trial directory is the checkpoint (see autopid.search.trial)
        from autopid.search.trial import epoch_hook

        trial_hook = epoch_hook(cfg, ds, Path(trial["dir"]), trial["number"], trial["params"], report_only)

        def hook(metrics: dict[str, float], model: Any, opt: Any, sched: Any, state: Any, improved: bool) -> None:
            if rank == 0:
                trial_hook(metrics, model, opt, sched, state, improved)
            else:
                ray.train.report({**metrics, "best_objective": state.best_objective})

    fit(cfg, ds, on_epoch_end=hook, resume=resume, rank=rank, world_size=world, wrap=wrap,
        device=device, domain_penalty=config.get("domain_penalty", 1.0))


def make_trainer(cfg: TrainConfig, cache_path: str | Path, *, storage_path: str | Path, name: str,
                 callbacks: list[Any] | None = None, domain_penalty: float = 1.0,
                 max_failures: int = 2, trial: dict[str, Any] | None = None) -> Any:
    """A ``TorchTrainer`` for ``cfg``; results and checkpoints go to ``storage_path/name``.

    ``storage_path`` may be a local directory or any pyarrow/fsspec URL that every node
    can reach (a shared directory, ``s3://...``) when running on a cluster.
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    s = cfg.scaling
    resources = {"CPU": s.cpus_per_worker}
    if s.use_gpu:
        resources["GPU"] = s.gpus_per_worker
    storage = str(storage_path) if "://" in str(storage_path) else str(Path(storage_path).resolve())
    return TorchTrainer(
        _train_loop_per_worker,
        train_loop_config={"train_config": cfg.model_dump(mode="json"), "cache_path": str(cache_path),
                           "domain_penalty": domain_penalty, "trial": trial},
        torch_config=TorchConfig(backend="nccl" if s.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage,
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=3, checkpoint_score_attribute="objective", checkpoint_score_order="max"),
            callbacks=callbacks or [],
            # Train's per-report INFO lines would bury the progress table
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
    )


def configure_ray_env() -> None:
    """Quiet, local-friendly defaults; must run before ``import ray``."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    # a reused trial process waits this long for the previous trial's thread to end
    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", "30")
    # Train's controller polls its workers this often: at 2 s (Ray's default) a short run
    # waits up to 2 s more after its last epoch (measured: 1-3 s per trial)
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # the legacy reporter prints nothing at verbose=0; the new one still prints its boxes
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def init_ray(address: str | None = None, num_cpus: int | None = None, *, log_to_driver: bool = True) -> None:
    """Attach to ``address`` (or ``$RAY_ADDRESS``) or start a private local instance
    (see :mod:`autopid.ray_local`)."""
    configure_ray_env()
    from autopid.ray_local import start_or_attach

    start_or_attach(address, num_cpus=num_cpus, log_to_driver=log_to_driver)
