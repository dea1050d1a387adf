from __future__ import annotations

from pathlib import Path

import pytest

from autopid.config.dataset import DatasetConfig
from autopid.data import PreprocessedDataset
from autopid.preprocess import PreprocessResult, preprocess
from autopid.testing import dataset_for


@pytest.fixture(scope="session")
def alice_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small ALICE-like periods written by the real simulator."""
    from autopid.simulate import ALICE, AliceSimConfig, simulate_period

    out = tmp_path_factory.mktemp("alice")
    for period in ("LHC26a", "LHC26b"):
        simulate_period(ALICE, AliceSimConfig(), out, period, runs=2, events_per_run=3000, seed=7)
    return out


@pytest.fixture(scope="session")
def ams_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from autopid.simulate import AMS, AmsSimConfig, simulate_period

    out = tmp_path_factory.mktemp("ams")
    simulate_period(AMS, AmsSimConfig(), out, "P2026a", runs=2, events_per_run=4000, seed=7)
    return out


@pytest.fixture(scope="session")
def alice_cfg(alice_root: Path) -> DatasetConfig:
    return dataset_for("alice", alice_root, chunk_size=2000)


@pytest.fixture(scope="session")
def ams_cfg(ams_root: Path) -> DatasetConfig:
    # a wide inner-charge window keeps enough events of every species in a small sample
    return dataset_for("ams", ams_root, chunk_size=4000, selection=[
        {"branch": "trk_charge_inner", "op": "between", "value": [13.5, 17.5]},
    ])


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def alice_cache(alice_cfg: DatasetConfig, cache_root: Path) -> PreprocessResult:
    return preprocess(alice_cfg, cache_root=cache_root)


@pytest.fixture(scope="session")
def ams_cache(ams_cfg: DatasetConfig, cache_root: Path) -> PreprocessResult:
    return preprocess(ams_cfg, cache_root=cache_root)


@pytest.fixture(scope="session")
def alice_ds(alice_cache: PreprocessResult) -> PreprocessedDataset:
    return PreprocessedDataset(alice_cache.path)


@pytest.fixture(scope="session")
def ams_ds(ams_cache: PreprocessResult) -> PreprocessedDataset:
    return PreprocessedDataset(ams_cache.path)
