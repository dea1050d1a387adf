"""A fit cut short and resumed from its checkpoint ends with the same weights as one that
ran through: shuffling is seeded per epoch, and the checkpoint carries the random state
that dropout draws from."""

from __future__ import annotations

import copy
import io

import pytest
import torch

from autopid.data import PreprocessedDataset
from autopid.train import artifacts
from autopid.train.config import TrainConfig
from autopid.train.fit import fit


def _cfg(family: str, epochs: int) -> TrainConfig:
    # MDA with adaptation: the warm-up, the Data class mix and the label weights resume too
    return TrainConfig.model_validate({
        "dataset": "unused", "species": "proton" if family == "fse" else "phosphorus",
        "model": {"family": family, "params": {"dropout": 0.3}},
        "training": {"epochs": epochs, "batch_size": 128, "max_train_rows": 600, "max_eval_rows": 300,
                     "lambda_max": 0.0 if family == "fse" else 0.1, "early_stopping_patience": None}})


def _through_disk(payload: dict) -> dict:
    buf = io.BytesIO()
    torch.save(payload, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("family", ["fse", "mda"])
def test_a_resumed_fit_ends_where_an_uninterrupted_one_does(family: str, alice_ds: PreprocessedDataset,
                                                            ams_ds: PreprocessedDataset) -> None:
    ds = alice_ds if family == "fse" else ams_ds
    through, full = fit(_cfg(family, 3), ds)
    saved: list[dict] = []

    def cut_after_epoch_2(metrics: dict, model: torch.nn.Module, opt: object, sched: object, state: object,
                          improved: bool) -> None:
        saved.append(copy.deepcopy(artifacts.checkpoint_payload(model, opt, sched, state)))
        if len(saved) == 2:
            raise KeyboardInterrupt  # the same run (same schedules), stopped

    with pytest.raises(KeyboardInterrupt):
        fit(_cfg(family, 3), ds, on_epoch_end=cut_after_epoch_2)
    torch.manual_seed(12345)  # whatever the process drew in between
    resumed, state = fit(_cfg(family, 3), ds, resume=_through_disk(saved[-1]))
    assert state.epoch == 3 and state.history[-1]["objective"] == full.history[-1]["objective"]
    for (name, a), b in zip(through.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
