"""Retraining state in a real database (SQLAlchemy Core): SQLite by default, any URL.

One row per (job, period) in ``retrain_runs`` carries the run's status, its lease, the
attempts, timings, the candidate, the decision and the last error; ``retrain_events``
keeps every step of every attempt (the lineage a person reads).

Statuses: ``pending`` (seen, or waiting for a retry at ``next_attempt_at``), ``running``
(owned while ``lease_expires_at`` is in the future), and the final ``succeeded``
(published), ``rejected`` (the gate kept the serving model) and ``failed`` (gave up
after ``max_attempts``).

Mutual exclusion is a lease taken by one conditional UPDATE in a transaction::

    UPDATE retrain_runs SET status='running', owner=:me, lease_expires_at=:now+:lease, attempts=attempts+1
    WHERE job=:job AND period=:period AND
          ((status='pending' AND (next_attempt_at IS NULL OR next_attempt_at <= :now))
           OR (status='running' AND lease_expires_at < :now))

and a rowcount of 1 means this scheduler owns the run. The database serialises the two
UPDATEs of two schedulers, so only one sees the row in a claimable state. Every later
write is fenced by ``owner = :me AND status = 'running'``, so a scheduler that lost its
lease (paused past the expiry, then taken over) cannot overwrite the new owner's work.
Times are UNIX seconds from the clock of the scheduler that writes them.

Databases: SQLite (the default, one host) and PostgreSQL (several hosts: ``state.url:
postgresql+psycopg://user:password@host/db``; a plain ``postgresql://`` URL uses psycopg 3
when psycopg2 is not installed); any other SQLAlchemy URL should work but is not tested.
Creating the tables is safe when several processes start at once on a fresh database:
on PostgreSQL the creation runs under a transaction-scoped advisory lock; on every
database a creation that lost a race ("already exists") is retried, and then finds the
tables.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (Column, Float, Integer, MetaData, String, Table, Text, UniqueConstraint, and_, create_engine,
                        event, insert, or_, select, text, update)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from autopid._logging import get_logger
from autopid.errors import AutopidError, ConfigError

_log = get_logger(__name__)

PENDING, RUNNING, SUCCEEDED, REJECTED, FAILED = "pending", "running", "succeeded", "rejected", "failed"
FINAL = (SUCCEEDED, REJECTED, FAILED)

metadata = MetaData()

runs = Table(
    "retrain_runs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job", String(128), nullable=False),
    Column("period", String(64), nullable=False),
    Column("status", String(16), nullable=False, default=PENDING),
    Column("step", String(32), nullable=True),  # last finished step: preprocessed, searched, evaluated, published
    Column("owner", String(128), nullable=True),
    Column("lease_expires_at", Float, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=True),
    Column("first_seen_at", Float, nullable=False),
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    Column("timings", Text, nullable=True),  # JSON: seconds per step of the last attempt
    Column("candidate", Text, nullable=True),  # the candidate's search study and export directory
    Column("serving", String(128), nullable=True),  # the model id it was compared with
    Column("published", String(128), nullable=True),  # the model id it became
    Column("decision", Text, nullable=True),  # JSON: the gate's decision with its numbers
    Column("error", Text, nullable=True),
    UniqueConstraint("job", "period", name="uq_retrain_job_period"),
)

events = Table(
    "retrain_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job", String(128), nullable=False),
    Column("period", String(64), nullable=False),
    Column("at", Float, nullable=False),
    Column("owner", String(128), nullable=True),
    Column("attempt", Integer, nullable=True),
    Column("kind", String(32), nullable=False),
    Column("message", Text, nullable=False),
)


class LeaseLost(AutopidError):
    """Another scheduler owns the run now: stop without writing anything more."""


@dataclass(frozen=True)
class RunRow:
    job: str
    period: str
    status: str
    step: str | None
    owner: str | None
    lease_expires_at: float | None
    attempts: int
    next_attempt_at: float | None
    first_seen_at: float
    started_at: float | None
    finished_at: float | None
    timings: dict[str, float]
    candidate: str | None
    serving: str | None
    published: str | None
    decision: dict[str, Any] | None
    error: str | None


def _row(r: Any) -> RunRow:
    m = r._mapping
    return RunRow(m["job"], m["period"], m["status"], m["step"], m["owner"], m["lease_expires_at"], m["attempts"],
                  m["next_attempt_at"], m["first_seen_at"], m["started_at"], m["finished_at"],
                  json.loads(m["timings"]) if m["timings"] else {}, m["candidate"], m["serving"], m["published"],
                  json.loads(m["decision"]) if m["decision"] else None, m["error"])


def engine_url(url: str) -> str:
    """``url`` with the driver made explicit where it matters: ``postgresql://`` (and
    ``postgres://``) mean psycopg 3 unless psycopg2 is installed."""
    for head in ("postgresql://", "postgres://"):
        if url.startswith(head):
            import importlib.util

            if importlib.util.find_spec("psycopg2") is None:
                return "postgresql+psycopg://" + url[len(head):]
            return "postgresql://" + url[len(head):]
    return url


