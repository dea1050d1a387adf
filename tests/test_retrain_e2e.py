"""End to end, with real processes, real Ray, real simulated ROOT files and SQLite:

1. a scheduler is SIGKILLed after publishing but before recording it; a second scheduler
   running at the same time leaves the period alone; after the lease expires a third
   one takes the run over and records the existing version: published exactly once;
2. a candidate worse than the serving model is rejected, with its numbers recorded, and
   the serving model's validity is extended to the new period (a new registry entry), so
   every run of both periods resolves to a model; `scheduler status` says which and why.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from autopid.cli import main
from autopid.publish.registry import Registry
from autopid.retrain.job import load_job
from autopid.retrain.period_pass import PAUSE_ENV, PAUSE_S_ENV
from autopid.retrain.state import REJECTED, RUNNING, SUCCEEDED, StateStore
from autopid.retrain.testing import write_job, write_tiny_space
from autopid.simulate import AMS, AmsSimConfig, simulate_period
from autopid.testing import dataset_for, write_dataset_yaml

pytestmark = pytest.mark.slow
EXE = str(Path(sys.executable).with_name("autopid"))
WIDE = [{"branch": "trk_charge_inner", "op": "between", "value": [13.5, 17.5]}]  # enough of every species


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("retrain")
    data = root / "data"
    simulate_period(AMS, AmsSimConfig(), data, "P2026a", runs=2, events_per_run=2000, seed=3)
    dataset = write_dataset_yaml(dataset_for("ams", data, chunk_size=4000, selection=WIDE), root / "ams.yaml")
    (root / "jobs").mkdir()
    job_file = write_job(root / "jobs" / "ams.yaml", data_root=data, dataset=dataset,
                         space=write_tiny_space(root / "space.yaml"), work=root / "work")
    job = load_job(job_file)
    return SimpleNamespace(root=root, data=data, dataset=dataset, job_file=job_file, job=job,
                           store=StateStore(job.state_url()), registry=Registry(job.registry))


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


_RAY_TMP = ""  # set per module run: short, as Ray's socket paths must fit in 107 bytes


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOPID_RETRAIN_TEST", "RAY_ADDRESS"))}
    # a Ray of the test's own: without its own temp dir, ray.init() on a shared machine can
    # find (and attach to) another user's local cluster, whose auth token differs
    return {**env, "PYTHONUNBUFFERED": "1", "RAY_TMPDIR": _RAY_TMP, "RAY_AUTH_MODE": "disabled", **extra}


@pytest.fixture(scope="module", autouse=True)
def _ray_tmp() -> Iterator[None]:
    global _RAY_TMP
    _RAY_TMP = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    yield
    shutil.rmtree(_RAY_TMP, ignore_errors=True)


def test_killed_scheduler_is_taken_over_and_publishes_once(world: SimpleNamespace) -> None:
    job, store, reg = world.job, world.store, world.registry
    log = (world.root / "a.log").open("w")
    a = subprocess.Popen([EXE, "retrain", "--job", str(world.job_file), "--once"], stdout=log,
                         stderr=subprocess.STDOUT, env=_env(**{PAUSE_ENV: "published", PAUSE_S_ENV: "900"}),
                         start_new_session=True)
    try:
        deadline = time.time() + 480
        while time.time() < deadline and a.poll() is None and not any(
                e["kind"] == "published" for e in store.events(job.name, "P2026a")):
            time.sleep(1)
        assert a.poll() is None, (world.root / "a.log").read_text()[-3000:]
        (version,) = reg.versions("ams", "phosphorus")
        assert version.metadata["retrain"]["job"] == job.name and version.metadata["retrain"]["period"] == "P2026a"
        row = store.get(job.name, "P2026a")
        assert row is not None and row.status == RUNNING and row.attempts == 1 and row.step == "evaluated"
        owner_a = row.owner

        # a second scheduler at the same time: the period is leased, it leaves it alone
        time.sleep(job.lease.duration_s + 0.5)  # longer than a lease: A's heartbeat must keep it
        b = subprocess.run([EXE, "scheduler", "run", "--jobs", str(world.job_file.parent), "--max-passes", "1"],
                           capture_output=True, text=True, timeout=300, env=_env())
        assert b.returncode == 0, b.stderr[-3000:]
        row = store.get(job.name, "P2026a")
        assert row is not None and row.owner == owner_a and row.status == RUNNING and row.attempts == 1
        assert len(reg.versions("ams", "phosphorus")) == 1

        os.kill(a.pid, signal.SIGKILL)  # dies between publishing and recording it
        a.wait(timeout=60)
    finally:
        _kill_group(a.pid)
        log.close()
    row = store.get(job.name, "P2026a")
    assert row is not None and row.status == RUNNING and row.owner == owner_a  # nobody recorded anything
    time.sleep(max(0.0, (row.lease_expires_at or 0) - time.time()) + 0.3)

    c = subprocess.run([EXE, "retrain", "--job", str(world.job_file), "--once"], capture_output=True, text=True,
                       timeout=300, env=_env())
    assert c.returncode == 0, c.stderr[-3000:]
    row = store.get(job.name, "P2026a")
    assert row is not None and row.status == SUCCEEDED and row.attempts == 2 and row.owner != owner_a
    assert row.published == "ams/phosphorus/v0001" and row.decision and row.decision["promote"] is True
    assert row.step == "published"
    assert [str(v.id) for v in reg.versions("ams", "phosphorus")] == ["ams/phosphorus/v0001"]  # exactly once
    assert not list((reg.root / "ams" / "phosphorus").glob(".staging-*"))
    assert not list(reg.root.glob(".tmp/export-*"))  # the export directory lives in the registry, removed
    assert not list(Path(job.state.work_dir).glob("*/*/.candidate.staging-*"))
    assert reg.get("ams/phosphorus/v0001").metadata["publish_key"] == f"retrain:{job.name}:P2026a"
    kinds = [e["kind"] for e in store.events(job.name, "P2026a")]
    assert kinds.count("published") == 1 and "takeover" in kinds and kinds[-1] == "succeeded"
    assert "already published" in store.events(job.name, "P2026a")[-1]["message"]
    assert "P2026a" in c.stdout and "ams/phosphorus/v0001" in c.stdout
    # what the next search of this job will start from: the best configuration it recorded
    from autopid.retrain.serving import serving_configs
    from autopid.retrain.space import warm_points
    from autopid.search.space import load_search_space

    space = load_search_space(job.search.space)
    points = serving_configs(reg.get("ams/phosphorus/v0001"), list(space.params))
    base = space.train_config(space.studies[0], {}).model_dump(mode="json")
    warm = warm_points(space, points, base)
    assert warm and set(warm[0]) == set(space.params)


def test_worse_candidate_is_rejected_and_the_serving_model_extended(world: SimpleNamespace,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    job, store, reg = world.job, world.store, world.registry
    assert store.get(job.name, "P2026a").status == SUCCEEDED  # type: ignore[union-attr]  # set by the test above
    simulate_period(AMS, AmsSimConfig(), world.data, "P2026b", runs=2, events_per_run=2000, seed=3)
    # the same job, with a learning rate too small to learn anything in one epoch
    bad = write_job(world.root / "bad.yaml", data_root=world.data, dataset=world.dataset,
                    space=write_tiny_space(world.root / "bad_space.yaml", lr=(1e-7, 2e-7)), work=world.root / "work")
    r = subprocess.run([EXE, "retrain", "--job", str(bad), "--once"], capture_output=True, text=True, timeout=480,
                       env=_env())
    assert r.returncode == 0, r.stderr[-3000:]
    row = store.get(job.name, "P2026b")
    assert row is not None and row.status == REJECTED and row.published is None and row.serving == "ams/phosphorus/v0001"
    assert row.step == "extended"
    d = row.decision
    assert d is not None and d["promote"] is False and d["serving_id"] == "ams/phosphorus/v0001"
    assert d["candidate"] < d["serving"] and d["improvement"] < 0 and "not enough" in d["reason"]
    # both were evaluated on the same held-out rows of the new period
    assert d["candidate_metrics"]["mc_rows"] == d["serving_metrics"]["mc_rows"] > 0
    assert d["evaluated_on"]["period"] == "P2026b"
    # the serving model's validity now covers P2026b too: a new entry, v0001 unchanged
    assert d["validity_extension"] == "ams/phosphorus/v0002" and d["kept"] == "ams/phosphorus/v0001"
    assert [str(v.id) for v in reg.versions("ams", "phosphorus")] == ["ams/phosphorus/v0001", "ams/phosphorus/v0002"]
    ext = reg.get("ams/phosphorus/v0002")
    assert ext.model_of == "ams/phosphorus/v0001" and ext.periods == ["P2026b"]
    assert ext.metadata["files"] == reg.get("ams/phosphorus/v0001").metadata["files"]
    assert ext.metadata["retrain"]["outcome"] == "kept" and ext.metadata["retrain"]["period"] == "P2026b"
    from autopid.simulate import read_period_manifest

    for period, expected in (("P2026a", "ams/phosphorus/v0001"), ("P2026b", "ams/phosphorus/v0002")):
        first, last = read_period_manifest(world.data / period)["runs"]
        assert {str(reg.resolve("phosphorus", run).id) for run in range(first, last + 1)} == {expected}
    assert store.get(job.name, "P2026a").attempts == 2  # type: ignore[union-attr]  # not handled again
    assert "rejected" in r.stdout and "keep the serving model" in r.stdout

    b_first = read_period_manifest(world.data / "P2026b")["runs"][0]
    assert main(["models", "resolve", "--species", "phosphorus", "--run", str(b_first),
                 "--registry", str(reg.root)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ams/phosphorus/v0002\t") and "the model of ams/phosphorus/v0001" in out
    assert main(["scheduler", "status", "--jobs", str(world.job_file.parent)]) == 0
    out = capsys.readouterr().out
    assert "P2026b     rejected" in out and "P2026a     succeeded" in out
    assert "ams/phosphorus/v0001" in out and "<- serving now" in out
    import re

    assert re.search(r"P2026a +runs \d+-\d+ +ams/phosphorus/v0001 +promoted: the candidate of P2026a", out), out
    assert re.search(r"P2026b +runs \d+-\d+ +ams/phosphorus/v0002 +kept after rejection: the model of "
                     r"ams/phosphorus/v0001, validity extended to P2026b", out), out


def test_sigterm_during_the_search_stops_it_and_releases_the_run(world: SimpleNamespace) -> None:
    """A SIGTERM while the search runs (its trial has 200 epochs) is passed on to the
    search, which stops gracefully: the scheduler exits within a minute and releases the
    run (attempt not counted, its search resumable), instead of finishing the search."""
    import yaml

    space = write_tiny_space(world.root / "long_space.yaml")
    data = yaml.safe_load(space.read_text())
    data["base"]["training"].update(epochs=200, early_stopping_patience=None)
    data["scheduler"] = {"type": "none"}
    space.write_text(yaml.safe_dump(data))
    (world.root / "jobs_long").mkdir()
    job_file = write_job(world.root / "jobs_long" / "long.yaml", data_root=world.data, dataset=world.dataset,
                         space=space, work=world.root / "work_long", name="long",
                         periods={"pattern": f"{world.data}/{{period}}", "name_regex": "P2026a"})
    job = load_job(job_file)
    store = StateStore(job.state_url())
    log = (world.root / "long.log").open("w")
    proc = subprocess.Popen([EXE, "scheduler", "run", "--jobs", str(job_file.parent)], stdout=log,
                            stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
    try:
        study = Path(job.state.work_dir) / job.name / "P2026a" / "search" / "studies"
        deadline = time.time() + 300
        while time.time() < deadline and not list(study.glob("*/trials/*/record.json")):
            assert proc.poll() is None, (world.root / "long.log").read_text()[-3000:]
            time.sleep(1)
        assert list(study.glob("*/trials/*/record.json")), "the search never reported an epoch"
        t0 = time.time()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=120)
        stopped_in = time.time() - t0
    finally:
        _kill_group(proc.pid)
        log.close()
    assert rc == 0, (world.root / "long.log").read_text()[-3000:]
    assert stopped_in < 90
    row = store.get(job.name, "P2026a")
    assert row is not None and row.status == "pending" and row.owner is None and row.attempts == 0
    assert row.step == "preprocessed" and row.error is None
    last = store.events(job.name, "P2026a")[-1]
    assert last["kind"] == "released" and "during the search" in last["message"]
    assert (study.parent / "search.json").is_file()  # resumed by the next attempt
