"""Dataset roles and auxiliary branches: validated in the YAML, stored in the cache,
read back by role with physical values in the row order of the features."""

from __future__ import annotations

import numpy as np
import pytest

from autopid.config import DatasetConfig, load_dataset_config
from autopid.data import PreprocessedDataset
from autopid.errors import ConfigError


def _alice(**changes: object) -> dict:
    raw = load_dataset_config("alice").model_dump()
    raw.update(changes)
    return raw


def test_roles_are_validated() -> None:
    with pytest.raises(ValueError, match="role 'tpc_signal' maps to branch 'fdEdx'"):
        DatasetConfig.model_validate(_alice(roles={"tpc_signal": "fdEdx"}))
    with pytest.raises(ValueError, match="unknown role 'dedx'"):
        DatasetConfig.model_validate(_alice(roles={"dedx": "fTPCSignal"}))
    with pytest.raises(ValueError, match="'fP' is also a feature"):
        DatasetConfig.model_validate(_alice(auxiliary=["fP"]))
    cfg = DatasetConfig.model_validate(_alice(auxiliary=["fTPCNClsFound"], roles={"tpc_clusters": "fTPCNClsFound"}))
    assert cfg.roles == {"tpc_clusters": "fTPCNClsFound"}


@pytest.mark.parametrize("name", ["alice", "ams"])
def test_builtin_roles_map_to_stored_branches(name: str) -> None:
    cfg = load_dataset_config(name)
    stored = set(cfg.features) | set(cfg.auxiliary)
    assert cfg.roles and set(cfg.roles.values()) <= stored
    expected = ({"momentum", "pt", "tpc_signal", "tpc_clusters", "tof_beta", "tof_time", "track_length"}
                if name == "alice" else
                {"rigidity", "l1_charge", "inner_charge", "utof_charge", "l1_ladder", "second_tracks", "extra_clusters"})
    assert expected <= set(cfg.roles)


def test_alice_role_frame(alice_ds: PreprocessedDataset) -> None:
    assert alice_ds.manifest["roles"]["tpc_clusters"] == "fTPCNClsFound"
    assert alice_ds.auxiliary == ["fTPCNClsFound", "fLength"]
    # auxiliary branches are no model input and are not normalised
    assert "fTPCNClsFound" not in alice_ds.columns
    assert "fLength" not in alice_ds.manifest["normalisation"]["columns"]
    frame = alice_ds.frame("train", "mc")
    roles = alice_ds.role_frame("train", "mc")
    assert list(roles.columns) == list(alice_ds.roles) and len(roles) == len(frame)
    # physical values in the row order of frame(): fP is signed_log-transformed for the
    # models, not here
    np.testing.assert_array_equal(roles["momentum"].to_numpy(), frame["fP"].to_numpy())
    assert roles["momentum"].min() > 0.05
    ncl = roles["tpc_clusters"].to_numpy()
    assert np.isfinite(ncl).all() and 40 <= ncl.min() and ncl.max() <= 159
    length = roles["track_length"].to_numpy()
    assert 369 < length.min() and length.max() < 3.7 * np.cosh(0.8) * 100 + 1  # cm
    # the missing rule blanks TOF below 0.5 GeV/c for the roles too
    assert np.isnan(roles["tof_time"].to_numpy()[roles["momentum"].to_numpy() < 0.5]).all()
    two = alice_ds.role_frame("test", "data", ["tpc_signal", "momentum"])
    assert list(two.columns) == ["tpc_signal", "momentum"]


def test_unmapped_role_names_dataset_and_role(alice_ds: PreprocessedDataset) -> None:
    with pytest.raises(ConfigError) as err:
        alice_ds.role_frame("train", "mc", ["l1_charge"])
    msg = str(err.value)
    assert "'alice'" in msg and "'l1_charge'" in msg and "mapped roles:" in msg and "tpc_signal" in msg


def test_ams_role_frame(ams_ds: PreprocessedDataset) -> None:
    roles = ams_ds.role_frame("train", "data", ["l1_ladder", "second_tracks", "extra_clusters", "l1_charge"])
    ladder = roles["l1_ladder"].to_numpy()
    assert set(np.unique(ladder)) <= set(range(-1, 64)) and (ladder >= 0).mean() > 0.9
    assert set(np.unique(roles["second_tracks"])) <= {0.0, 1.0}
    assert roles["extra_clusters"].min() >= 0
    # sentinels (-9999, no L1 hit) are NaN, as for features
    assert not (roles["l1_charge"].to_numpy() < -100).any()
