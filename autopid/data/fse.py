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
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from autopid.features import Normaliser

Batch = dict[str, torch.Tensor]


def to_pairs(values: torch.Tensor, present: torch.Tensor) -> Batch:
    """Compact ``[B, F]`` values with a presence mask into ``[B, L]`` pairs.

    Present features come first, in feature order; ``L`` is the largest number of
    present features in the batch.
    """
    n_present = present.sum(dim=1)
    length = max(int(n_present.max()) if len(n_present) else 0, 1)
    order = torch.argsort((~present).to(torch.int8), dim=1, stable=True)[:, :length]
    return {
        "feature_ids": order,
        "values": values.gather(1, order),
        "padding_mask": ~present.gather(1, order),
    }


class FSEDataset(Dataset[Batch]):
    """Normalised features of a frame, fetched a whole batch of indices at a time."""

    def __init__(self, frame: pd.DataFrame, normaliser: Normaliser, columns: Sequence[str] | None = None) -> None:
        self.columns = list(normaliser.columns if columns is None else columns)
        x = normaliser.transform(frame, self.columns)
        present = np.isfinite(x)
        self.values = torch.from_numpy(np.where(present, x, 0.0).astype(np.float32))
        self.present = torch.from_numpy(present)
        n = len(frame)
        y = frame["y"].to_numpy(np.float32, copy=True) if "y" in frame else np.full(n, np.nan, np.float32)
        self.has_label = torch.from_numpy(np.isfinite(y))
        self.y = torch.from_numpy(np.nan_to_num(y, nan=0.0))
        dom = frame["domain"].to_numpy(np.float32, copy=True) if "domain" in frame else np.zeros(n, np.float32)
        self.domain = torch.from_numpy(dom)

    @property
    def num_features(self) -> int:
        return len(self.columns)

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index: int | Sequence[int]) -> Batch:  # type: ignore[override]
        idx = torch.as_tensor(index if not isinstance(index, int) else [index], dtype=torch.long)
        batch = to_pairs(self.values[idx], self.present[idx])
        batch.update(y=self.y[idx], domain=self.domain[idx], has_label=self.has_label[idx])
        return batch


def fse_dataloader(
    dataset: FSEDataset, *, batch_size: int = 64, shuffle: bool = True, seed: int = 0, drop_last: bool = False
) -> DataLoader[Batch]:
    """Batches of pairs: dicts of ``feature_ids``, ``values``, ``padding_mask`` ``[B, L]``
    and ``y``, ``domain``, ``has_label`` ``[B]``."""
    gen = torch.Generator().manual_seed(seed)
    base = RandomSampler(dataset, generator=gen) if shuffle else SequentialSampler(dataset)
    sampler = BatchSampler(base, batch_size=batch_size, drop_last=drop_last)
    return DataLoader(dataset, sampler=sampler, batch_size=None, collate_fn=_identity)


def _identity(batch: Batch) -> Batch:
    # module level, so the loader pickles when num_workers > 0
    return batch
