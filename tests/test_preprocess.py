from __future__ import annotations

import shutil
from pathlib import Path

import awkward as ak
import numpy as np
import pandas as pd
import pytest
import uproot

from autopid.config.dataset import DatasetConfig
from autopid.data import PreprocessedDataset
from autopid.errors import InputError
from autopid.features import apply_transform
from autopid.preprocess import PreprocessResult, preprocess
from autopid.preprocess._split import assign_split


def test_summary_counts_and_layout(alice_cache: PreprocessResult) -> None:
    m = alice_cache.manifest
    assert 0 < m["selected"] < m["entries"], "the TPC crossed-rows cut must remove some tracks"
    rows = {s: {d: m["splits"][s][d]["rows"] for d in ("mc", "data")} for s in m["splits"]}
    total = sum(v for d in rows.values() for v in d.values())
    assert total == m["selected"]
    frac_train = (rows["train"]["mc"] + rows["train"]["data"]) / total
    assert 0.65 < frac_train < 0.75
    assert m["species_counts"]["train"]["pion"] > m["species_counts"]["train"]["kaon"] > 0
    assert "cache:" in alice_cache.summary()


def test_missing_rules_applied(alice_cache: PreprocessResult) -> None:
    ds = PreprocessedDataset(alice_cache.path)
    frame = ds.frame("train", "mc")
    low = frame["fP"] < 0.5
    assert low.any() and frame.loc[low, "fTOFSignal"].isna().all() and frame.loc[low, "fBeta"].isna().all()
    assert frame.loc[frame["fP"] < 0.8, "fTRDSignal"].isna().all()
    assert frame.loc[frame["fP"] > 1.0, "fTOFSignal"].notna().any()


def test_split_is_deterministic_by_run_and_event(alice_cfg: DatasetConfig, tmp_path: Path,
                                                 alice_cache: PreprocessResult) -> None:
    # another chunking, another cache: the same (run, event) lands in the same split
    other = preprocess(alice_cfg.model_copy(update={"chunk_size": 1700}), cache_root=tmp_path)
    assert other.path != alice_cache.path

    def split_of(path: Path) -> pd.Series:
        ds = PreprocessedDataset(path)
        parts = []
        for split in ("train", "validation", "test"):
            f = ds.frame(split, "mc", columns=["run", "event", "fP"])
            f["split"] = split
            parts.append(f)
        return pd.concat(parts).set_index(["run", "event", "fP"])["split"].sort_index()

    a, b = split_of(alice_cache.path), split_of(other.path)
    assert len(a) == len(b) and (a == b).all()
    # all tracks of one collision are in one split
    assert a.groupby(level=["run", "event"]).nunique().max() == 1
    run, ev = np.arange(1000), np.arange(1000)
    assert (assign_split(run, ev, train=0.7, validation=0.15, seed=0)
            != assign_split(run, ev, train=0.7, validation=0.15, seed=1)).any()


def test_normalisation_fitted_on_train_only(alice_cache: PreprocessResult) -> None:
    ds = PreprocessedDataset(alice_cache.path)
    norm = ds.normaliser
    train = ds.frame("train", "mc")
    test = ds.frame("test", "mc")
    for col in ("fTPCSignal", "fP", "fDcaXY"):
        i = norm.columns.index(col)
        x = apply_transform(train[col].to_numpy(np.float64), norm.transforms.get(col))
        assert norm.mean[i] == pytest.approx(np.nanmean(x), rel=1e-6)
        assert norm.std[i] == pytest.approx(np.nanstd(x), rel=1e-5)
        x_test = apply_transform(test[col].to_numpy(np.float64), norm.transforms.get(col))
        assert norm.mean[i] != pytest.approx(np.nanmean(x_test), rel=1e-9)
    z = norm.transform(train)
    assert np.nanmean(z, axis=0) == pytest.approx(np.zeros(z.shape[1]), abs=1e-3)


