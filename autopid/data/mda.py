"""AMS-like events as multimodal inputs for the MDA model.

Per event: a hit graph (PyTorch Geometric ``Data``: one node per hit of a track, layer
and side; edges layer-to-layer along a track and side, X-to-Y within a layer, and
main-to-second track within a layer and side), the cluster-count image, and the
rigidity and TOF vectors (with presence flags), plus the labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from autopid.data.dataset import PreprocessedDataset
from autopid.errors import ConfigError

NODE_FEATURES = ("position", "charge", "has_charge", "layer_z", "side", "track")


def _vector(frame: pd.DataFrame, ds: PreprocessedDataset, branches: list[str]) -> np.ndarray:
    """Normalised columns with NaN set to 0 and one presence flag per column appended."""
    cols = [c for b in branches for c in ds.feature_columns(b)]
    x = ds.normaliser.transform(frame, cols)
    present = np.isfinite(x)
    return np.concatenate([np.where(present, x, 0.0), present.astype(np.float32)], axis=1).astype(np.float32)


def _array(frame: pd.DataFrame, ds: PreprocessedDataset, branch: str, layers: list[int], layer_axis: int) -> np.ndarray:
    """Normalised values of an array branch reshaped to its ROOT shape, layers selected (NaN kept)."""
    shape = ds.feature_shape(branch)
    x = ds.normaliser.transform(frame, ds.feature_columns(branch)).reshape(len(frame), *shape)
    return np.take(x, [layer - 1 for layer in layers], axis=layer_axis + 1)


class MDADataset(Dataset[Data]):
    """Graphs built once per event from a frame of the cache (MC and/or Data rows)."""

    def __init__(self, frame: pd.DataFrame, ds: PreprocessedDataset) -> None:
        layout: dict[str, Any] | None = ds.manifest.get("mda")
        if layout is None:
            raise ConfigError(f"{ds.path}: this cache has no 'mda' layout (dataset family is not mda)")
        layers = sorted(set(layout["position"]["layers"]) | set(layout["charge"]["layers"]))
        self.layers = layers
        pos = _array(frame, ds, layout["position"]["branch"], layers, 1)  # [N, T, L, S]
        charge = _array(frame, ds, layout["charge"]["branch"], layers, 1)
        use_charge = np.isin(layers, layout["charge"]["layers"])
        use_pos = np.isin(layers, layout["position"]["layers"])
        charge[:, :, ~use_charge, :] = np.nan
        self.hit = np.isfinite(pos) & use_pos[None, None, :, None]
        self.pos = np.nan_to_num(pos)
        self.has_charge = np.isfinite(charge) & self.hit
        self.charge = np.where(self.has_charge, charge, 0.0)
        z = layout.get("layer_z")
        z_all = np.asarray(z, dtype=np.float32) / 100.0 if z else np.arange(1, 100, dtype=np.float32) / 10.0
        self.layer_z = z_all[np.asarray(layers) - 1]
        img = _array(frame, ds, layout["clusters"]["branch"], layout["clusters"]["layers"], 0)  # [N, L, S]
        self.image = np.nan_to_num(img).astype(np.float32)[:, None]  # [N, 1, L, S]
        self.rigidity = _vector(frame, ds, layout["rigidity"])
        self.tof = _vector(frame, ds, layout["tof"])
        n = len(frame)
        y = frame["y"].to_numpy(np.float32) if "y" in frame else np.full(n, np.nan, np.float32)
        self.has_label = np.isfinite(y)
        self.y = np.nan_to_num(y, nan=0.0)
        self.domain = frame["domain"].to_numpy(np.float32, copy=True) if "domain" in frame else np.zeros(n, np.float32)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def num_node_features(self) -> int:
        return len(NODE_FEATURES)

    def graph(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Node features ``[nodes, 6]``, edge index ``[2, edges]`` and edge type ``[edges]``
        (0 layer-to-layer, 1 X-to-Y, 2 main-to-second track) of event ``i``."""
        hit = self.hit[i]  # [T, L, S]
        node = np.full(hit.shape, -1, dtype=np.int64)
        node[hit] = np.arange(int(hit.sum()))
        t_idx, l_idx, s_idx = np.nonzero(hit)
        x = np.stack([
            self.pos[i][hit], self.charge[i][hit], self.has_charge[i][hit].astype(np.float32),
            self.layer_z[l_idx], s_idx.astype(np.float32), t_idx.astype(np.float32),
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
                chain = node[t, :, s][hit[t, :, s]]  # next present layer: a missing hit does not cut the track
                add(chain[:-1], chain[1:], 0)
        xy = hit[:, :, 0] & hit[:, :, 1]
        add(node[:, :, 0][xy], node[:, :, 1][xy], 1)
        if hit.shape[0] > 1:
            tt = hit[0] & hit[1]
            add(node[0][tt], node[1][tt], 2)
        s_all, d_all, k_all = np.concatenate(src), np.concatenate(dst), np.concatenate(kind)
        edges = np.stack([np.concatenate([s_all, d_all]), np.concatenate([d_all, s_all])])
        return x, edges, np.concatenate([k_all, k_all])

    def __getitem__(self, i: int) -> Data:  # type: ignore[override]
        x, edges, edge_type = self.graph(i)
        return Data(
            x=torch.from_numpy(x),
            edge_index=torch.from_numpy(edges),
            edge_type=torch.from_numpy(edge_type),
            image=torch.from_numpy(self.image[i : i + 1]),
            rigidity=torch.from_numpy(self.rigidity[i : i + 1]),
            tof=torch.from_numpy(self.tof[i : i + 1]),
            y=torch.tensor([self.y[i]]),
            domain=torch.tensor([self.domain[i]]),
            has_label=torch.tensor([bool(self.has_label[i])]),
        )


def mda_dataloader(dataset: MDADataset, *, batch_size: int = 128, shuffle: bool = True, seed: int = 0) -> DataLoader:
    """PyG batches: ``x``, ``edge_index``, ``batch`` plus ``image [B,1,L,S]``,
    ``rigidity [B,R]``, ``tof [B,K]``, ``y``, ``domain``, ``has_label [B]``."""
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=gen)
