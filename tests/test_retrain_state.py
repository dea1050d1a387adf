"""Period detection, the lease in a real SQLite database (raced by real processes), and
retry with backoff on a run that really fails. No Ray here (see test_retrain_e2e.py)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from autopid.cli import main
from autopid.retrain.job import PeriodSource
from autopid.retrain.periods import scan_periods
from autopid.retrain.runner import retrain_once
from autopid.retrain.scheduler import run_scheduler
from autopid.retrain.state import FAILED, PENDING, REJECTED, RUNNING, SUCCEEDED, LeaseLost, StateStore
from autopid.retrain.testing import race_claims, race_table_creation, tiny_job, write_tiny_space
from autopid.simulate import AMS, AmsSimConfig, read_period_manifest, simulate_period
from autopid.simulate._common import PERIOD_MANIFEST


@pytest.fixture()
def store(tmp_path: Path) -> StateStore:
    return StateStore(f"sqlite:///{tmp_path / 'state.db'}")


def test_incomplete_period_ignored_until_complete(tmp_path: Path, store: StateStore) -> None:
    data = tmp_path / "data"
    simulate_period(AMS, AmsSimConfig(), data, "P2026a", runs=1, events_per_run=300, seed=1)
    # P2026b is being written: the simulator writes period.json last; stop before it
    simulate_period(AMS, AmsSimConfig(), data, "P2026b", runs=1, events_per_run=300, seed=1)
    manifest = (data / "P2026b" / PERIOD_MANIFEST).read_text()
    (data / "P2026b" / PERIOD_MANIFEST).unlink()
    (data / "other").mkdir()  # not a period name the job wants
    source = PeriodSource(pattern=f"{data}/{{period}}", name_regex=r"P[0-9]{4}[a-z]+")
    complete, incomplete = scan_periods(source)
    assert [p.name for p in complete] == ["P2026a"] and incomplete == ["P2026b"]
    assert complete[0].runs == tuple(read_period_manifest(data / "P2026a")["runs"])
    assert store.seen("job", "P2026a") and not store.seen("job", "P2026a")  # recorded once
    assert store.get("job", "P2026b") is None

    (data / "P2026b" / PERIOD_MANIFEST).write_text(manifest)  # the writer finishes
    complete, incomplete = scan_periods(source)
    assert [p.name for p in complete] == ["P2026a", "P2026b"] and incomplete == []
    assert [p.name for p in scan_periods(source.model_copy(update={"after": "P2026a"}))[0]] == ["P2026b"]


def test_a_handled_period_is_not_handled_again(store: StateStore) -> None:
    store.seen("job", "P1")
    row = store.claim("job", "P1", "me", 30)
    assert row is not None and row.status == RUNNING and row.attempts == 1
    store.finish("job", "P1", "me", REJECTED, decision={"promote": False}, published=None, timings={"x": 1.0},
                 message="rejected")
    for owner in ("me", "other"):
        assert store.claim("job", "P1", owner, 30) is None
    final = store.get("job", "P1")
    assert final is not None and final.status == REJECTED and final.attempts == 1 and final.timings == {"x": 1.0}


def test_two_schedulers_never_claim_the_same_period(store: StateStore) -> None:
    """Real processes race for the same rows of one SQLite file: each period has one owner."""
    race_claims(store)


def test_table_creation_on_a_fresh_database_is_race_free(tmp_path: Path) -> None:
    """Several schedulers started together on a fresh SQLite state (it crashed with
    'table retrain_runs already exists' in about half of the tries): five processes open
    each of three fresh databases at the same moment."""
    race_table_creation([f"sqlite:///{tmp_path / f'fresh{i}.db'}" for i in range(3)])


def test_expired_lease_is_taken_over_and_the_old_owner_fenced_off(store: StateStore) -> None:
    store.seen("job", "P1")
    assert store.claim("job", "P1", "dead", 0.5) is not None
    assert store.claim("job", "P1", "new", 30) is None  # lease still valid
    time.sleep(0.6)
    row = store.claim("job", "P1", "new", 30)
    assert row is not None and row.owner == "new" and row.attempts == 2
    with pytest.raises(LeaseLost):
        store.record("job", "P1", "dead", step="searched")  # a paused old owner writes nothing
    with pytest.raises(LeaseLost):
        store.renew("job", "P1", "dead", 30)
    assert [e["kind"] for e in store.events("job", "P1")][-2:] == ["claimed", "takeover"]


def test_failing_run_is_retried_with_backoff_then_marked_failed(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A period whose data file is broken fails for real (in preprocessing, before Ray)."""
    from autopid.testing import dataset_for, write_dataset_yaml

    data = tmp_path / "data"
    simulate_period(AMS, AmsSimConfig(), data, "P2026a", runs=1, events_per_run=300, seed=1)
    broken = next((data / "P2026a" / "mc").glob("*.root"))
    broken.write_bytes(broken.read_bytes()[:2000])  # truncated after the marker was written
    dataset = write_dataset_yaml(dataset_for("ams", data), tmp_path / "ams.yaml")
    (tmp_path / "jobs").mkdir()
    job_file = tmp_path / "jobs" / "job.yaml"
    job = tiny_job(job_file, data_root=data, dataset=dataset, space=write_tiny_space(tmp_path / "space.yaml"),
                   work=tmp_path / "work")
    store = StateStore(job.state_url())

    (first,) = retrain_once(job, store)
    row = store.get(job.name, "P2026a")
    assert first.status == PENDING and row is not None and row.attempts == 1 and row.status == PENDING
    assert str(broken.name) in (row.error or "") and row.next_attempt_at is not None
    assert row.next_attempt_at - time.time() > 0.1  # backoff: not due at once
    assert retrain_once(job, store) == []  # not claimed before next_attempt_at

    done = run_scheduler([job], until_idle=True, poll_s=0.05)
    assert [r.status for r in done] == [PENDING, FAILED]
    row = store.get(job.name, "P2026a")
    assert row is not None and row.status == FAILED and row.attempts == 3 and row.finished_at is not None
    claims = [e["at"] for e in store.events(job.name) if e["kind"] == "claimed"]
    fails = [e for e in store.events(job.name) if e["kind"] in ("retry", "failed")]
    assert len(claims) == 3 and [e["kind"] for e in fails] == ["retry", "retry", "failed"]
    # exponential backoff: 0.3 s, then 0.6 s between a failure and the next claim
    assert claims[1] - fails[0]["at"] >= 0.3 - 0.01 and claims[2] - fails[1]["at"] >= 0.6 - 0.01
    assert "giving up after 3 attempts" in fails[-1]["message"]
    from autopid.monitoring.metrics import REGISTRY

    labels = {"retrain_job": job.name, "experiment": "ams", "species": "phosphorus"}
    assert REGISTRY.get_sample_value("autopid_scheduler_runs", {**labels, "status": "failed"}) == 1
    assert REGISTRY.get_sample_value("autopid_scheduler_run_failures_total", labels) == 2  # the scheduler's 2 tries

    assert main(["retrain", "--job", str(job_file), "--once"]) == 0  # nothing left to do: failed is final
    assert main(["scheduler", "status", "--jobs", str(tmp_path / "jobs"), "--job", job.name]) == 0
    out = capsys.readouterr().out
    assert "P2026a" in out and "failed" in out and broken.name in out and "nothing published" in out
    assert store.get(job.name, "P2026a").status == FAILED  # type: ignore[union-attr]
    assert SUCCEEDED not in {r.status for r in store.all_runs()}

    # a person fixes the file and makes the period due again: it is handled once more
    retry = ["scheduler", "retry", "--jobs", str(tmp_path / "jobs"), "--job", job.name, "--period", "P2026a"]
    assert main(retry) == 0
    row = store.get(job.name, "P2026a")
    assert row is not None and row.status == PENDING and row.attempts == 0
    assert main(retry) == 1  # not failed any more
    assert main(["retrain", "--job", str(job_file), "--once"]) == 1  # still broken: the attempt fails again
    assert store.get(job.name, "P2026a").attempts == 1  # type: ignore[union-attr]


