"""Tracks as sets of (feature id, value) pairs for the FSE+attention model.

A missing detector contributes no pair: nothing is imputed. Tracks with different
missing patterns share a batch; the batch is padded to its longest set and a padding
mask marks the filler.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from autopid.data._batches import IndexLoader
from autopid.data._transfer import int64_to
from autopid.features import Normaliser

Batch = dict[str, torch.Tensor]


def to_pairs(values: torch.Tensor, present: torch.Tensor, length: int | None = None) -> Batch:
    """Compact ``[B, F]`` values with a presence mask into ``[B, L]`` pairs.

    Present features come first, in feature order; ``L`` is the largest number of
    present features in the batch (``length`` when the caller knows it: on a GPU, working
    it out here would wait for the device).
    """
    if length is None:
        n_present = present.sum(dim=1)
        length = int(n_present.max()) if len(n_present) else 0
    length = max(length, 1)
    order = torch.argsort((~present).to(torch.int8), dim=1, stable=True)[:, :length]
    return {
        "feature_ids": order,
        "values": values.gather(1, order),
        "padding_mask": ~present.gather(1, order),
    }


class FSEDataset(Dataset[Batch]):
    """Normalised features of a frame, fetched a whole batch of indices at a time.

    :meth:`to` moves the features to a device once (a GPU): batches are then gathered
    there and nothing crosses the bus per step but the indices.
    """

    def __init__(self, frame: pd.DataFrame, normaliser: Normaliser, columns: Sequence[str] | None = None) -> None:
        self.columns = list(normaliser.columns if columns is None else columns)
        x = normaliser.transform(frame, self.columns)
        present = np.isfinite(x)
        self.n_present = present.sum(axis=1)  # on the host: the batch's set length without a device sync
        self.values = torch.from_numpy(np.where(present, x, 0.0).astype(np.float32))
        self.present = torch.from_numpy(present)
        n = len(frame)
        y = frame["y"].to_numpy(np.float32, copy=True) if "y" in frame else np.full(n, np.nan, np.float32)
        self.has_label = torch.from_numpy(np.isfinite(y))
        self.y = torch.from_numpy(np.nan_to_num(y, nan=0.0))
        dom = frame["domain"].to_numpy(np.float32, copy=True) if "domain" in frame else np.zeros(n, np.float32)
        self.domain = torch.from_numpy(dom)

    def to(self, device: torch.device | str) -> FSEDataset:
        """Move the features and labels to ``device`` (in place); returns the dataset."""
        for name in ("values", "present", "has_label", "y", "domain"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    @property
    def device(self) -> torch.device:
        return self.values.device

    @property
    def num_features(self) -> int:
        return len(self.columns)

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index: int | Sequence[int] | np.ndarray | torch.Tensor) -> Batch:  # type: ignore[override]
        host = np.asarray(index if not isinstance(index, int) else [index], dtype=np.int64).reshape(-1)
        length = int(self.n_present[host].max()) if len(host) else 0
        (idx,) = int64_to(self.device, host)
        batch = to_pairs(self.values[idx], self.present[idx], length)
        batch.update(y=self.y[idx], domain=self.domain[idx], has_label=self.has_label[idx])
        return batch


def fse_dataloader(
    dataset: FSEDataset, *, batch_size: int = 64, shuffle: bool = True, seed: int = 0, drop_last: bool = False
) -> IndexLoader[Batch]:
    """Batches of pairs: dicts of ``feature_ids``, ``values``, ``padding_mask`` ``[B, L]``
    and ``y``, ``domain``, ``has_label`` ``[B]``, on the dataset's device. Same seed,
    same batches."""
    gen = torch.Generator().manual_seed(seed)
    return IndexLoader(dataset.__getitem__, np.arange(len(dataset), dtype=np.int64), batch_size=batch_size,
                       shuffle=shuffle, generator=gen, drop_last=drop_last)
