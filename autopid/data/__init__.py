"""Loaders from the preprocessed cache for the two model families.

Names are imported on first use (module ``__getattr__``), so that a process that trains
FSE never imports the MDA loader and PyTorch Geometric with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autopid._lazy import lazy_exports

if TYPE_CHECKING:
    from autopid.data.dataset import PreprocessedDataset, sample_data, sample_mc
    from autopid.data.fse import FSEDataset, fse_dataloader, to_pairs
    from autopid.data.mda import MDADataset, mda_dataloader

_WHERE = {
    "PreprocessedDataset": "dataset",
    "sample_data": "dataset",
    "sample_mc": "dataset",
    "FSEDataset": "fse",
    "fse_dataloader": "fse",
    "to_pairs": "fse",
    "MDADataset": "mda",
    "mda_dataloader": "mda",
}

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


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__, globals())
