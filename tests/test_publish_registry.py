"""The registry's safety properties: atomic publish under SIGKILL, concurrent publishers,
path-escape names, lookup by run. Publishers run as real separate processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from autopid.errors import AutopidError, ConfigError
from autopid.publish.names import check_name, parse_model_id, parse_run_range
from autopid.publish.registry import STAGING_PREFIX, Registry

META = {"experiment": "alice", "species": "proton", "family": "fse",
        "validity": {"runs": [100, 199], "periods": ["LHC26a"]}}


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    """A model directory to publish: several files, one big enough that copying takes a moment."""
    src = tmp_path / "export"
    src.mkdir()
    (src / "model.onnx").write_bytes(os.urandom(3 << 20))
    for name in ("columns_for_training.json", "scaling_params.json", "thresholds.json", "preprocessing.json",
                 "export.json"):
        (src / name).write_text(json.dumps({"name": name}))
    return src


def _publisher(tmp_path: Path, name: str, body: str) -> Path:
    """A script that publishes ``source`` to ``root`` after running ``body`` (its test hooks)."""
    script = tmp_path / f"{name}.py"
    script.write_text(textwrap.dedent("""
        import json, os, sys, time
        from pathlib import Path
        import autopid.publish.registry as registry
        root, source, meta, go = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
    """) + textwrap.dedent(body) + textwrap.dedent("""
        while go != "-" and not Path(go).exists():
            time.sleep(0.01)
        v = registry.Registry(root).publish(source, meta)
        print(json.dumps({"id": str(v.id), "attempts": ATTEMPTS[0]}))
    """))
    return script


def _run(script: Path, root: Path, source: Path, meta: dict, go: str = "-") -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(script), str(root), str(source), json.dumps(meta), go],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _visible(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("v*") if p.is_dir() and not any(
        part.startswith(".") for part in p.relative_to(root).parts))


COUNT_RENAMES = """
    ATTEMPTS = [0]
    _rename = os.rename
    def rename(a, b):
        ATTEMPTS[0] += 1
        return _rename(a, b)
    registry.os.rename = rename
