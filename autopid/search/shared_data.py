"""The preprocessed data, read once by the driver and shared with every trial through
Ray's object store (NumPy blocks are read zero-copy), instead of each trial re-reading
the Parquet shards."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from autopid.data.dataset import PreprocessedDataset


class InMemoryDataset(PreprocessedDataset):
    """A cache entry with the frames the training reads already in memory."""

    def __init__(self, path: str | Path, splits: Sequence[str] = ("train", "validation")) -> None:
        super().__init__(path)
        self._frames: dict[tuple[str, str], pd.DataFrame] = {}
        for split in splits:
            for domain in ("mc", "data"):
                self._frames[(split, domain)] = super().frame(split, domain)

    def frame(self, split: str, domain: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
        cached = self._frames.get((split, domain))
        # columns the shared frame does not hold (auxiliary branches read through roles): from disk
        if cached is None or (columns is not None and not set(columns) <= set(cached.columns)):
            return super().frame(split, domain, columns)
        # a shallow copy: callers add columns (y, domain) without touching the shared frame
        return cached.copy(deep=False) if columns is None else cached[list(columns)].copy(deep=False)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (str(self.path), self._frames))


def _rebuild(path: str, frames: dict[tuple[str, str], pd.DataFrame]) -> InMemoryDataset:
    ds = InMemoryDataset.__new__(InMemoryDataset)
    PreprocessedDataset.__init__(ds, path)
    ds._frames = frames
    return ds
