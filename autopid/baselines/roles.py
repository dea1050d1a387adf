"""Role-named samples from a cache for the classic selections, and which roles are missing.

The classic selections never read a branch by an experiment's own name: the dataset YAML
maps roles to branches, and a selection whose required role is not mapped is skipped by
its caller with a note naming the role.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from autopid.data.dataset import PreprocessedDataset


def missing_roles(ds: PreprocessedDataset, required: Sequence[str]) -> list[str]:
    """The roles of ``required`` that the dataset does not map."""
    mapped = ds.roles
    return [r for r in required if r not in mapped]


def role_sample(ds: PreprocessedDataset, split: str, domain: str, *, species: str | None = None,
                roles: Sequence[str] | None = None, max_rows: int | None = None,
                seed: int = 0) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Rows of one split and domain with columns named by role (default: every mapped role),
    and ``y`` (1 for ``species``) from MC truth; ``y`` is None for Data, which stays
    truth-free here. The natural composition is kept: the working points of the classic
    selections are chosen for it."""
    frame = ds.role_frame(split, domain, roles)
    y: np.ndarray | None = None
    if species is not None and domain == "mc":
        truth = ds.frame(split, domain, ["truth_label"])["truth_label"].to_numpy()
        y = np.isin(truth, ds.species_codes(species)).astype(np.float32)
    if max_rows is not None and len(frame) > max_rows:
        idx = np.sort(np.random.default_rng(seed).choice(len(frame), max_rows, replace=False))
        frame = frame.iloc[idx].reset_index(drop=True)
        y = y[idx] if y is not None else None
    return frame, y
