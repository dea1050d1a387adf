from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from autopid.data import FSEDataset, MDADataset, PreprocessedDataset, sample_data, sample_mc
from autopid.data.fse import to_pairs
from autopid.data.mda import mda_dataloader
from autopid.models import MDA, FSEAttention, dann_lambda, grad_reverse
from autopid.models.mda import BRANCHES
from autopid.train.core import build_model


def test_grad_reverse_flips_and_scales() -> None:
    x = torch.randn(5, 3, requires_grad=True)
    (grad_reverse(x, 0.7) * torch.arange(3.0)).sum().backward()
    assert torch.allclose(x.grad, -0.7 * torch.arange(3.0).expand(5, 3))
    assert torch.equal(grad_reverse(x, 0.7), x)
    assert dann_lambda(0.0, 2.0) == 0.0
    assert dann_lambda(1.0, 2.0) == pytest.approx(2.0 * (2 / (1 + np.exp(-10)) - 1))
    assert dann_lambda(0.5, 0.0) == 0.0


def _patterns(ds: PreprocessedDataset) -> dict[tuple[bool, ...], np.ndarray]:
    frame = sample_mc(ds, "train", "proton", max_rows=3000)
    present = np.isfinite(ds.normaliser.transform(frame))
    groups: dict[tuple[bool, ...], list[int]] = {}
    for i, row in enumerate(present):
        groups.setdefault(tuple(row), []).append(i)
    return frame, {k: np.asarray(v) for k, v in groups.items()}


@pytest.mark.parametrize("pooling", ["scalar", "channel"])
def test_fse_forward_backward_every_missing_pattern(alice_ds: PreprocessedDataset, pooling: str) -> None:
    frame, groups = _patterns(alice_ds)
    assert len(groups) >= 3, "TOF and TRD presence should give several patterns"
    fse = FSEDataset(frame, alice_ds.normaliser)
    model = FSEAttention(num_features=fse.num_features, domain_head=True, pooling=pooling)
    for pattern, idx in groups.items():
        batch = fse[idx[:16].tolist()]
        out = model(batch["feature_ids"], batch["values"], batch["padding_mask"], grl_lambda=0.5)
        assert out.logits.shape == (len(idx[:16]),) and torch.isfinite(out.logits).all()
        (out.logits.sum() + out.domain_logits.sum()).backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        model.zero_grad()
        assert batch["feature_ids"].shape[1] == sum(pattern)


FSE_OPTIONS = [{"pooling": "scalar"}, {"pooling": "channel"},
               {"pooling": "channel", "value_input": "per_feature", "norm_first": True}]


@pytest.mark.parametrize("options", FSE_OPTIONS, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_fse_permutation_and_batch_invariance(alice_ds: PreprocessedDataset, options: dict) -> None:
    frame, groups = _patterns(alice_ds)
    fse = FSEDataset(frame, alice_ds.normaliser)
    torch.manual_seed(0)
    model = FSEAttention(num_features=fse.num_features, **options).eval()
    sparse = next(idx[0] for pat, idx in groups.items() if sum(pat) < max(map(sum, groups)))
    full = [int(idx[0]) for pat, idx in groups.items() if pat != tuple(fse.present[int(sparse)].tolist())]
    alone = fse[[int(sparse)]]
    mixed = fse[[int(sparse), *full]]
    assert mixed["feature_ids"].shape[1] > alone["feature_ids"].shape[1]
    with torch.no_grad():
        a = model(alone["feature_ids"], alone["values"], alone["padding_mask"]).logits[0]
        b = model(mixed["feature_ids"], mixed["values"], mixed["padding_mask"]).logits[0]
        assert torch.allclose(a, b, atol=1e-5)
        # reversing the order of the present pairs changes nothing
        batch = fse[list(range(64))]
        ref = model(batch["feature_ids"], batch["values"], batch["padding_mask"]).logits
        n = (~batch["padding_mask"]).sum(1)
        perm = torch.stack([torch.cat([torch.randperm(int(k)), torch.arange(int(k), batch["feature_ids"].shape[1])])
                            for k in n])
        shuffled = {k: v.gather(1, perm) for k, v in batch.items() if k in ("feature_ids", "values", "padding_mask")}
        out = model(shuffled["feature_ids"], shuffled["values"], shuffled["padding_mask"]).logits
        assert torch.allclose(ref, out, atol=1e-5)
        # but the values matter
        assert not torch.allclose(ref, model(batch["feature_ids"], batch["values"] + 1, batch["padding_mask"]).logits)


def test_to_pairs_drops_missing() -> None:
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    present = torch.tensor([[True, False, True], [False, False, True]])
    p = to_pairs(values, present)
    assert p["feature_ids"].tolist() == [[0, 2], [2, 0]]
    assert p["padding_mask"].tolist() == [[False, False], [False, True]]
    assert p["values"][0].tolist() == [1.0, 3.0]


@pytest.mark.parametrize("off", [None, *BRANCHES])
def test_mda_forward_backward_with_branches_off(ams_ds: PreprocessedDataset, off: str | None) -> None:
    frame = sample_mc(ams_ds, "train", "phosphorus", max_rows=200)
    frame = frame.iloc[:24].reset_index(drop=True)
    batch = next(iter(mda_dataloader(MDADataset(frame, ams_ds), batch_size=24, shuffle=False)))
    branches = [b for b in BRANCHES if b != off]
    model = build_model("mda", ams_ds, {"branches": branches}, domain_head=True)
    out = model(batch, grl_lambda=1.0)
    assert out.logits.shape == (24,) and out.domain_logits.shape == (24,)
    assert out.attention.shape == (24, len(branches))
    assert torch.allclose(out.attention.sum(-1), torch.ones(24), atol=1e-5)
    (out.logits.sum() + out.domain_logits.sum()).backward()
    for name in branches:
        grads = [p.grad for p in model.branches[name].parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert any(g.abs().sum() > 0 for g in grads), name
    if off is not None:
        assert off not in model.branches


def test_mda_rejects_unknown_branch() -> None:
    with pytest.raises(ValueError, match="subset of"):
        MDA(rigidity_channels=4, tof_channels=14, branches=["gnn", "calorimeter"])


def test_mda_data_rows_and_permutation_of_events(ams_ds: PreprocessedDataset) -> None:
    data = sample_data(ams_ds, "train", max_rows=16)
    model = build_model("mda", ams_ds, {}, domain_head=True).eval()
    ds = MDADataset(data, ams_ds)
    with torch.no_grad():
        whole = model(next(iter(mda_dataloader(ds, batch_size=16, shuffle=False)))).logits
        one = model(next(iter(mda_dataloader(torch.utils.data.Subset(ds, [5]), batch_size=1, shuffle=False)))).logits
    assert torch.allclose(whole[5], one[0], atol=1e-5)


@pytest.mark.parametrize("pooling", ["scalar", "channel"])
def test_every_size_is_a_constructor_argument(pooling: str) -> None:
    m = FSEAttention(num_features=7, embed_channels=(16, 8), num_heads=4, ff_channels=24, num_layers=1,
                     pool_channels=12, classifier_channels=10, num_outputs=3, pooling=pooling)
    ids = torch.tensor(list(itertools.islice(itertools.cycle(range(7)), 10))).reshape(2, 5)
    out = m(ids, torch.randn(2, 5), torch.zeros(2, 5, dtype=torch.bool))
    assert out.logits.shape == (2, 3) and out.features.shape == (2, 8)
