"""The vectorised MDA graphs and batches against the per-event path they replaced."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch, Data

from autopid.data import MDADataset, PreprocessedDataset, mda_dataloader, sample_data, sample_mc

FIELDS = ("x", "edge_index", "edge_type", "batch", "ptr", "image", "rigidity", "tof", "y", "domain", "has_label")


def old_graph(ds: MDADataset, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The per-event graph builder as it was before the graphs were vectorised."""
    hit = ds.hit[i]  # [T, L, S]
    node = np.full(hit.shape, -1, dtype=np.int64)
    node[hit] = np.arange(int(hit.sum()))
    t_idx, l_idx, s_idx = np.nonzero(hit)
    x = np.stack([
        ds.pos[i][hit], ds.charge[i][hit], ds.has_charge[i][hit].astype(np.float32),
        ds.layer_z[l_idx], s_idx.astype(np.float32), t_idx.astype(np.float32),
    ], axis=1).astype(np.float32)
    src: list[np.ndarray] = []
    dst: list[np.ndarray] = []
    kind: list[np.ndarray] = []

    def add(a: np.ndarray, b: np.ndarray, k: int) -> None:
        src.append(a)
        dst.append(b)
        kind.append(np.full(len(a), k, dtype=np.int64))

    for t in range(hit.shape[0]):
        for s in range(hit.shape[2]):
            chain = node[t, :, s][hit[t, :, s]]
            add(chain[:-1], chain[1:], 0)
    xy = hit[:, :, 0] & hit[:, :, 1]
    add(node[:, :, 0][xy], node[:, :, 1][xy], 1)
    if hit.shape[0] > 1:
        tt = hit[0] & hit[1]
        add(node[0][tt], node[1][tt], 2)
    s_all, d_all, k_all = np.concatenate(src), np.concatenate(dst), np.concatenate(kind)
    edges = np.stack([np.concatenate([s_all, d_all]), np.concatenate([d_all, s_all])])
    return x, edges, np.concatenate([k_all, k_all])


def old_data(ds: MDADataset, i: int) -> Data:
    x, edges, edge_type = old_graph(ds, i)
    return Data(
        x=torch.from_numpy(x), edge_index=torch.from_numpy(edges), edge_type=torch.from_numpy(edge_type),
        image=torch.from_numpy(ds.image[i : i + 1]), rigidity=torch.from_numpy(ds.rigidity[i : i + 1]),
        tof=torch.from_numpy(ds.tof[i : i + 1]), y=torch.tensor([ds.y[i]]), domain=torch.tensor([ds.domain[i]]),
        has_label=torch.tensor([bool(ds.has_label[i])]),
    )


