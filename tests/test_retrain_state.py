"""Period detection, the lease in a real SQLite database (raced by real processes), and
retry with backoff on a run that really fails. No Ray here (see test_retrain_e2e.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from autopid.cli import main
from autopid.retrain.job import PeriodSource
from autopid.retrain.periods import scan_periods
from autopid.retrain.runner import retrain_once
from autopid.retrain.scheduler import run_scheduler
from autopid.retrain.state import FAILED, PENDING, REJECTED, RUNNING, SUCCEEDED, LeaseLost, StateStore
from autopid.retrain.testing import tiny_job, write_tiny_space
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


_RACER = textwrap.dedent("""
    import sys, time
    from autopid.retrain.state import StateStore
    url, owner, start, periods = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4].split(",")
    store = StateStore(url)
    while time.time() < start:
        time.sleep(0.001)
    won = [p for p in periods if store.claim("job", p, owner, 60) is not None]
    print(",".join(won))
""")


def test_two_schedulers_never_claim_the_same_period(tmp_path: Path, store: StateStore) -> None:
    """Real processes race for the same rows of one SQLite file: each period has one owner."""
    periods = [f"P{i}" for i in range(8)]
    for p in periods:
        store.seen("job", p)
    start = time.time() + 4.0  # every process is up and waiting before the race starts
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, store.url, f"racer{i}", str(start), ",".join(periods)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    won = [w for out, _ in outs for w in out.strip().split(",") if w]
    assert sorted(won) == sorted(periods), won  # each period claimed exactly once
    for p in periods:
        row = store.get("job", p)
        assert row is not None and row.status == RUNNING and row.attempts == 1
    claims = [e for e in store.events("job") if e["kind"] in ("claimed", "takeover")]
    assert len(claims) == len(periods)


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
    from autopid.testing import dataset_for, write_dataset_yaml

    data = tmp_path / "data"
    simulate_period(AMS, AmsSimConfig(), data, "P2026a", runs=1, events_per_run=1500, seed=1)
    wide = [{"branch": "trk_charge_inner", "op": "between", "value": [13.5, 17.5]}]
    dataset = write_dataset_yaml(dataset_for("ams", data, selection=wide), tmp_path / "ams.yaml")
    (tmp_path / "jobs").mkdir()
    job = tiny_job(tmp_path / "jobs" / "job.yaml", data_root=data, dataset=dataset,
                   space=write_tiny_space(tmp_path / "space.yaml"), work=tmp_path / "work")
    store = StateStore(job.state_url())
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
