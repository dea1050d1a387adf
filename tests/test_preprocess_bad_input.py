"""Bad input gets one clear message: the file, the tree or branch, and the real cause."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
import uproot

from autopid.config.dataset import DatasetConfig
from autopid.errors import InputError
from autopid.preprocess import preprocess

TREE = "O2pidtracks"


def _cfg_with(cfg: DatasetConfig, files: list[str], **update: object) -> DatasetConfig:
    """The MC source replaced by ``files``; the Data source keeps the simulated files."""
    sources = [cfg.sources[0].model_copy(update={"files": files}), cfg.sources[1]]
    return cfg.model_copy(update={"sources": sources, **update})


def _one_mc_file(root: Path) -> Path:
    return min(root.glob("*/mc/*.root"))


def _branches(root: Path) -> dict[str, np.ndarray]:
    return uproot.open(_one_mc_file(root))[TREE].arrays(library="np")


def _write_tree(path: Path, branches: dict[str, np.ndarray]) -> Path:
    with uproot.recreate(path) as fh:
        fh.mktree(TREE, {k: v.dtype for k, v in branches.items()})  # a TTree, not an RNTuple
        if len(next(iter(branches.values()))):
            fh[TREE].extend(branches)
    return path


def _raised(cfg: DatasetConfig, cache: Path) -> InputError:
    with pytest.raises(InputError) as err:
        preprocess(cfg, cache_root=cache)
    pre = cache / "preprocess"
    assert not pre.exists() or [p.name for p in pre.iterdir() if p.is_dir()] == [], "half-written cache entry"
    return err.value


def _error(cfg: DatasetConfig, cache: Path) -> str:
    return str(_raised(cfg, cache))


def test_truncated_file_is_not_a_missing_tree(alice_cfg: DatasetConfig, alice_root: Path, tmp_path: Path) -> None:
    good = _one_mc_file(alice_root)
    data = good.read_bytes()
    tree_at = uproot.open(good).key(TREE).data_cursor.index
    # cut inside the TTree record (uproot used to report "no tree"), then inside the baskets
    for name, size in (("head.root", tree_at + 100), ("half.root", len(data) // 2)):
        path = tmp_path / name
        path.write_bytes(data[:size])
        msg = _error(_cfg_with(alice_cfg, [str(path)]), tmp_path / "c")
        assert msg == f"{path}: the file is truncated ({size} of {len(data)} bytes); re-copy or regenerate it"


def test_corrupt_file_keeps_the_uproot_error(alice_cfg: DatasetConfig, alice_root: Path, tmp_path: Path) -> None:
    good = _one_mc_file(alice_root)
    data = bytearray(good.read_bytes())
    tree_at = uproot.open(good).key(TREE).data_cursor.index
    header = bytearray(data)
    header[tree_at + 20:tree_at + 400] = bytes(380)
    path = tmp_path / "bad-tree.root"
    path.write_bytes(header)
    exc = _raised(_cfg_with(alice_cfg, [str(path)]), tmp_path / "c")
    msg = str(exc)
    assert msg.startswith(f"{path}: cannot read TTree '{TREE}' (DeserializationError: ")
    assert msg.endswith("the file is corrupt") and "no tree" not in msg
    # uproot's own traceback travels along as text, also from a worker process
    assert "uproot.deserialization.DeserializationError" in "".join(getattr(exc, "__notes__", []))

    baskets = bytearray(data)
    mid = len(data) // 2
    baskets[mid:mid + 5000] = b"\x07" * 5000
    path = tmp_path / "bad-basket.root"
    path.write_bytes(baskets)
    msg = _error(_cfg_with(alice_cfg, [str(path)]), tmp_path / "c")
    assert re.fullmatch(rf"{re.escape(str(path))}:{TREE}: cannot read branch '\w+', entries \d+-\d+ "
                        r"\(\w+: .+\); the file is corrupt", msg), msg


def test_not_a_tree(alice_cfg: DatasetConfig, tmp_path: Path) -> None:
    path = tmp_path / "histogram.root"
    with uproot.recreate(path) as fh:
        fh[TREE] = np.histogram(np.arange(10.0))
    msg = _error(_cfg_with(alice_cfg, [str(path)]), tmp_path / "c")
    assert msg == f"{path}: '{TREE}' is a TH1D, not a TTree or RNTuple"


def test_empty_tree_says_empty(alice_cfg: DatasetConfig, alice_root: Path, tmp_path: Path,
                               caplog: pytest.LogCaptureFixture) -> None:
    empty = _write_tree(tmp_path / "empty.root", {k: v[:0] for k, v in _branches(alice_root).items()})
    msg = _error(_cfg_with(alice_cfg, [str(empty)]), tmp_path / "c")
    assert msg == (f"dataset 'alice': every MC tree is empty (0 entries), so there is nothing to train on: "
                   f"{empty}:{TREE}")
    assert "selection" not in msg and "cuts" not in msg

    # one empty file among good ones is used as the nothing it is, with a warning naming it
    log = logging.getLogger("autopid")
    log.addHandler(caplog.handler)  # the CLI may have stopped propagation to the root logger
    try:
        with caplog.at_level(logging.WARNING, logger="autopid"):
            res = preprocess(_cfg_with(alice_cfg, [str(_one_mc_file(alice_root)), str(empty)]),
                             cache_root=tmp_path / "c")
    finally:
        log.removeHandler(caplog.handler)
    assert f"{empty}:{TREE}: the tree is empty (0 entries); nothing is read from it" in caplog.text
    assert [i["entries"] for i in res.manifest["inputs"][:2]] == [3000, 0]


@pytest.mark.parametrize(("value", "what"), [
    (np.nan, r"always missing \(NaN, a sentinel or blanked by a missing rule\)"),
    (3.0, r"constant \(3\)"),
])
def test_useless_feature_column_is_refused(alice_cfg: DatasetConfig, alice_root: Path, tmp_path: Path,
                                           value: float, what: str) -> None:
    arrays = _branches(alice_root)
    arrays["fTRDPattern"] = np.full_like(arrays["fTRDPattern"], value)
    path = _write_tree(tmp_path / "flat.root", arrays)
    msg = _error(_cfg_with(alice_cfg, [str(path)]), tmp_path / "c")
    assert re.fullmatch(rf"dataset 'alice': feature column 'fTRDPattern' is {what} in the train split \(mc\); "
                        r"it cannot be normalised: remove 'fTRDPattern' from features or check the input "
                        r"files, sentinels, missing rules and cuts", msg), msg


def test_array_feature_refused_only_when_every_element_is_useless(ams_cfg: DatasetConfig, ams_root: Path,
                                                                  tmp_path: Path) -> None:
    from autopid.simulate._common import write_root

    # the shared AMS data has sparse elements (a second track) and is accepted: see ams_cache
    arrays = uproot.open(min(ams_root.glob("*/mc/*.root")))["amstree"].arrays(library="np")
    arrays["trk_nclusters"] = np.full_like(arrays["trk_nclusters"], 3)
    path = tmp_path / "flat-ams.root"
    write_root(path, "amstree", arrays)
    msg = _error(_cfg_with(ams_cfg, [str(path)]), tmp_path / "c")
    assert msg.startswith("dataset 'ams': feature branch 'trk_nclusters': each of its 18 columns is always "
                          "missing or constant in the train split (mc), e.g. 'trk_nclusters[0][0]' is constant (3)")


def test_constant_after_transform_says_so(alice_cfg: DatasetConfig, alice_root: Path, tmp_path: Path) -> None:
    arrays = _branches(alice_root)
    arrays["fTRDPattern"] = np.zeros_like(arrays["fTRDPattern"])  # 1/0 is missing
    path = _write_tree(tmp_path / "zero.root", arrays)
    cfg = _cfg_with(alice_cfg, [str(path)], transforms={**alice_cfg.transforms, "fTRDPattern": "inverse"})
    msg = _error(cfg, tmp_path / "c")
    assert "feature column 'fTRDPattern' is always missing" in msg and "after the inverse transform" in msg


def test_wrong_branch_name_lists_close_matches(alice_cfg: DatasetConfig, alice_root: Path, tmp_path: Path) -> None:
    good = str(_one_mc_file(alice_root))
    # every file lacks the branch; whichever task fails first is named
    any_file = rf"{re.escape(str(alice_root))}/\w+/(mc|data)/run\d+\.root:{TREE}"
    msg = _error(_cfg_with(alice_cfg, [good], features=[*alice_cfg.features, "fTPCSignl"]), tmp_path / "c")
    assert re.fullmatch(rf"{any_file}: no branch 'fTPCSignl'; close matches: 'fTPCSignal'(, '\w+')*", msg), msg
    selection = [*alice_cfg.selection, {"branch": "fEtta", "op": "abs<", "value": 0.9}]
    cfg = DatasetConfig.model_validate({**_cfg_with(alice_cfg, [good]).model_dump(), "selection": selection})
    msg = _error(cfg, tmp_path / "c")
    assert re.fullmatch(rf"{any_file}: no branch 'fEtta'; close matches: 'fEta'(, '\w+')*", msg), msg
    msg = _error(_cfg_with(alice_cfg, [good], features=[*alice_cfg.features, "zzz"]), tmp_path / "c")
    assert re.match(rf"{any_file}: no branch 'zzz'; it has 28 branches: run, fTPCSignal, ", msg), msg


def test_staging_of_a_killed_run_is_removed_by_the_next_run(alice_cfg, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A preprocessing killed mid-build leaves its staging directory; the next run (a cache
    hit here) removes it at once, because its owner process is gone."""
    import subprocess
    import sys

    from autopid.preprocess import preprocess

    root = tmp_path / "cache"
    preprocess(alice_cfg, cache_root=root)
    code = ("import os, sys; from pathlib import Path; from autopid.preprocess import cache; "
            "p = cache.staging_dir(Path(sys.argv[1]), 'k' * 64); (p / 'half').write_text('x'); "
            "print(p); os._exit(0)")
    out = subprocess.run([sys.executable, "-c", code, str(root / "preprocess")], capture_output=True, text=True,
                         check=True)
    left = Path(out.stdout.strip())
    assert left.is_dir() and left.name.startswith(".staging-")
    preprocess(alice_cfg, cache_root=root)
    assert not left.exists()
    assert not list((root / "preprocess").glob(".staging-*"))


