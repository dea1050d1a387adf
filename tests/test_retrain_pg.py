"""The retraining state on a real PostgreSQL server (Debian's ``postgresql``; ``.ci/run``
starts a private cluster and exports ``AUTOPID_TEST_PG_URL``). Each test gets a fresh
database. Mirrors the SQLite tests: the claim race between real processes, the lease
takeover and fencing, table creation on a fresh database by processes started together,
and, end to end with Ray, two schedulers on two connections, one SIGKILLed mid-pass:
each period is published exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from autopid.retrain.state import FAILED, REJECTED, RUNNING, SUCCEEDED, LeaseLost, StateStore

PG_ENV = "AUTOPID_TEST_PG_URL"
BASE_URL = os.environ.get(PG_ENV)
pytestmark = pytest.mark.skipif(
    not BASE_URL, reason=f"{PG_ENV} is not set: no PostgreSQL server to test against (.ci/run starts one)")


def _new_database() -> str:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base = make_url(str(BASE_URL))
    name = f"autopid_t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as con:
        con.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


def _drop_database(url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    admin = create_engine(make_url(str(BASE_URL)), isolation_level="AUTOCOMMIT")
    with admin.connect() as con:
        con.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture()
def pg_url() -> Iterator[str]:
    url = _new_database()
    try:
        yield url
    finally:
        _drop_database(url)


def test_fresh_postgres_table_creation_is_race_free() -> None:
    """Five processes open the same fresh database at once, three times (without the
    advisory lock and the retry, PostgreSQL answers 'duplicate key value violates unique
    constraint pg_type_typname_nsp_index')."""
    from autopid.retrain.testing import race_table_creation

    urls = [_new_database() for _ in range(3)]
    try:
        race_table_creation(urls)
    finally:
        for url in urls:
            _drop_database(url)


def test_two_schedulers_never_claim_the_same_period_on_postgres(pg_url: str) -> None:
    from autopid.retrain.testing import race_claims

    race_claims(StateStore(pg_url))


def test_postgres_lease_takeover_fencing_and_plain_url(pg_url: str) -> None:
    # a plain postgresql:// URL works (psycopg 3, as psycopg2 is not installed)
    store = StateStore(pg_url.replace("postgresql+psycopg://", "postgresql://"))
    assert "autopid:***@" in store.display_url or "***" in store.display_url
    store.seen("job", "P1")
    assert store.claim("job", "P1", "dead", 0.5) is not None
    assert store.claim("job", "P1", "new", 30) is None
    time.sleep(0.6)
    row = store.claim("job", "P1", "new", 30)
    assert row is not None and row.owner == "new" and row.attempts == 2
    with pytest.raises(LeaseLost):
        store.record("job", "P1", "dead", step="searched")
    store.finish("job", "P1", "new", SUCCEEDED, decision={"promote": True}, published="ams/phosphorus/v0001",
                 timings={"searched": 1.5}, message="promoted", step="published")
    done = store.get("job", "P1")
    assert done is not None and done.status == SUCCEEDED and done.step == "published"
    assert done.timings == {"searched": 1.5}
    assert [e["kind"] for e in store.events("job", "P1")] == ["seen", "claimed", "takeover", "succeeded"]
    assert store.get("job", "P2") is None


# -- end to end: two schedulers, one killed ----------------------------------------------------------

EXE = str(Path(sys.executable).with_name("autopid"))
WIDE = [{"branch": "trk_charge_inner", "op": "between", "value": [13.5, 17.5]}]


def _env(ray_tmp: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOPID_RETRAIN_TEST", "RAY_ADDRESS"))}
    return {**env, "PYTHONUNBUFFERED": "1", "RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": "disabled", **extra}


@pytest.mark.slow
def test_two_schedulers_on_postgres_publish_each_period_once(pg_url: str, tmp_path: Path) -> None:
    """Schedulers A and B start together on one PostgreSQL state with two new periods.
    A is SIGKILLed right after publishing (before recording it); B, still running, takes
    A's period over on its next pass (A's process is gone on this machine: no lease to wait
    for) and records A's version: each period has exactly one registry entry, and every run
    of both periods resolves to a model."""
    import tempfile

    from autopid.publish.registry import Registry
    from autopid.retrain.job import load_job
    from autopid.retrain.period_pass import PAUSE_ENV, PAUSE_S_ENV
    from autopid.retrain.testing import write_job, write_tiny_space
    from autopid.simulate import AMS, AmsSimConfig, read_period_manifest, simulate_period
    from autopid.testing import dataset_for, write_dataset_yaml

    data = tmp_path / "data"
    for period in ("P2026a", "P2026b"):
        simulate_period(AMS, AmsSimConfig(), data, period, runs=2, events_per_run=1500, seed=3)
    dataset = write_dataset_yaml(dataset_for("ams", data, chunk_size=4000, selection=WIDE), tmp_path / "ams.yaml")
    (tmp_path / "jobs").mkdir()
    job_file = write_job(tmp_path / "jobs" / "ams.yaml", data_root=data, dataset=dataset,
                         space=write_tiny_space(tmp_path / "space.yaml"), work=tmp_path / "work",
                         state={"url": pg_url, "work_dir": str(tmp_path / "work" / "state")},
                         lease={"duration_s": 6.0, "heartbeat_s": 1.5})
    job = load_job(job_file)
    store, reg = StateStore(job.state_url()), Registry(job.registry)
    ray_tmp = tempfile.mkdtemp(prefix="rp", dir="/tmp")
    cmd = [EXE, "scheduler", "run", "--jobs", str(tmp_path / "jobs"), "--until-idle"]
    logs = [(tmp_path / f"{n}.log").open("w") for n in "ab"]
    a = subprocess.Popen(cmd, stdout=logs[0], stderr=subprocess.STDOUT, start_new_session=True,
                         env=_env(ray_tmp, **{PAUSE_ENV: "published", PAUSE_S_ENV: "900"}))
    b = subprocess.Popen(cmd, stdout=logs[1], stderr=subprocess.STDOUT, start_new_session=True, env=_env(ray_tmp))
    try:
        deadline = time.time() + 540
        owner_a = None
        while time.time() < deadline and owner_a is None:
            assert a.poll() is None, (tmp_path / "a.log").read_text()[-3000:]
            for e in store.events(job.name):
                if e["kind"] == "published" and e["owner"] and e["owner"].startswith(f"{a.pid}."):
                    owner_a = (e["period"], e["owner"])
            time.sleep(1)
        assert owner_a is not None, "scheduler A never published"
        period_a = owner_a[0]
        row = store.get(job.name, period_a)
        assert row is not None and row.status == RUNNING and row.owner == owner_a[1]  # published, not recorded
        os.killpg(a.pid, signal.SIGKILL)  # mid-pass: between publishing and recording it
        a.wait(timeout=60)
        out = b.wait(timeout=540)
        assert out == 0, (tmp_path / "b.log").read_text()[-3000:]
    finally:
        for p in (a, b):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for fh in logs:
            fh.close()
        import shutil

        shutil.rmtree(ray_tmp, ignore_errors=True)

    rows = {r.period: r for r in store.all_runs(job.name)}
    for r in rows.values():  # shown with -s / -rP: what each scheduler did
        print(f"{r.period}: {r.status} step={r.step} attempts={r.attempts} owner={r.owner} published={r.published} "
              f"extension={(r.decision or {}).get('validity_extension')}")
    print(f"A ({owner_a[1]}) was killed after publishing {period_a}")
    assert set(rows) == {"P2026a", "P2026b"}
    assert all(r.status in (SUCCEEDED, REJECTED) for r in rows.values()), [(r.period, r.status, r.error)
                                                                           for r in rows.values()]
    taken = rows[period_a]
    assert taken.status == SUCCEEDED and taken.attempts == 2 and taken.owner != owner_a[1]
    assert taken.step == "published"
    kinds = [e["kind"] for e in store.events(job.name, period_a)]
    assert "takeover" in kinds and kinds.count("published") == 1 and "already published" in \
        store.events(job.name, period_a)[-1]["message"]
    # exactly one registry entry per period (promoted, or the serving model's validity extended)
    versions = reg.versions("ams", "phosphorus")
    keys = sorted(v.metadata.get("publish_key") for v in versions)
    assert keys == [f"retrain:{job.name}:P2026a", f"retrain:{job.name}:P2026b"], [str(v.id) for v in versions]
    assert not list((reg.root / "ams" / "phosphorus").glob(".staging-*"))
    assert not list((reg.root / ".tmp").glob("export-*")) if (reg.root / ".tmp").is_dir() else True
    for period in ("P2026a", "P2026b"):
        first, last = read_period_manifest(data / period)["runs"]
        for run in range(int(first), int(last) + 1):
            v = reg.resolve("phosphorus", run)
            assert v.metadata["retrain"]["period"] == period
            print(f"run {run} ({period}): {v.id} - {v.explain()}")
    assert FAILED not in {r.status for r in rows.values()}
