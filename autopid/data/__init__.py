"""Loaders from the preprocessed cache for the two model families.

Names are imported on first use (module ``__getattr__``), so that a process that trains
FSE never imports the MDA loader and PyTorch Geometric with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
