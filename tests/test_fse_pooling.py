"""FSE options: the paper's per-channel attention pooling next to one score per pair, a
value slope per feature in the pair embedding, and pre-LayerNorm encoder layers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from autopid.data import PreprocessedDataset, sample_mc
from autopid.models import FSEAttention
from autopid.publish.onnx_export import export_model
from autopid.testing import write_run_dir
from autopid.train import artifacts, core
from autopid.train.config import TrainConfig
from autopid.train.fit import fit


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids = torch.tensor([[0, 3, 5, 1], [2, 4, 0, 0], [6, 1, 2, 3]])
    values = torch.randn(3, 4)
    mask = torch.tensor([[False, False, False, True], [False, False, True, True], [False] * 4])
    return ids, values, mask


def test_channel_pooling_softmax_over_the_set_per_channel() -> None:
    torch.manual_seed(0)
    m = FSEAttention(num_features=7, embed_channels=(16, 8), num_heads=2, ff_channels=16, num_layers=1,
                     pool_channels=12, pooling="channel").eval()
    ids, values, mask = _batch()
    with torch.no_grad():
        out = m(ids, values, mask)
        onehot = torch.nn.functional.one_hot(ids, 7).float()
        h = m.encoder(m.embed(torch.cat([onehot, values.unsqueeze(-1)], -1)), src_key_padding_mask=mask)
        s = m.pool(h).masked_fill(mask.unsqueeze(-1), float("-inf"))
        a = torch.softmax(s, dim=1)
    assert s.shape == (3, 4, 8)  # the pooling MLP 8-12-8 scores each pair per channel
    assert torch.allclose(a.sum(1), torch.ones(3, 8), atol=1e-6)
    assert (a[mask] == 0).all()
    # the channels weigh the pairs differently: not one scalar weight per pair
    assert (a[~mask].std(dim=-1) > 1e-4).any()
    assert torch.allclose(out.features, (a * h).sum(1), atol=1e-6)
    # the reported attention is the mean weight of each pair: a distribution over the pairs
    assert out.attention.shape == (3, 4)
    assert torch.allclose(out.attention.sum(1), torch.ones(3), atol=1e-6)
    assert (out.attention[mask] == 0).all()


def test_scalar_pooling_is_the_default_and_keeps_its_weights() -> None:
    """Models saved before the option (one score per pair) load unchanged."""
    old = FSEAttention(num_features=7, embed_channels=(16, 8), num_layers=1)
    assert old.pooling == "scalar" and "score.weight" in old.state_dict()
    chan = FSEAttention(num_features=7, embed_channels=(16, 8), num_layers=1, pooling="channel")
    assert "score.weight" not in chan.state_dict()
    assert {k for k in chan.state_dict()} < {k for k in old.state_dict()}
    with pytest.raises(ValueError, match="unknown pooling 'mean'.*channel.*scalar"):
        FSEAttention(num_features=7, pooling="mean")
    with pytest.raises(ValueError, match="unknown value_input 'x'.*shared.*per_feature"):
        FSEAttention(num_features=7, value_input="x")


def test_per_feature_value_input_gives_each_feature_its_own_slope() -> None:
    torch.manual_seed(0)
    m = FSEAttention(num_features=8, embed_channels=(16, 8), num_layers=1, value_input="per_feature")
    first = m.embed[0]
    assert first.in_features == 16  # [onehot, onehot * value]
    assert FSEAttention(num_features=8, embed_channels=(16, 8), num_layers=1).embed[0].in_features == 9
    ids, values, mask = _batch()
    m(ids, values, mask).logits.sum().backward()
    # a feature's slope learns from that feature's values only: feature 7 is in no track
    used = set(ids[~mask].tolist())
    assert used == set(range(7))
    slope_grad = first.weight.grad[:, 8:].abs().sum(0)
    assert (slope_grad[:7] > 0).all() and slope_grad[7] == 0


def test_build_model_takes_the_pooling_from_the_config(alice_ds: PreprocessedDataset) -> None:
    m = core.build_model("fse", alice_ds, {"pooling": "channel"}, domain_head=True)
    assert m.pooling == "channel" and m.domain is not None


def test_paper_pooling_and_options_export_to_onnx_with_parity(alice_ds: PreprocessedDataset, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    params = {"embed_channels": [32, 16], "ff_channels": 32, "num_layers": 2, "pool_channels": 16,
              "classifier_channels": 16, "pooling": "channel", "value_input": "per_feature", "norm_first": True}
    cfg = TrainConfig(dataset="alice", species="kaon", model={"family": "fse", "params": params},
                      training={"epochs": 1, "max_train_rows": 600, "max_eval_rows": 300, "batch_size": 64})
    model, _ = fit(cfg, alice_ds)
    run = write_run_dir(model, cfg, alice_ds, tmp_path / "run")
    res = export_model(run / "model.pt", alice_ds, tmp_path / "export")
    # the export refuses itself when ONNX Runtime and PyTorch differ; it passed, on every pattern
    assert res.parity.max_abs_diff <= 1e-5
    loaded, payload = artifacts.load_model(run / "model.pt", alice_ds)
    assert payload["params"]["pooling"] == "channel" and loaded.pooling == "channel"
    assert loaded.value_input == "per_feature"
    assert np.isfinite(core.predict_frame(loaded, "fse", sample_mc(alice_ds, "test", "kaon", max_rows=50),
                                          alice_ds)["score"]).all()