"""


def test_publisher_killed_mid_write_leaves_no_visible_version(tmp_path: Path, source: Path) -> None:
    root = tmp_path / "reg"
    # the hook: after half of the files are copied, the publisher stalls (and is killed)
    stall = COUNT_RENAMES + """
    _copy = registry.copy_file
    done = []
    def copy_file(src, dst):
        _copy(src, dst)
        done.append(dst)
        if len(done) == 3:
            time.sleep(600)
    registry.copy_file = copy_file
    """
    proc = _run(_publisher(tmp_path, "stall", stall), root, source, META)
    sdir = root / "alice" / "proton"
    deadline = time.time() + 60
    staging: list[Path] = []
    while time.time() < deadline:
        staging = [p for p in sdir.glob(f"{STAGING_PREFIX}*")] if sdir.is_dir() else []
        if staging and len(list(staging[0].iterdir())) >= 3:
            break
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("the publisher never reached the middle of its copy")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    assert staging[0].exists()  # the half-written files are hidden...
    reg = Registry(root)
    assert _visible(root) == [] and reg.versions() == []  # a reader sees nothing
    assert not staging[0].exists()  # ...and the next registry operation removes them: their owner is gone
    with pytest.raises(AutopidError, match="covers run 150"):
        reg.resolve("proton", 150)
    # the next publish works and is complete
    v = reg.publish(source, META)
    assert str(v.id) == "alice/proton/v0001"
    v.verify()
    assert _visible(root) == ["alice/proton/v0001"]


def test_concurrent_publishers_get_distinct_versions(tmp_path: Path, source: Path) -> None:
    root = tmp_path / "reg"
    go = tmp_path / "go"
    # both copy at once; the final step is slow, so the second waits for the first's lock
    slow = COUNT_RENAMES + """
    _replaces = registry.Registry._replaces
    def replaces(self, sdir, runs):
        time.sleep(0.5)
        return _replaces(self, sdir, runs)
    registry.Registry._replaces = replaces
    """
    script = _publisher(tmp_path, "slow", slow)
    procs = [_run(script, root, source, META, str(go)) for _ in range(2)]
    time.sleep(1.0)  # both processes started and waiting
    go.touch()
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(json.loads(out.strip().splitlines()[-1]))
    ids = sorted(o["id"] for o in outs)
    assert ids == ["alice/proton/v0001", "alice/proton/v0002"]
    # serialised by the publish lock: each took its version at the first rename
    assert [o["attempts"] for o in outs] == [1, 1]
    reg = Registry(root)
    for v in reg.versions():
        v.verify()
        assert v.path.name == f"v{v.metadata['version']:04d}" and str(v.id) == v.metadata["id"]
    assert not list((root / "alice" / "proton").glob(f"{STAGING_PREFIX}*"))
    assert reg.resolve("proton", 150).id.version == 2


def test_a_published_version_is_never_overwritten(tmp_path: Path, source: Path) -> None:
    reg = Registry(tmp_path / "reg")
    v1 = reg.publish(source, META)
    before = (v1.path / "model.onnx").read_bytes()
    (source / "model.onnx").write_bytes(b"another model")
    v2 = reg.publish(source, META)
    assert v2.id.version == 2 and v2.metadata["replaces"] == "alice/proton/v0001"
    assert (v1.path / "model.onnx").read_bytes() == before
    v1.verify()


@pytest.mark.parametrize("bad", ["..", "../x", "a/b", "/etc", ".hidden", "", "a b", "x" * 65, "a\\b", "~root"])
def test_path_escape_names_are_refused(tmp_path: Path, source: Path, bad: str) -> None:
    root = tmp_path / "reg"
    reg = Registry(root)
    for meta in ({**META, "species": bad}, {**META, "experiment": bad},
                 {**META, "validity": {"runs": [1, 2], "periods": [bad]}}):
        with pytest.raises(ConfigError):
            reg.publish(source, meta)
    with pytest.raises(ConfigError):
        reg.resolve(bad, 1)
    with pytest.raises(ConfigError):
        reg.get(f"alice/{bad}/v0001")
    with pytest.raises(ConfigError):
        check_name(bad, "period")
    assert not any(p for p in tmp_path.rglob("*") if p.is_file() and p.parent != source)


def test_resolve_latest_upload_wins_where_validities_overlap(tmp_path: Path, source: Path) -> None:
    reg = Registry(tmp_path / "reg")
    wide = reg.publish(source, {**META, "validity": {"runs": [100, 300], "periods": ["LHC26a", "LHC26b"]}})
    narrow = reg.publish(source, {**META, "validity": {"runs": [150, 160]}})
    late = reg.publish(source, {**META, "validity": {"runs": [290, 400]}})
    assert [reg.resolve("proton", r).id.version for r in (100, 155, 170, 295, 400)] == [1, 2, 1, 3, 3]
    assert late.metadata["replaces"] == str(wide.id) and narrow.metadata["replaces"] == str(wide.id)
    reg.revoke(narrow.id)
    assert reg.resolve("proton", 155).id == wide.id
    with pytest.raises(AutopidError, match=r"no model for species 'proton' covers run 99 "):
        reg.resolve("proton", 99)
    with pytest.raises(AutopidError, match="covers run 1"):
        reg.resolve("proton", 1, experiment="alice")
    # the same species in two experiments needs the experiment named
    reg.publish(source, {**META, "experiment": "ams"})
    with pytest.raises(ConfigError, match="several experiments"):
        reg.resolve("proton", 150)
    assert reg.resolve("proton", 150, experiment="ams").id.experiment == "ams"


def test_a_broken_version_blocks_resolution_until_it_is_revoked(tmp_path: Path, source: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A version whose metadata went bad (disk, a hand edit) may be the one a run needs:
    resolve refuses rather than guess, names the version and how to take it out of
    service; once it is revoked, the other versions serve again."""
    from autopid.cli import main
    from autopid.errors import InputError

    reg = Registry(tmp_path / "reg")
    good = reg.publish(source, {**META, "validity": {"runs": [100, 199]}})
    bad = reg.publish(source, {**META, "validity": {"runs": [200, 299]}})
    (bad.path / "metadata.json").write_text('{"experiment": "alice", ')
    with pytest.raises(InputError, match=r"metadata.json.*revoke it \(autopid models revoke alice/proton/v0002\)"):
        reg.resolve("proton", 150)
    assert main(["models", "revoke", str(bad.id), "--registry", str(reg.root), "--reason", "disk"]) == 0
    assert "metadata is unreadable" in capsys.readouterr().out
    marker = json.loads((bad.path / "revoked.json").read_text())
    assert marker["reason"].startswith("disk (metadata unreadable:")
    assert reg.resolve("proton", 150).id == good.id
    with pytest.raises(AutopidError, match="no model for species 'proton' covers run 250"):
        reg.resolve("proton", 250)
    with pytest.raises(ConfigError, match="already revoked"):
        reg.revoke(bad.id)


def test_registry_root_and_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOPID_REGISTRY", str(tmp_path / "env-reg"))
    assert Registry().root == tmp_path / "env-reg"
    assert Registry(f"file://{tmp_path}/r").root == tmp_path / "r"
    with pytest.raises(ConfigError, match="only local paths"):
        Registry("s3://bucket/registry")
    assert str(parse_model_id("alice/proton/v0012")) == "alice/proton/v0012"
    for bad in ("alice/proton/12", "alice/proton", "alice/proton/v0000", "a/b/c/v0001"):
        with pytest.raises(ConfigError):
            parse_model_id(bad)
    assert parse_run_range("5-9") == (5, 9) and parse_run_range("7") == (7, 7)
    with pytest.raises(ConfigError):
        parse_run_range("9-5")
    with pytest.raises(ConfigError, match="empty or negative"):
        Registry(tmp_path / "r2").publish(tmp_path, {**META, "validity": {"runs": [5, 1]}})


def test_listing_a_registry_that_is_not_there(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from autopid.cli import main

    missing = tmp_path / "typo"
    assert main(["models", "list", "--registry", str(missing)]) == 1  # named on purpose: likely a typo
    assert f"no registry at {missing}" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AUTOPID_REGISTRY", raising=False)
    assert main(["models", "list"]) == 0  # the default on a fresh machine: nothing published yet
    assert "no registry at registry" in capsys.readouterr().err
    assert not missing.exists() and not (tmp_path / "registry").exists()