def test_cache_hit(alice_cfg: DatasetConfig, alice_cache: PreprocessResult, cache_root: Path) -> None:
    again = preprocess(alice_cfg, cache_root=cache_root)
    assert again.cache_hit and again.path == alice_cache.path
    assert again.manifest == alice_cache.manifest
    changed = alice_cfg.model_copy(update={"split": alice_cfg.split.model_copy(update={"seed": 3})})
    assert preprocess(changed, cache_root=cache_root).path != alice_cache.path
    for name in ("config.yaml", "metadata.json", "manifest.json"):
        assert (alice_cache.path / name).is_file()


def test_cache_key_follows_content(alice_root: Path, tmp_path: Path, cache_root: Path) -> None:
    from autopid.testing import dataset_for

    copy = tmp_path / "copy"
    shutil.copytree(alice_root, copy)
    a = preprocess(dataset_for("alice", copy, chunk_size=2000), cache_root=tmp_path / "c")
    b = preprocess(dataset_for("alice", alice_root, chunk_size=2000), cache_root=tmp_path / "c")
    assert a.path == b.path and b.cache_hit  # same content, other paths: same entry


def test_ams_cache_keeps_hidden_truth_apart(ams_cache: PreprocessResult) -> None:
    ds = PreprocessedDataset(ams_cache.path)
    data = ds.frame("train", "data")
    assert len(data) > 0 and not any(c.startswith(("hidden_", "truth_")) for c in data.columns)
    truth = ds.evaluation_truth("test", "data")
    assert "hidden_label" in truth and "hidden_frag" in truth
    assert set(np.unique(truth["hidden_label"])) <= {14, 15, 16, 17}
    # sentinels became NaN, arrays became one column per element
    assert np.isnan(ds.frame("train", "mc")["trk_charge[1][4][0]"]).mean() > 0.5
    assert ds.feature_shape("trk_charge") == (2, 9, 2)


# ---------------------------------------------------------------- bad input


def _cfg_with(cfg: DatasetConfig, files: list[str], **update: object) -> DatasetConfig:
    sources = [cfg.sources[0].model_copy(update={"files": files}), cfg.sources[1]]
    return cfg.model_copy(update={"sources": sources, **update})


def _assert_cache_clean(root: Path) -> None:
    pre = root / "preprocess"
    leftovers = [p.name for p in pre.iterdir() if p.is_dir()] if pre.exists() else []
    assert leftovers == [], f"half-written cache entries: {leftovers}"


def _one_mc_file(root: Path) -> Path:
    return min(root.glob("*/mc/*.root"))


def test_missing_file(alice_cfg: DatasetConfig, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nothere\.root: file not found"):
        preprocess(_cfg_with(alice_cfg, [str(tmp_path / "nothere.root")]), cache_root=tmp_path)
    with pytest.raises(InputError, match=r"\*\.root: no file matches"):
        preprocess(_cfg_with(alice_cfg, [str(tmp_path / "*.root")]), cache_root=tmp_path)
    _assert_cache_clean(tmp_path)


def test_not_root_and_truncated(alice_cfg: DatasetConfig, alice_root: Path, tmp_path: Path) -> None:
    text = tmp_path / "notes.root"
    text.write_text("this is not ROOT\n" * 100)
    with pytest.raises(InputError, match=r"notes\.root: not a readable ROOT file"):
        preprocess(_cfg_with(alice_cfg, [str(text)]), cache_root=tmp_path)
    good = _one_mc_file(alice_root)
    cut = tmp_path / "cut.root"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError, match=r"cut\.root"):
        preprocess(_cfg_with(alice_cfg, [str(cut)]), cache_root=tmp_path / "c")
    _assert_cache_clean(tmp_path / "c")


def test_missing_tree_and_branch(alice_cfg: DatasetConfig, alice_root: Path, tmp_path: Path) -> None:
    good = str(_one_mc_file(alice_root))
    bad_tree = alice_cfg.sources[0].model_copy(update={"files": [good], "tree": "nope"})
    with pytest.raises(InputError, match=r"run\d+\.root: no tree 'nope' \(trees in file: O2pidtracks\)"):
        preprocess(alice_cfg.model_copy(update={"sources": [bad_tree]}), cache_root=tmp_path)
    feats = [*alice_cfg.features, "fMissingBranch"]
    with pytest.raises(InputError, match=r"O2pidtracks: no branch 'fMissingBranch'"):
        preprocess(_cfg_with(alice_cfg, [good], features=feats), cache_root=tmp_path)
    _assert_cache_clean(tmp_path)