def test_a_file_matched_twice_is_read_once(alice_cfg: DatasetConfig, alice_root: Path, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    one = _one_mc_file(alice_root)
    pattern = str(one.parent / "*.root")
    plain = preprocess(_cfg_with(alice_cfg, [pattern]), cache_root=tmp_path / "a")
    link = tmp_path / "link.root"
    link.symlink_to(one)
    with caplog.at_level(logging.WARNING, logger="autopid"):
        # listed twice, matched by the glob as well, and reached through a link: one file
        twice = preprocess(_cfg_with(alice_cfg, [str(one), str(one), pattern, str(link)]), cache_root=tmp_path / "b")
    for split in ("train", "validation", "test"):
        assert twice.manifest["splits"][split]["mc"]["rows"] == plain.manifest["splits"][split]["mc"]["rows"] > 0
    assert len(twice.manifest["inputs"]) == len(plain.manifest["inputs"])
    assert "read once" in caplog.text and str(link) in caplog.text


def test_a_directory_is_not_a_file(alice_cfg: DatasetConfig, alice_root: Path, tmp_path: Path) -> None:
    folder = _one_mc_file(alice_root).parent
    msg = _error(_cfg_with(alice_cfg, [str(folder)]), tmp_path)
    assert f"{folder}: a directory, not a file" in msg and "*.root" in msg
