"""Loaders from the preprocessed cache for the two model families."""

from __future__ import annotations

from autopid.data.dataset import PreprocessedDataset, sample_data, sample_mc
from autopid.data.fse import FSEDataset, fse_dataloader, to_pairs
from autopid.data.mda import MDADataset, mda_dataloader

__all__ = [
    "FSEDataset",
    "MDADataset",
    "PreprocessedDataset",
    "fse_dataloader",
    "mda_dataloader",
    "sample_data",
    "sample_mc",
    "to_pairs",
]
