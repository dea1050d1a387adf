"""Host index arrays to the device without stalling it.

A copy from pageable host memory waits for every kernel queued before it (CUDA makes it
synchronous), so a training loop that sends one index array per step runs its host and
its GPU one after the other instead of side by side. Pinned memory makes the copy
asynchronous; torch's caching host allocator keeps a pinned block until its copy is done.
"""

from __future__ import annotations

import numpy as np
import torch


def int64_to(device: torch.device, *arrays: np.ndarray) -> list[torch.Tensor]:
    """``arrays`` (1-D integers) as int64 tensors on ``device``, in one asynchronous copy."""
    flat = torch.from_numpy(np.concatenate([np.asarray(a, dtype=np.int64).reshape(-1) for a in arrays]))
    if device.type == "cpu":
        moved = flat
    else:
        moved = flat.pin_memory().to(device, non_blocking=True)
    return list(torch.split(moved, [len(a) for a in arrays]))
