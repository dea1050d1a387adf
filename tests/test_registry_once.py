"""The registry's guarantees for retraining: a (job, period) key is published once whatever
the timing (real concurrent processes, one killed inside the final step), validity
extensions (CCDB style), and nothing left behind by killed publishers and exports."""

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

from autopid.cli import main
from autopid.errors import AutopidError
from autopid.publish.registry import (
    EXPORT_PREFIX,
    STAGING_PREFIX,
    TMP_DIR,
    AlreadyPublished,
    Registry,
    make_owned_dir,
    owner_gone,
    owner_tag,
)

META = {"experiment": "ams", "species": "phosphorus", "family": "mda",
        "validity": {"runs": [1600067600, 1600067601], "periods": ["P2026a"]}}
KEY = "retrain:ams-phosphorus:P2026a"


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    src = tmp_path / "export"
    src.mkdir()
    (src / "model.onnx").write_bytes(os.urandom(1 << 20))
    for name in ("columns_for_training.json", "scaling_params.json", "thresholds.json"):
        (src / name).write_text(json.dumps({"name": name}))
    return src


_PUBLISHER = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    import autopid.publish.registry as registry
    root, source, meta, key, go, hook = sys.argv[1:7]
    key = None if key == "-" else key
    if hook == "slow-final-step":  # inside the lock: widen the window between the check and the rename
        _replaces = registry.Registry._replaces
        def replaces(self, sdir, runs):
            time.sleep(0.4)
            return _replaces(self, sdir, runs)
        registry.Registry._replaces = replaces
    elif hook == "hang-at-rename":  # killed inside the final step, under the lock
        def rename(a, b):
            Path(go + ".at-rename").touch()
            time.sleep(600)
        registry.os.rename = rename
    while go != "-" and not Path(go).exists():
        time.sleep(0.005)
    try:
        v = registry.Registry(root).publish(source, json.loads(meta), once_key=key)
        print(json.dumps({"published": str(v.id)}))
    except registry.AlreadyPublished as exc:
        print(json.dumps({"already": str(exc.version.id)}))