def _write_tree(path: Path, branches: dict[str, object]) -> None:
    types = {k: (v.dtype if isinstance(v, np.ndarray) else v.type) for k, v in branches.items()}
    with uproot.recreate(path) as fh:
        fh.mktree("O2pidtracks", types)  # a TTree (uproot's dict assignment would write an RNTuple)
        fh["O2pidtracks"].extend(branches)


def _valid_branches(alice_root: Path, n: int = 500) -> dict[str, np.ndarray]:
    tree = uproot.open(_one_mc_file(alice_root))["O2pidtracks"]
    return {k: v[:n] for k, v in tree.arrays(library="np").items()}


def test_wrong_branch_type(alice_cfg: DatasetConfig, alice_root: Path, tmp_path: Path) -> None:
    arrays: dict[str, object] = dict(_valid_branches(alice_root))
    arrays["fTPCSignal"] = ak.Array([[1.0, 2.0]] * 500)  # a jagged list where a number is expected
    path = tmp_path / "jagged.root"
    _write_tree(path, arrays)
    with pytest.raises(InputError, match=r"jagged\.root:O2pidtracks: branch 'fTPCSignal' has type .*expected a number"):
        preprocess(_cfg_with(alice_cfg, [str(path)]), cache_root=tmp_path)
    _assert_cache_clean(tmp_path)


def test_nan_in_required_and_inf_in_feature(alice_cfg: DatasetConfig, alice_root: Path, tmp_path: Path) -> None:
    arrays = _valid_branches(alice_root)
    arrays["fP"] = arrays["fP"].copy()
    arrays["fP"][17] = np.nan
    path = tmp_path / "nan.root"
    _write_tree(path, arrays)
    with pytest.raises(InputError, match=r"nan\.root:O2pidtracks: branch 'fP' is missing, NaN or inf in 1 entries \(first at entry 17\)"):
        preprocess(_cfg_with(alice_cfg, [str(path)]), cache_root=tmp_path)
    arrays = _valid_branches(alice_root)
    arrays["fDcaXY"] = arrays["fDcaXY"].copy()
    arrays["fDcaXY"][3] = np.inf
    path = tmp_path / "inf.root"
    _write_tree(path, arrays)
    with pytest.raises(InputError, match=r"inf\.root:O2pidtracks: branch 'fDcaXY' holds inf \(first at entry 3\)"):
        preprocess(_cfg_with(alice_cfg, [str(path)]), cache_root=tmp_path)
    _assert_cache_clean(tmp_path)


def test_empty_selection(alice_cfg: DatasetConfig, tmp_path: Path) -> None:
    cfg = DatasetConfig.model_validate({**alice_cfg.model_dump(), "selection": [
        {"branch": "fP", "op": ">", "value": 1e6}]})
    with pytest.raises(InputError, match=r"the selection keeps no entry \(cuts: fP > 1000000"):
        preprocess(cfg, cache_root=tmp_path)
    _assert_cache_clean(tmp_path)


def test_unknown_species(alice_cache: PreprocessResult) -> None:
    from autopid.data import sample_mc
    from autopid.errors import ConfigError

    ds = PreprocessedDataset(alice_cache.path)
    with pytest.raises(ConfigError, match="unknown species 'deuteron'; this dataset defines: electron, kaon"):
        sample_mc(ds, "train", "deuteron")
    with pytest.raises(ConfigError, match="unknown species 'helium3'"):
        sample_mc(ds, "train", "proton", background_mix={"helium3": 1.0})


@pytest.mark.slow
def test_distributed_scheduler(alice_cfg: DatasetConfig, tmp_path: Path, alice_cache: PreprocessResult) -> None:
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        res = preprocess(alice_cfg, cache_root=tmp_path, scheduler=cluster.scheduler_address)
    assert len(res.manifest["hosts"]) == 2, res.manifest["hosts"]
    same = {k: v for k, v in res.manifest.items() if k != "hosts"}
    assert same == {k: v for k, v in alice_cache.manifest.items() if k != "hosts"}
