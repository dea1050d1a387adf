"""Deterministic train/validation/test assignment from (run, event)."""

from __future__ import annotations

import numpy as np

TRAIN, VALIDATION, TEST = 0, 1, 2
SPLIT_NAMES = ("train", "validation", "test")

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def uniform_from_ids(run: np.ndarray, event: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per entry, a pure function of (run, event, seed).

    Re-reading the same files, in any chunking or order, gives the same numbers, so
    the split never leaks an event from training into the test set on a re-run.
    """
    with np.errstate(over="ignore"):
        key = (run.astype(np.uint64) << np.uint64(32)) ^ event.astype(np.uint64)
        h = _splitmix64(_splitmix64(key) ^ _splitmix64(np.full_like(key, np.uint64(seed))))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def assign_split(
    run: np.ndarray, event: np.ndarray, *, train: float, validation: float, seed: int
) -> np.ndarray:
    """0 (train), 1 (validation) or 2 (test) per entry."""
    u = uniform_from_ids(run, event, seed)
    out = np.full(u.shape, TEST, dtype=np.int8)
    out[u < train + validation] = VALIDATION
    out[u < train] = TRAIN
    return out