""")


def _publisher(root: Path, source: Path, key: str | None, go: Path | None, hook: str = "-",
               meta: dict | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _PUBLISHER, str(root), str(source), json.dumps(meta or META),
                             key or "-", str(go) if go else "-", hook],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _versions(root: Path) -> list[str]:
    return [str(v.id) for v in Registry(root).versions()]


def test_concurrent_publishers_of_one_key_publish_it_once(tmp_path: Path, source: Path) -> None:
    """Three processes publish the same (job, period) at the same moment, and a fourth
    another period: the key gets exactly one version, the others are told which."""
    root, go = tmp_path / "reg", tmp_path / "go"
    other = {**META, "validity": {"runs": [1600067700, 1600067701], "periods": ["P2026b"]}}
    procs = [_publisher(root, source, KEY, go, "slow-final-step") for _ in range(3)]
    procs.append(_publisher(root, source, "retrain:ams-phosphorus:P2026b", go, "slow-final-step", other))
    time.sleep(3.0)  # every process imported and waiting
    go.touch()
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    same, different = outs[:3], outs[3]
    published = [o["published"] for o in same if "published" in o]
    assert len(published) == 1, outs  # one winner for the key...
    assert sorted(o.get("already") for o in same if "already" in o) == [published[0]] * 2  # ...the others told
    assert "published" in different  # another key is not held up
    versions = Registry(root).versions()
    assert len(versions) == 2
    assert sorted(v.metadata["publish_key"] for v in versions) == sorted([KEY, "retrain:ams-phosphorus:P2026b"])
    assert not list((root / "ams" / "phosphorus").glob(f"{STAGING_PREFIX}*"))
    with pytest.raises(AlreadyPublished, match="already published for retrain:ams-phosphorus:P2026a"):
        Registry(root).publish(source, META, once_key=KEY)
    assert len(Registry(root).versions()) == 2


def test_publisher_killed_in_the_final_step(tmp_path: Path, source: Path) -> None:
    """A publisher SIGKILLed under the publish lock, just before its rename: a second
    publisher of the same key waits for the lock, then publishes it, once."""
    root, go = tmp_path / "reg", tmp_path / "go"
    go.touch()
    a = _publisher(root, source, KEY, go, "hang-at-rename")
    deadline = time.time() + 60
    while not Path(str(go) + ".at-rename").exists():
        assert a.poll() is None and time.time() < deadline, a.communicate()[1][-3000:]
        time.sleep(0.05)
    b = _publisher(root, source, KEY, None)
    time.sleep(2.0)
    assert b.poll() is None  # waits for A's lock
    assert _versions(root) == []
    os.kill(a.pid, signal.SIGKILL)
    a.wait(timeout=30)
    out, err = b.communicate(timeout=60)
    assert b.returncode == 0, err[-3000:]
    assert json.loads(out.strip().splitlines()[-1]) == {"published": "ams/phosphorus/v0001"}
    assert _versions(root) == ["ams/phosphorus/v0001"]
    # A's staging directory is gone too: its owner is dead
    assert not list((root / "ams" / "phosphorus").glob(f"{STAGING_PREFIX}*"))


def test_validity_extension_latest_upload_wins(tmp_path: Path, source: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    reg = Registry(tmp_path / "reg")
    v1 = reg.publish(source, {**META, "retrain": {"job": "j", "period": "P2026a", "search_points": [{"a": 1}]}},
                     once_key=KEY)
    b = {"runs": [1600067700, 1600067701], "periods": ["P2026b"]}
    v2 = reg.extend(v1.id, b, reason="P2026b's candidate was rejected", once_key="retrain:j:P2026b",
                    extra_metadata={"retrain": {"job": "j", "period": "P2026b", "outcome": "kept"}})
    assert str(v2.id) == "ams/phosphorus/v0002" and v2.model_of == str(v1.id) and v2.is_extension
    assert v2.metadata["files"] == v1.metadata["files"]  # the same model, byte for byte
    assert v2.metadata["extension"]["of"] == str(v1.id) and v2.periods == ["P2026b"]
    assert v2.metadata["retrain"] == {"job": "j", "period": "P2026b", "outcome": "kept"}  # not v1's section
    v2.verify()
    with pytest.raises(AlreadyPublished):
        reg.extend(v1.id, b, reason="again", once_key="retrain:j:P2026b")
    # an extension of an extension still names the trained model
    v3 = reg.extend(v2, {"runs": [1600067800, 1600067800]}, reason="P2026c rejected")
    assert v3.model_of == str(v1.id) and v3.metadata["extension"]["of"] == str(v2.id)
    assert [reg.resolve("phosphorus", r).id.version for r in (1600067600, 1600067701, 1600067800)] == [1, 2, 3]
    # a later upload over the same runs wins; the history is kept
    v4 = reg.publish(source, {**META, "validity": b})
    assert reg.resolve("phosphorus", 1600067700).id == v4.id and v4.metadata["replaces"] == str(v2.id)
    assert len(reg.versions()) == 4

    root = str(reg.root)
    assert main(["models", "resolve", "--species", "phosphorus", "--run", "1600067800", "--registry", root]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ams/phosphorus/v0003\t")
    assert "the model of ams/phosphorus/v0001, validity extended: P2026c rejected" in out
    assert main(["models", "list", "--registry", root]) == 0
    assert "(model of ams/phosphorus/v0001)" in capsys.readouterr().out
    # revoking the trained version: its extensions are separate entries (and said so)
    assert main(["models", "revoke", str(v1.id), "--registry", root, "--reason", "bad"]) == 0
    out = capsys.readouterr().out
    assert "still serves through: ams/phosphorus/v0002 (runs 1600067700-1600067701), ams/phosphorus/v0003" in out
    with pytest.raises(AutopidError, match="covers run 1600067600"):
        reg.resolve("phosphorus", 1600067600)
    assert reg.resolve("phosphorus", 1600067800).id == v3.id


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_directories_are_removed_when_their_owner_is_gone(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    sdir = root / "ams" / "phosphorus"
    sdir.mkdir(parents=True)
    import platform

    host = platform.node()
    dead = sdir / f"{STAGING_PREFIX}{_dead_pid()}.0.0123abcd@{host}"
    mine = make_owned_dir(sdir, STAGING_PREFIX)  # this process: alive
    elsewhere = sdir / f"{STAGING_PREFIX}1.1.0123abcd@another-host"  # cannot be checked: 24 h rule
    elsewhere_old = sdir / f"{STAGING_PREFIX}1.2.0123abcd@another-host"
    legacy = sdir / f"{STAGING_PREFIX}{'a' * 32}"
    export_dead = root / TMP_DIR / f"{EXPORT_PREFIX}{_dead_pid()}.0.0123abcd@{host}"
    for d in (dead, elsewhere, elsewhere_old, legacy, export_dead):
        d.mkdir(parents=True)
        (d / "model.onnx").write_bytes(b"half")
    day_ago = time.time() - 25 * 3600
    os.utime(elsewhere_old, (day_ago, day_ago))
    assert not owner_gone(mine.name, STAGING_PREFIX)
    assert owner_gone(dead.name, STAGING_PREFIX)
    # a reused pid: alive, but started at another time
    reused = f"{os.getpid()}.1.0123abcd@{host}"
    assert owner_gone(reused, "") == (owner_tag().split(".")[1] != "0")

    assert main(["models", "list", "--registry", str(root)]) == 0  # any registry command cleans
    left = sorted(p.name for p in sdir.iterdir() if p.name.startswith(STAGING_PREFIX))
    assert left == sorted([mine.name, elsewhere.name, legacy.name])
    assert not export_dead.exists()


_EXPORTER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import autopid.publish.evaluation as evaluation
    from autopid.publish.publisher import publish_model
    flag = Path(sys.argv[3])
    def hang(*a, **k):  # killed while evaluating: the export directory is full of files
        flag.touch()
        time.sleep(600)
    evaluation.held_out_metrics = hang
    publish_model(sys.argv[1], species="proton", runs=(1, 2), registry=sys.argv[2], threads=1)
""")


