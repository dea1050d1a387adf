"""RNTuple inputs (what uproot >= 5.7 writes for ``file[name] = {...}``) preprocess exactly
like the TTree they were copied from, scalar and fixed-size array branches alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import uproot

from autopid.config.dataset import DatasetConfig
from autopid.data import PreprocessedDataset
from autopid.preprocess import PreprocessResult, open_tree, preprocess


def _to_rntuple(src_root: Path, dst_root: Path, tree: str) -> list[Path]:
    out = []
    for src in sorted(src_root.glob("*/*/*.root")):
        dst = dst_root / src.relative_to(src_root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        arrays = uproot.open(src)[tree].arrays(library="np")
        with uproot.recreate(dst) as fh:
            fh[tree] = arrays  # a dict assignment writes an RNTuple; (n, 2, 9, 2) arrays become std::array
        assert uproot.open(dst).classname_of(tree) == "ROOT::RNTuple"
        out.append(dst)
    return out


def _moved(cfg: DatasetConfig, old: Path, new: Path) -> DatasetConfig:
    sources = [s.model_copy(update={"files": [f.replace(str(old), str(new)) for f in s.files]}) for s in cfg.sources]
    return cfg.model_copy(update={"sources": sources})


def _without_provenance(m: dict[str, Any]) -> dict[str, Any]:
    """What must not depend on the container: everything but the key, input hashes and paths."""
    out = {k: v for k, v in m.items() if k not in ("key", "inputs", "hosts")}
    out["inputs"] = [{k: v for k, v in i.items() if k not in ("path", "sha256")} for i in m["inputs"]]
    return out


def _assert_same(a: PreprocessResult, b: PreprocessResult) -> None:
    assert a.path != b.path
    assert _without_provenance(a.manifest) == _without_provenance(b.manifest)
    da, db = PreprocessedDataset(a.path), PreprocessedDataset(b.path)
    for split in ("train", "validation", "test"):
        for domain in ("mc", "data"):
            pd.testing.assert_frame_equal(da.frame(split, domain), db.frame(split, domain))
            pd.testing.assert_frame_equal(da.evaluation_truth(split, domain), db.evaluation_truth(split, domain))


def test_alice_rntuple_equals_ttree(alice_cfg: DatasetConfig, alice_root: Path, alice_cache: PreprocessResult,
                                    tmp_path: Path) -> None:
    _to_rntuple(alice_root, tmp_path / "rn", "O2pidtracks")
    res = preprocess(_moved(alice_cfg, alice_root, tmp_path / "rn"), cache_root=tmp_path / "c")
    _assert_same(res, alice_cache)


@pytest.mark.slow
def test_ams_rntuple_arrays_equal_ttree(ams_cfg: DatasetConfig, ams_root: Path, ams_cache: PreprocessResult,
                                        tmp_path: Path) -> None:
    _to_rntuple(ams_root, tmp_path / "rn", "amstree")
    res = preprocess(_moved(ams_cfg, ams_root, tmp_path / "rn"), cache_root=tmp_path / "c")
    _assert_same(res, ams_cache)
    assert res.manifest["features"]["trk_charge"]["shape"] == [2, 9, 2]


def test_open_tree_reads_both_kinds(ams_root: Path, tmp_path: Path) -> None:
    ttree = min(ams_root.glob("*/mc/*.root"))
    _to_rntuple(ams_root, tmp_path / "rn", "amstree")
    rntuple = tmp_path / "rn" / ttree.relative_to(ams_root)
    t, r = open_tree(ttree, "amstree"), open_tree(rntuple, "amstree")
    assert t.num_entries == r.num_entries > 0
    assert set(t.keys()) == set(r.keys())
    names = ["run", "trk_charge", "rig_inner"]
    a = t.arrays(names, entry_start=10, entry_stop=30, library="np")
    b = r.arrays(names, entry_start=10, entry_stop=30, library="np")
    for name in names:
        np.testing.assert_array_equal(a[name], b[name])
    assert b["trk_charge"].shape == (20, 2, 9, 2)
    # what prediction reads batches with
    chunk = next(iter(r.iterate(["rig_inner"], step_size=7, library="np")))
    np.testing.assert_array_equal(chunk["rig_inner"], t.arrays(["rig_inner"], entry_stop=7, library="np")["rig_inner"])


def test_rntuple_variable_length_field_is_refused(alice_cfg: DatasetConfig, alice_root: Path, tmp_path: Path) -> None:
    import awkward as ak

    from autopid.errors import InputError

    mc = min(alice_root.glob("*/mc/*.root"))
    arrays: dict[str, Any] = dict(uproot.open(mc)["O2pidtracks"].arrays(library="np"))
    arrays["fTPCSignal"] = ak.Array([[1.0, 2.0]] * len(arrays["fTPCSignal"]))  # std::vector<double>
    path = tmp_path / "jagged.root"
    with uproot.recreate(path) as fh:
        fh["O2pidtracks"] = arrays
    sources = [alice_cfg.sources[0].model_copy(update={"files": [str(path)]}), alice_cfg.sources[1]]
    with pytest.raises(InputError) as err:
        preprocess(alice_cfg.model_copy(update={"sources": sources}), cache_root=tmp_path / "c")
    assert str(err.value) == (f"{path}:O2pidtracks: branch 'fTPCSignal' has type 'std::vector<double>'; "
                              "expected a number or a fixed-size array of numbers")
