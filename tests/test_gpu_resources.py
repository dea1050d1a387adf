"""How many trials fit at once, from the resources a Ray cluster reports (no GPU needed)."""

from __future__ import annotations

import pytest

from autopid.errors import AutopidError
from autopid.search.runner import _max_concurrent
from autopid.train.config import TrainConfig


def _cfg(**scaling: object) -> TrainConfig:
    return TrainConfig.model_validate({"dataset": "alice", "species": "proton", "model": {"family": "fse"},
                                       "scaling": scaling})


def test_cpu_trials_follow_the_cpus() -> None:
    assert _max_concurrent({"CPU": 16.0}, _cfg(num_workers=2, cpus_per_worker=2)) == 4
    assert _max_concurrent({"CPU": 1.0}, _cfg(num_workers=2)) == 1  # one still runs, Ray queues it


def test_a_gpu_fraction_lets_trials_share_a_gpu() -> None:
    cfg = _cfg(use_gpu=True, gpus_per_worker=0.25, cpus_per_worker=2)
    assert _max_concurrent({"CPU": 16.0, "GPU": 1.0}, cfg) == 4
    assert _max_concurrent({"CPU": 4.0, "GPU": 1.0}, cfg) == 2  # then the CPUs limit
    with pytest.raises(AutopidError, match="ask for 1 x 0.25 GPU but the Ray cluster has 0"):
        _max_concurrent({"CPU": 16.0}, cfg)


def test_gpu_fraction_is_validated() -> None:
    with pytest.raises(ValueError, match="gpus_per_worker"):
        _cfg(use_gpu=True, gpus_per_worker=1.5)
