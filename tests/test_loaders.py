from __future__ import annotations

import numpy as np
import pytest
import torch

from autopid.data import (
    FSEDataset,
    MDADataset,
    PreprocessedDataset,
    fse_dataloader,
    mda_dataloader,
    sample_data,
    sample_mc,
)
from autopid.preprocess import PreprocessResult


def test_background_mix_applied_when_sampling(alice_cache: PreprocessResult) -> None:
    ds = PreprocessedDataset(alice_cache.path)
    natural = sample_mc(ds, "train", "kaon")
    assert natural["y"].mean() < 0.2  # kaons are rare in the natural mix
    mixed = sample_mc(ds, "train", "kaon", signal_fraction=0.5, background_mix={"pion": 0.5, "proton": 0.5}, seed=1)
    assert mixed["y"].mean() == pytest.approx(0.5, abs=0.01)
    bkg = ds.label_species(mixed.loc[mixed["y"] == 0, "truth_label"].to_numpy())
    names, counts = np.unique(bkg, return_counts=True)
    share = dict(zip(names.tolist(), (counts / counts.sum()).tolist()))
    assert share["pion"] == pytest.approx(share["proton"], rel=0.05)
    # the species not named (electrons, muons) keep their natural share of the background
    full = sample_mc(ds, "train", "kaon")
    nat = ds.label_species(full.loc[full["y"] == 0, "truth_label"].to_numpy())
    for name in set(np.unique(nat)) - {"pion", "proton"}:
        assert share.get(name, 0.0) == pytest.approx(float(np.mean(nat == name)), abs=0.01), name
    assert share["pion"] + share["proton"] > 0.9
    # 0 drops a species
    only = sample_mc(ds, "train", "kaon", signal_fraction=0.5, seed=1,
                     background_mix={"pion": 0.5, "proton": 0.5, "electron": 0.0, "muon": 0.0})
    assert set(ds.label_species(only.loc[only["y"] == 0, "truth_label"].to_numpy())) <= {"pion", "proton", "other"}
    again = sample_mc(ds, "train", "kaon", signal_fraction=0.5, background_mix={"pion": 0.5, "proton": 0.5}, seed=1)
    assert again.equals(mixed)


def test_fse_batches_mix_missing_patterns(alice_cache: PreprocessResult) -> None:
    ds = PreprocessedDataset(alice_cache.path)
    frame = sample_mc(ds, "train", "proton", max_rows=2000)
    fse = FSEDataset(frame, ds.normaliser)
    assert fse.num_features == 19
    raw = ds.normaliser.transform(frame)
    n_present = np.isfinite(raw).sum(axis=1)
    assert len(np.unique(n_present)) >= 2, "the sample should hold tracks with and without TOF/TRD"
    batch = next(iter(fse_dataloader(fse, batch_size=256, shuffle=False)))
    ids, vals, pad = batch["feature_ids"], batch["values"], batch["padding_mask"]
    assert ids.shape == vals.shape == pad.shape
    assert ids.shape[1] == int(n_present[:256].max())
    assert (~pad).sum(dim=1).tolist() == n_present[:256].tolist()
    # every (id, value) pair is the track's own normalised value; no pair for a missing feature
    for row in range(0, 256, 37):
        real = ~pad[row]
        got = dict(zip(ids[row][real].tolist(), vals[row][real].tolist()))
        expect = {j: raw[row, j] for j in np.flatnonzero(np.isfinite(raw[row]))}
        assert got.keys() == expect.keys()
        assert np.allclose([got[k] for k in expect], list(expect.values()), atol=1e-6)
    assert batch["y"].shape == (256,) and batch["has_label"].all()


def test_fse_loader_gives_the_batches_of_a_seeded_dataloader(alice_cache: PreprocessResult) -> None:
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler

    ds = PreprocessedDataset(alice_cache.path)
    fse = FSEDataset(sample_mc(ds, "train", "proton", max_rows=700), ds.normaliser)
    gen = torch.Generator().manual_seed(9)
    ref = DataLoader(fse, sampler=BatchSampler(RandomSampler(fse, generator=gen), batch_size=128, drop_last=False),
                     batch_size=None, collate_fn=lambda b: b)
    loader = fse_dataloader(fse.to("cpu"), batch_size=128, seed=9)
    got, want = list(loader), list(ref)
    assert len(got) == len(want) == len(loader) == 6
    for a, b in zip(got, want):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    again = list(loader)  # a new order on each pass
    assert not torch.equal(again[0]["values"], got[0]["values"])
    assert len(fse_dataloader(fse, batch_size=128, drop_last=True)) == 5


def test_fse_data_rows_are_unlabelled(alice_cache: PreprocessResult) -> None:
    ds = PreprocessedDataset(alice_cache.path)
    data = sample_data(ds, "train", max_rows=300)
    assert not any(c.startswith("hidden_") for c in data.columns)
    fse = FSEDataset(data, ds.normaliser)
    batch = fse[list(range(10))]
    assert not batch["has_label"].any() and (batch["domain"] == 1).all()


def test_mda_graphs(ams_cache: PreprocessResult) -> None:
    ds = PreprocessedDataset(ams_cache.path)
    frame = sample_mc(ds, "train", "phosphorus", signal_fraction=0.5, max_rows=600)
    mda = MDADataset(frame, ds)
    assert mda.layers == [1, 2, 3, 4, 5, 6, 7, 8]
    x, edges, kinds = mda.graph(0)
    assert set(kinds.tolist()) <= {0, 1, 2} and len(kinds) == edges.shape[1]
    n_hits = int(mda.hit[0].sum())
    assert x.shape == (n_hits, mda.num_node_features)
    assert edges.shape[0] == 2 and edges.max() < n_hits
    # undirected: every edge appears in both directions
    pairs = set(map(tuple, edges.T.tolist()))
    assert all((b, a) in pairs for a, b in pairs)
    # L1 has positions and, in the built-in dataset, a charge input (charge layers 1-8)
    l1 = np.isclose(x[:, 3], 1.59)
    assert l1.any() and (x[l1, 2] == 1).any()
    batch = next(iter(mda_dataloader(mda, batch_size=32, shuffle=False)))
    assert batch.num_graphs == 32
    assert batch.image.shape == (32, 1, 8, 2)
    assert batch.rigidity.shape == (32, 4) and batch.tof.shape == (32, 14)
    assert batch.y.shape == (32,) and set(batch.y.tolist()) <= {0.0, 1.0}
    assert int(batch.batch.max()) == 31


def test_mda_graph_has_second_track_edges(ams_cache: PreprocessResult) -> None:
    ds = PreprocessedDataset(ams_cache.path)
    mda = MDADataset(sample_mc(ds, "train", "phosphorus", max_rows=2000), ds)
    two_tracks = np.flatnonzero(mda.hit[:, 1].any(axis=(1, 2)))
    assert len(two_tracks) > 0
    i = int(two_tracks[0])
    x, edges, kinds = mda.graph(i)
    track = x[:, 5]
    cross = (track[edges[0]] != track[edges[1]]).sum()
    assert cross > 0 and (kinds[track[edges[0]] != track[edges[1]]] == 2).all()
    g = mda[i]
    assert torch.equal(g.edge_index, torch.from_numpy(edges))
