"""Batches by slices of index arrays, without a Python list of indices per batch."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

import numpy as np
import torch

T = TypeVar("T")


class IndexLoader(Generic[T]):
    """``fetch(indices[k : k + batch_size])`` for each batch; with ``shuffle``, a new seeded
    permutation of ``indices`` on each pass, the batches a ``torch.utils.data.DataLoader``
    over ``BatchSampler(RandomSampler(generator=generator))`` gives on its first pass."""

    def __init__(self, fetch: Callable[[np.ndarray], T], indices: np.ndarray, *, batch_size: int, shuffle: bool,
                 generator: torch.Generator, drop_last: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.fetch = fetch
        self.indices = indices
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.drop_last = drop_last

    def __len__(self) -> int:
        n = len(self.indices)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[T]:
        idx = self.indices
        if self.shuffle:
            idx = idx[torch.randperm(len(idx), generator=self.generator).numpy()]
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield self.fetch(idx[start : start + self.batch_size])