def test_sigterm_stops_the_scheduler_and_releases_the_run(tmp_path: Path) -> None:
    """A real `autopid scheduler run` process, stopped by SIGTERM after its preprocessing
    step (held there by the documented test hook): the run is released, not failed."""
    import os
    import signal

    from autopid.retrain.period_pass import PAUSE_ENV

    job, store = _one_period_job(tmp_path, events_per_run=1500)
    exe = str(Path(sys.executable).with_name("autopid"))
    proc = subprocess.Popen([exe, "scheduler", "run", "--jobs", str(tmp_path / "jobs")],
                            env={**os.environ, PAUSE_ENV: "preprocessed"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None and not any(
                e["kind"] == "preprocessed" for e in store.events(job.name)):
            time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    row = store.get(job.name, "P2026a")
    assert row is not None and row.status == PENDING and row.owner is None and row.attempts == 0
    assert row.step == "preprocessed" and row.error is None
    assert [e["kind"] for e in store.events(job.name)][-1] == "released"
    assert store.claim(job.name, "P2026a", "next", 30) is not None  # due again at once


def _one_period_job(tmp_path: Path, events_per_run: int) -> tuple[Any, StateStore]:
    """A tiny AMS-like period P2026a, its job in ``tmp_path/jobs`` and the job's state."""
    from autopid.testing import dataset_for, write_dataset_yaml

    data = tmp_path / "data"
    simulate_period(AMS, AmsSimConfig(), data, "P2026a", runs=1, events_per_run=events_per_run, seed=1)
    wide = [{"branch": "trk_charge_inner", "op": "between", "value": [13.5, 17.5]}]
    dataset = write_dataset_yaml(dataset_for("ams", data, selection=wide), tmp_path / "ams.yaml")
    (tmp_path / "jobs").mkdir()
    job = tiny_job(tmp_path / "jobs" / "job.yaml", data_root=data, dataset=dataset,
                   space=write_tiny_space(tmp_path / "space.yaml"), work=tmp_path / "work")
    return job, StateStore(job.state_url())


def _held_after_preprocessing(job: Any, store: StateStore, period: str) -> list[Any]:
    """One ``retrain_once`` pass, stopped once ``period`` is preprocessed (the test hook
    holds it there: AUTOPID_RETRAIN_TEST_PAUSE_AFTER=preprocessed)."""
    import threading

    stop = threading.Event()

    def stop_after_preprocessing() -> None:
        deadline = time.time() + 180
        while time.time() < deadline and not any(e["kind"] == "preprocessed" for e in store.events(job.name, period)):
            time.sleep(0.2)
        stop.set()

    watcher = threading.Thread(target=stop_after_preprocessing, daemon=True)
    watcher.start()
    results = retrain_once(job, store, stop=stop)
    watcher.join(timeout=5)
    return results


def test_a_broken_period_fails_alone_and_the_others_proceed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """An unreadable completion marker marks that period failed, with its error; the next
    period is still handled (held after its preprocessing by the test hook, then stopped)."""
    from autopid.retrain.period_pass import PAUSE_ENV, PAUSE_S_ENV
    from autopid.testing import dataset_for, write_dataset_yaml

    data = tmp_path / "data"
    for period in ("P2026a", "P2026b"):
        simulate_period(AMS, AmsSimConfig(), data, period, runs=1, events_per_run=800, seed=1)
    (data / "P2026a" / PERIOD_MANIFEST).write_text('{"runs": [1600067600, ')  # truncated by a transfer
    wide = [{"branch": "trk_charge_inner", "op": "between", "value": [13.5, 17.5]}]
    dataset = write_dataset_yaml(dataset_for("ams", data, selection=wide), tmp_path / "ams.yaml")
    (tmp_path / "jobs").mkdir()
    job = tiny_job(tmp_path / "jobs" / "job.yaml", data_root=data, dataset=dataset,
                   space=write_tiny_space(tmp_path / "space.yaml"), work=tmp_path / "work",
                   retry={"max_attempts": 1, "backoff_s": 0.1})
    store = StateStore(job.state_url())
    monkeypatch.setenv(PAUSE_ENV, "preprocessed")
    monkeypatch.setenv(PAUSE_S_ENV, "120")
    results = _held_after_preprocessing(job, store, "P2026b")
    assert [(r.period, r.status) for r in results] == [("P2026a", FAILED)]
    bad = store.get(job.name, "P2026a")
    assert bad is not None and bad.status == FAILED and bad.attempts == 1
    assert "period.json: unreadable completion marker" in (bad.error or "") and "P2026a" in (bad.error or "")
    good = store.get(job.name, "P2026b")
    assert good is not None and good.step == "preprocessed" and good.status == PENDING and good.error is None
    assert [e["kind"] for e in store.events(job.name, "P2026b")][-1] == "released"

    assert main(["scheduler", "status", "--jobs", str(tmp_path / "jobs")]) == 0
    out = capsys.readouterr().out
    assert "broken completion marker: P2026a" in out and "unreadable completion marker" in out
    assert "P2026a     runs ?  -  no model: failed" in out


_HOLDER = """
import sys, time
from autopid.retrain.runner import new_owner
from autopid.retrain.state import StateStore
store, me = StateStore(sys.argv[1]), new_owner()
assert store.claim(sys.argv[2], sys.argv[3], me, 3600) is not None
print(me, flush=True)
time.sleep(3600)
"""


def test_a_scheduler_killed_on_this_machine_is_taken_over_without_waiting_for_its_lease(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """kill -9 of the scheduler that holds a period (an hour's lease): the next pass on the
    same machine sees that its process is gone and takes the run over at once; while the
    holder lives, or for a holder it cannot judge, it waits for the lease."""
    import platform
    import signal

    from autopid.retrain.period_pass import PAUSE_ENV, PAUSE_S_ENV
    from autopid.retrain.owner import dead_here, new_owner

    job, store = _one_period_job(tmp_path, events_per_run=800)
    store.seen(job.name, "P2026a")
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, store.url, job.name, "P2026a"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        owner = holder.stdout.readline().strip()
        assert not dead_here(owner)  # alive: its lease is respected
        assert retrain_once(job, store) == []
        assert store.get(job.name, "P2026a").owner == owner  # type: ignore[union-attr]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert dead_here(owner)
    assert main(["scheduler", "status", "--jobs", str(tmp_path / "jobs")]) == 0
    assert f"running, but its scheduler {owner} is gone: the next pass takes it over" in capsys.readouterr().out
    # owners this machine cannot judge (another host, another kernel or PID namespace, the
    # older "host:pid:random" format) and this very process are never taken for dead
    pid = owner.split(".", 1)[0]
    assert not dead_here(owner.replace(f"@{platform.node()}:", "@elsewhere:", 1))
    assert not dead_here(owner.rsplit(":", 1)[0] + ":0badc0de")
    assert not dead_here(f"{platform.node()}:{pid}:abcd1234")
    assert not dead_here(new_owner())
    assert store.claim(job.name, "P2026a", "other", 60, dead_owner="not-the-holder") is None  # fenced on the owner

    monkeypatch.setenv(PAUSE_ENV, "preprocessed")
    monkeypatch.setenv(PAUSE_S_ENV, "120")
    t0 = time.time()
    _held_after_preprocessing(job, store, "P2026a")
    assert time.time() - t0 < 300  # not the hour of the dead holder's lease
    events = store.events(job.name, "P2026a")
    takeover = next(e for e in events if e["kind"] == "takeover")
    assert f"owner {owner} died; taken over (attempt 2)" in takeover["message"]
    assert [e["kind"] for e in events][-1] == "released"


@pytest.mark.slow
def test_a_period_whose_files_changed_since_its_search_began_is_searched_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An attempt's search recorded other input files (the period was re-transferred since):
    the next attempt does not resume it, which --resume would refuse on every attempt, but
    starts the search again on the files there now."""
    import json
    import logging

    from autopid.provenance import write_run_info
    from autopid.retrain.period_pass import _search, work_dir
    from autopid.retrain.space import job_space
    from autopid.search.space import load_search_space

    job, _ = _one_period_job(tmp_path, events_per_run=800)
    wdir = work_dir(job, "P2026a")
    space = job_space(job, load_search_space(job.search.space), "P2026a")
    sdir = wdir / "search"
    write_run_info(sdir, space)
    (sdir / "search.json").write_text(json.dumps({
        "storage": f"sqlite:///{sdir / 'optuna.db'}", "studies": [s.model_dump() for s in space.studies],
        "optuna_studies": {}, "inputs": {f"{s.species}-P2026a": ["0" * 64] for s in space.studies}}))
    with caplog.at_level(logging.WARNING, logger="autopid"):
        study_dir, summary = _search(job, "P2026a", wdir, None)
    assert "changed since this search began" in caplog.text and "starting the search again" in caplog.text
    assert summary["best_model"] and (study_dir / "summary.json").is_file()
    recorded = json.loads((sdir / "search.json").read_text())["inputs"]
    assert all(h != "0" * 64 for hashes in recorded.values() for h in hashes)