def redacted(url: str) -> str:
    """``url`` without its password (for messages and status lines)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can parse: say nothing of it
        return url if "@" not in url else "<state database URL>"


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets a busy timeout (writers wait instead of failing)
    and its parent directory is created; server databases get connection checks."""
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        from pathlib import Path

        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    url = engine_url(url)
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": 60})
        else:
            # a server restarted under a long-running scheduler: test connections before use
            engine = create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=4)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise ConfigError(f"state database {redacted(url)!r}: {exc}") from exc
    if url.startswith("sqlite"):
        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL: readers (scheduler status) do not block the writer
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute("PRAGMA busy_timeout=60000")
    return engine


_CREATE_LOCK = 0x6175_746F_7069_64  # "autopid": the advisory lock key of the table creation (PostgreSQL)
_RACE_WORDS = ("already exists", "duplicate key", "database is locked", "deadlock", "could not serialize")


def create_tables(engine: Engine, *, attempts: int = 8) -> None:
    """Create the tables if missing, safely when other processes do the same at once."""
    for attempt in range(1, attempts + 1):
        try:
            with engine.begin() as con:
                if con.dialect.name == "postgresql":
                    # serialises the creators; released at the end of the transaction
                    con.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CREATE_LOCK})
                metadata.create_all(con, checkfirst=True)
            return
        except SQLAlchemyError as exc:
            message = str(exc).lower()
            if attempt == attempts or not any(w in message for w in _RACE_WORDS):
                raise
            # another process created (some of) the tables between our check and our CREATE
            _log.debug("creating the state tables raced with another process (%s); again", message.split("\n")[0])
            time.sleep(random.uniform(0.02, 0.2) * attempt)