def test_killed_publish_leaves_no_export_directory(alice_ds, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A real ``publish_model`` killed during its evaluation: the export directory is in
    the registry (not in $TMPDIR) and the next registry command removes it."""
    import torch

    from autopid.testing import write_run_dir
    from autopid.train.config import TrainConfig
    from autopid.train.fit import fit

    torch.set_num_threads(1)
    cfg = TrainConfig(dataset="alice", species="proton",
                      model={"family": "fse", "params": {"embed_channels": [16, 8], "ff_channels": 16, "num_layers": 1,
                                                         "pool_channels": 8, "classifier_channels": 8}},
                      training={"epochs": 1, "max_train_rows": 300, "max_eval_rows": 200, "batch_size": 64})
    model, _ = fit(cfg, alice_ds)
    run = write_run_dir(model, cfg, alice_ds, tmp_path / "run")
    root, flag, tmp = tmp_path / "reg", tmp_path / "at-eval", tmp_path / "tmpdir"
    tmp.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", _EXPORTER, str(run), str(root), str(flag)],
                            env={**os.environ, "TMPDIR": str(tmp)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 180
    while not flag.exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.1)
    exports = list((root / TMP_DIR).glob(f"{EXPORT_PREFIX}*"))
    assert len(exports) == 1 and (exports[0] / "model.onnx").is_file()
    proc.kill()
    proc.wait(timeout=30)
    assert not [p for p in tmp.iterdir() if p.name.startswith("autopid-export")]
    assert main(["models", "list", "--registry", str(root)]) == 0
    assert not exports[0].exists() and list((root / TMP_DIR).iterdir()) == []