def old_batches(ds: MDADataset, batch_size: int, shuffle: bool, seed: int) -> list[Batch]:
    """What the PyG ``DataLoader`` over per-event ``Data`` objects yielded."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(ds), generator=gen).tolist() if shuffle else list(range(len(ds)))
    return [Batch.from_data_list([old_data(ds, i) for i in order[k : k + batch_size]])
            for k in range(0, len(order), batch_size)]


def edge_set(edges: np.ndarray, kinds: np.ndarray) -> set[tuple[int, int, int]]:
    return set(zip(edges[0].tolist(), edges[1].tolist(), kinds.tolist()))


def assert_same_batch(new: Batch, old: Batch) -> None:
    assert new.num_graphs == old.num_graphs
    for f in FIELDS:
        a, b = getattr(new, f), getattr(old, f)
        assert a.dtype == b.dtype, f
        assert a.shape == b.shape, f
        assert a.is_contiguous(), f  # the layout matters to speed (a strided edge_index is slow)
        assert torch.equal(a, b), f


def synthetic(tracks: int, n: int = 300, seed: int = 0) -> MDADataset:
    """An MDADataset on random hit patterns (empty events, one or two tracks, gaps)."""
    rng = np.random.default_rng(seed)
    ds = MDADataset.__new__(MDADataset)
    layers, sides = 8, 2
    hit = rng.random((n, tracks, layers, sides)) < rng.choice([0.0, 0.3, 0.8, 1.0], size=(n, 1, 1, 1))
    ds.layers = list(range(1, layers + 1))
    ds.hit = hit
    ds.pos = np.where(hit, rng.normal(size=hit.shape), 0.0)
    ds.has_charge = hit & (rng.random(hit.shape) < 0.7)
    ds.charge = np.where(ds.has_charge, rng.normal(size=hit.shape), 0.0)
    ds.layer_z = np.linspace(1.59, -1.36, layers).astype(np.float32)
    ds.image = rng.poisson(1.0, size=(n, 1, layers, sides)).astype(np.float32)
    ds.rigidity = rng.normal(size=(n, 4)).astype(np.float32)
    ds.tof = rng.normal(size=(n, 14)).astype(np.float32)
    ds.has_label = rng.random(n) < 0.5
    ds.y = np.where(ds.has_label, (rng.random(n) < 0.5), 0).astype(np.float32)
    ds.domain = (~ds.has_label).astype(np.float32)
    ds._build_graphs()
    return ds


@pytest.mark.parametrize("tracks", [1, 2, 3])
def test_vectorised_graphs_match_per_event_graphs(tracks: int) -> None:
    ds = synthetic(tracks)
    assert (ds.node_ptr[1:] - ds.node_ptr[:-1] == 0).any(), "some events should have no hit"
    for i in range(len(ds)):
        x_old, e_old, k_old = old_graph(ds, i)
        x, e, k = ds.graph(i)
        assert np.array_equal(x, x_old)
        assert edge_set(e, k) == edge_set(e_old, k_old)
        assert np.array_equal(e, e_old) and np.array_equal(k, k_old)  # even the order is kept


@pytest.mark.parametrize("on_device", [False, True], ids=["host", "device"])
@pytest.mark.parametrize("shuffle", [False, True])
def test_vectorised_batches_match_per_event_batches(shuffle: bool, on_device: bool) -> None:
    ds = synthetic(2, n=250, seed=1)
    if on_device:  # the torch collation a GPU uses, run on the CPU
        ds.to("cpu")
        assert ds._on_device is not None
    new = list(mda_dataloader(ds, batch_size=32, shuffle=shuffle, seed=5))
    old = old_batches(ds, 32, shuffle, seed=5)
    assert len(new) == len(old) == 8
    for a, b in zip(new, old):
        assert_same_batch(a, b)
    # a batch still splits back into its events
    assert torch.equal(new[1].get_example(3).edge_index, old[1].get_example(3).edge_index)
    assert [g.num_nodes for g in new[2].to_data_list()] == [g.num_nodes for g in old[2].to_data_list()]


def test_shuffling_is_seeded() -> None:
    ds = synthetic(2, n=200, seed=2)

    def ids(seed: int) -> list[list[float]]:
        return [b.rigidity[:, 0].tolist() for b in mda_dataloader(ds, batch_size=16, seed=seed)]

    assert ids(3) == ids(3)
    assert ids(3) != ids(4)
    loader = mda_dataloader(ds, batch_size=16, seed=3)
    assert len(loader) == 13
    first, second = ([b.rigidity[:, 0].tolist() for b in loader] for _ in range(2))
    assert first != second  # a new order on each pass, as a DataLoader with a generator
    assert sorted(sum(first, [])) == sorted(ds.rigidity[:, 0].tolist())


def test_subset_of_mda_dataset() -> None:
    ds = synthetic(2, n=60, seed=3)
    sub = torch.utils.data.Subset(torch.utils.data.Subset(ds, list(range(10, 50))), [5, 0, 7])
    (batch,) = list(mda_dataloader(sub, batch_size=8, shuffle=False))
    assert_same_batch(batch, Batch.from_data_list([old_data(ds, i) for i in (15, 10, 17)]))


def test_vectorised_batches_on_simulated_events(ams_ds: PreprocessedDataset) -> None:
    frame = sample_mc(ams_ds, "train", "phosphorus", signal_fraction=0.5, max_rows=400)
    data = sample_data(ams_ds, "train", max_rows=200)
    import pandas as pd

    ds = MDADataset(pd.concat([frame, data], ignore_index=True), ams_ds)
    assert ds.hit[:, 1].any(), "some events should have a second track"
    for i in range(len(ds)):
        x_old, e_old, k_old = old_graph(ds, i)
        x, e, k = ds.graph(i)
        assert np.array_equal(x, x_old) and edge_set(e, k) == edge_set(e_old, k_old)
    for a, b in zip(mda_dataloader(ds, batch_size=64, seed=1), old_batches(ds, 64, True, seed=1)):
        assert_same_batch(a, b)