class StateStore:
    """The state database of one or more jobs."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        try:
            create_tables(self.engine)
        except SQLAlchemyError as exc:
            raise AutopidError(f"state database {redacted(url)!r}: cannot create the tables ({exc})") from exc

    @property
    def display_url(self) -> str:
        return redacted(self.url)

    # -- reading ---------------------------------------------------------------------------
    def get(self, job: str, period: str) -> RunRow | None:
        with self.engine.connect() as con:
            r = con.execute(select(runs).where(runs.c.job == job, runs.c.period == period)).first()
        return _row(r) if r is not None else None

    def all_runs(self, job: str | None = None) -> list[RunRow]:
        q = select(runs).order_by(runs.c.job, runs.c.period)
        if job is not None:
            q = q.where(runs.c.job == job)
        with self.engine.connect() as con:
            return [_row(r) for r in con.execute(q)]

    def events(self, job: str | None = None, period: str | None = None) -> list[dict[str, Any]]:
        q = select(events).order_by(events.c.id)
        if job is not None:
            q = q.where(events.c.job == job)
        if period is not None:
            q = q.where(events.c.period == period)
        with self.engine.connect() as con:
            return [dict(r._mapping) for r in con.execute(q)]

    # -- writing ---------------------------------------------------------------------------
    def log(self, job: str, period: str, kind: str, message: str, *, owner: str | None = None,
            attempt: int | None = None, at: float | None = None) -> None:
        with self.engine.begin() as con:
            con.execute(insert(events).values(job=job, period=period, at=time.time() if at is None else at,
                                              owner=owner, attempt=attempt, kind=kind, message=message))

    def seen(self, job: str, period: str) -> bool:
        """Record a complete period (once); True if it was new."""
        try:
            with self.engine.begin() as con:
                con.execute(insert(runs).values(job=job, period=period, status=PENDING, attempts=0,
                                                first_seen_at=time.time()))
        except IntegrityError:
            return False
        self.log(job, period, "seen", "complete period detected")
        return True

    def claim(self, job: str, period: str, owner: str, lease_s: float, *,
              dead_owner: str | None = None) -> RunRow | None:
        """Take the run if it is due or its lease expired; None if someone else has it,
        it is waiting for a retry, or it is finished. ``dead_owner``: an owner known to be
        dead (its process is gone); its run is taken over before the lease expires, if
        that owner still holds it."""
        now = time.time()
        takeover = runs.c.lease_expires_at < now
        if dead_owner is not None:
            takeover = or_(takeover, runs.c.owner == dead_owner)
        claimable = and_(runs.c.job == job, runs.c.period == period, or_(
            and_(runs.c.status == PENDING, or_(runs.c.next_attempt_at.is_(None), runs.c.next_attempt_at <= now)),
            and_(runs.c.status == RUNNING, takeover)))
        with self.engine.begin() as con:
            before = con.execute(select(runs.c.status, runs.c.owner).where(
                runs.c.job == job, runs.c.period == period)).first()
            res = con.execute(update(runs).where(claimable).values(
                status=RUNNING, owner=owner, lease_expires_at=now + lease_s, attempts=runs.c.attempts + 1,
                started_at=now, next_attempt_at=None))
            if res.rowcount != 1:
                return None
            row = _row(con.execute(select(runs).where(runs.c.job == job, runs.c.period == period)).one())
        took_over = before is not None and before[0] == RUNNING
        self.log(job, period, "takeover" if took_over else "claimed",
                 (f"{'owner' if dead_owner else 'lease of'} {before[1]} {'died' if dead_owner else 'expired'}; "
                  "taken over" if took_over else "claimed")
                 + f" (attempt {row.attempts})", owner=owner, attempt=row.attempts)
        return row

    def _fenced(self, job: str, period: str, me: str, **values: Any) -> None:
        with self.engine.begin() as con:
            res = con.execute(update(runs).where(runs.c.job == job, runs.c.period == period, runs.c.owner == me,
                                                 runs.c.status == RUNNING).values(**values))
        if res.rowcount != 1:
            raise LeaseLost(f"{job}/{period}: the lease of {me} was lost (another scheduler took the run over)")

    def renew(self, job: str, period: str, owner: str, lease_s: float) -> None:
        """Extend the lease; raises :class:`LeaseLost` if this owner no longer holds it."""
        self._fenced(job, period, owner, lease_expires_at=time.time() + lease_s)

    def record(self, job: str, period: str, me: str, **values: Any) -> None:
        """Record progress (``step``, ``candidate``, ``serving``, ``timings``...) as the owner ``me``."""
        for key in ("timings", "decision"):
            if key in values and not isinstance(values[key], (str, type(None))):
                values[key] = json.dumps(values[key], sort_keys=True)
        self._fenced(job, period, me, **values)

    def finish(self, job: str, period: str, owner: str, status: str, *, decision: dict[str, Any] | None,
               published: str | None, timings: dict[str, float], message: str, step: str | None = None) -> None:
        """Record the final outcome; ``step``: the last step done (``published`` for a
        promotion, ``extended`` when the serving model's validity was extended)."""
        if status not in (SUCCEEDED, REJECTED):
            raise ValueError(status)
        extra = {"step": step} if step is not None else {}
        self.record(job, period, owner, status=status, decision=decision, published=published, timings=timings,
                    finished_at=time.time(), lease_expires_at=None, error=None, **extra)
        self.log(job, period, status, message, owner=owner)

    def reset(self, job: str, period: str, who: str) -> bool:
        """Make a failed run due again (after a person fixed its cause); True if it was failed."""
        with self.engine.begin() as con:
            res = con.execute(update(runs).where(runs.c.job == job, runs.c.period == period,
                                                 runs.c.status == FAILED).values(
                status=PENDING, attempts=0, next_attempt_at=None, owner=None, lease_expires_at=None,
                finished_at=None))
        if res.rowcount != 1:
            return False
        self.log(job, period, "reset", f"failed run made due again by {who}", owner=who)
        return True

    def release(self, job: str, period: str, owner: str, message: str) -> None:
        """Give the run back untouched (a clean stop): due again at once, attempt not counted."""
        self.record(job, period, owner, status=PENDING, owner=None, lease_expires_at=None,
                    attempts=runs.c.attempts - 1)
        self.log(job, period, "released", message, owner=owner)

    def fail(self, job: str, period: str, owner: str, error: str, *, attempts: int, max_attempts: int,
             delay_s: float) -> str:
        """Record a failed attempt: retry after ``delay_s`` or, at the limit, mark failed."""
        final = attempts >= max_attempts
        now = time.time()  # the event's time too: the retry is due delay_s after it
        values: dict[str, Any] = {"error": error, "lease_expires_at": None}
        if final:
            values.update(status=FAILED, finished_at=now)
        else:
            values.update(status=PENDING, next_attempt_at=now + delay_s)
        self.record(job, period, owner, **values)
        msg = (f"attempt {attempts} failed; giving up after {max_attempts} attempts: {error}" if final
               else f"attempt {attempts} failed; retry in {delay_s:.3g} s: {error}")
        self.log(job, period, "failed" if final else "retry", msg, owner=owner, attempt=attempts, at=now)
        return FAILED if final else PENDING
