"""The job queue's SQL: enqueue, claim with a lease, finish, retry, list.

Claiming takes ready jobs with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL and MariaDB (10.6+),
so several runners on one database never take the same job and never wait for each other; on
SQLite the write transaction (``BEGIN IMMEDIATE``) is the single writer that orders them. A job
whose lease has expired (its runner died) is ready again. Every change after the claim is
fenced by the lease owner, so a runner that lost its lease cannot overwrite the job's state.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vesalius.index.changes import utcnow
from vesalius.index.jobs_models import Job, JobSchedule


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    DEAD = "dead"  # failed every attempt: kept with its last error until retried
    CANCELLED = "cancelled"


FINISHED = (JobState.DONE, JobState.DEAD, JobState.CANCELLED)


@dataclass(frozen=True)
class JobRow:
    id: int
    kind: str
    payload: str
    state: str
    priority: int
    run_at: dt.datetime
    attempts: int
    max_attempts: int
    dedupe_key: str | None
    lease_owner: str | None
    lease_until: dt.datetime | None
    last_error: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


_COLUMNS = (
    Job.id,
    Job.kind,
    Job.payload,
    Job.state,
    Job.priority,
    Job.run_at,
    Job.attempts,
    Job.max_attempts,
    Job.dedupe_key,
    Job.lease_owner,
    Job.lease_until,
    Job.last_error,
    Job.created_at,
    Job.started_at,
    Job.finished_at,
)


def insert_job(
    session: Session,
    kind: str,
    payload: str,
    *,
    run_at: dt.datetime | None,
    priority: int,
    dedupe_key: str | None,
    max_attempts: int,
) -> int | None:
    """Add a queued job; None when an unfinished job holds *dedupe_key* already."""
    now = utcnow()
    values: dict[str, Any] = {
        "kind": kind,
        "payload": payload,
        "state": JobState.QUEUED.value,
        "priority": priority,
        "run_at": run_at or now,
        "attempts": 0,
        "max_attempts": max_attempts,
        "dedupe_key": dedupe_key,
        "created_at": now,
    }
    if dedupe_key is None:
        return int(session.execute(Job.__table__.insert().values(values)).inserted_primary_key[0])
    try:
        with session.begin_nested():
            result = session.execute(Job.__table__.insert().values(values))
        return int(result.inserted_primary_key[0])
    except IntegrityError:
        return None


def _update() -> Any:
    """An UPDATE of jobs. The queue reads rows, never ORM objects, so there is no session
    state to synchronise: SQLAlchemy's default ("evaluate") cost more than the statement
    itself (half an idle server's CPU went to the stability schedule's claim and finish)."""
    return update(Job).execution_options(synchronize_session=False)


def _ready(now: dt.datetime) -> Any:
    """Queued and due, or running on a lease that has expired (its runner died)."""
    return or_(
        and_(Job.state == JobState.QUEUED.value, Job.run_at <= now),
        and_(Job.state == JobState.RUNNING.value, Job.lease_until < now),
    )


def any_ready(session: Session, kinds: Sequence[str]) -> bool:
    """Whether a job of *kinds* is ready: a read, so that an idle runner's poll takes no
    write lock (on SQLite a write transaction, on every database a row lock)."""
    if not kinds:
        return False
    # The kinds of the ready jobs, matched here: an IN list of every registered kind is
    # expanded into the SQL at each execution, which cost more than the query.
    ready = session.execute(select(Job.kind).where(_ready(utcnow())).distinct()).scalars()
    return not set(kinds).isdisjoint(ready)


def claim(
    session: Session, owner: str, kinds: Sequence[str], limit: int, lease_s: dict[str, float]
) -> list[JobRow]:
    """Take up to *limit* ready jobs of *kinds* for *owner*, highest priority first."""
    if not kinds or limit <= 0:
        return []
    now = utcnow()
    ready = _ready(now)
    ids = list(
        session.execute(
            select(Job.id)
            .where(ready, Job.kind.in_(kinds))
            .order_by(Job.priority.desc(), Job.run_at, Job.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    if not ids:
        return []
    rows = [
        JobRow(*r)
        for r in session.execute(select(*_COLUMNS).where(Job.id.in_(ids)).order_by(Job.id))
    ]
    for row in rows:
        session.execute(
            _update()
            .where(Job.id == row.id)
            .values(
                state=JobState.RUNNING.value,
                lease_owner=owner,
                lease_until=now + dt.timedelta(seconds=lease_s.get(row.kind, 300.0)),
                attempts=Job.attempts + 1,
                started_at=now,
            )
        )
    claimed = [
        JobRow(*r)
        for r in session.execute(select(*_COLUMNS).where(Job.id.in_(ids)).order_by(Job.id))
    ]
    claimed.sort(key=lambda r: (-r.priority, r.run_at, r.id))
    return claimed


def _owned(job_id: int, owner: str) -> Any:
    return and_(Job.id == job_id, Job.lease_owner == owner, Job.state == JobState.RUNNING.value)


def finish(session: Session, job_id: int, owner: str) -> bool:
    """Mark a job done; False when the lease was lost (cancelled or taken over)."""
    result = session.execute(
        _update()
        .where(_owned(job_id, owner))
        .values(
            state=JobState.DONE.value,
            finished_at=utcnow(),
            lease_owner=None,
            lease_until=None,
            dedupe_key=None,
            last_error=None,
        )
    )
    return bool(result.rowcount)


def fail(
    session: Session, job_id: int, owner: str, error: str, retry_at: dt.datetime | None
) -> bool:
    """Record a failed attempt: queued again at *retry_at*, or dead when it is None."""
    values: dict[str, Any] = {
        "lease_owner": None,
        "lease_until": None,
        "last_error": error[:20000],
    }
    if retry_at is None:
        values.update(state=JobState.DEAD.value, finished_at=utcnow(), dedupe_key=None)
    else:
        values.update(state=JobState.QUEUED.value, run_at=retry_at)
    result = session.execute(_update().where(_owned(job_id, owner)).values(values))
    return bool(result.rowcount)


def get(session: Session, job_id: int) -> JobRow | None:
    row = session.execute(select(*_COLUMNS).where(Job.id == job_id)).first()
    return JobRow(*row) if row else None


def list_jobs(
    session: Session,
    *,
    state: str | None = None,
    kind: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[JobRow]:
    """Jobs, newest first."""
    query = select(*_COLUMNS)
    if state:
        query = query.where(Job.state == state)
    if kind:
        query = query.where(Job.kind == kind)
    query = query.order_by(Job.id.desc()).limit(limit).offset(offset)
    return [JobRow(*r) for r in session.execute(query)]


def count_by_state(session: Session, kind: str | None = None) -> dict[str, int]:
    query = select(Job.state, func.count()).group_by(Job.state)
    if kind:
        query = query.where(Job.kind == kind)
    rows = session.execute(query)
    return {state: int(n) for state, n in rows}


def retry(session: Session, job_id: int) -> bool:
    """Queue a dead or cancelled job again, with fresh attempts; False when it is not one."""
    result = session.execute(
        _update()
        .where(Job.id == job_id, Job.state.in_([JobState.DEAD.value, JobState.CANCELLED.value]))
        .values(
            state=JobState.QUEUED.value,
            run_at=utcnow(),
            attempts=0,
            finished_at=None,
        )
    )
    return bool(result.rowcount)


def cancel(session: Session, job_id: int) -> bool:
    """Cancel a queued or running job (a running one finishes, but its result is dropped)."""
    result = session.execute(
        _update()
        .where(Job.id == job_id, Job.state.in_([JobState.QUEUED.value, JobState.RUNNING.value]))
        .values(
            state=JobState.CANCELLED.value,
            finished_at=utcnow(),
            lease_owner=None,
            lease_until=None,
            dedupe_key=None,
        )
    )
    return bool(result.rowcount)


def prune(session: Session, older_than: dt.datetime) -> int:
    """Remove jobs done or cancelled before *older_than* (dead ones stay until handled)."""
    result = session.execute(
        delete(Job).where(
            Job.state.in_([JobState.DONE.value, JobState.CANCELLED.value]),
            Job.finished_at < older_than,
        )
    )
    return int(result.rowcount)


def ensure_schedules(session: Session, names: Sequence[str]) -> None:
    """Create the schedule rows of periodic jobs that have none (due at once)."""
    known = set(session.execute(select(JobSchedule.name)).scalars())
    for name in names:
        if name not in known:
            try:
                with session.begin_nested():
                    session.execute(
                        JobSchedule.__table__.insert().values(name=name, next_run_at=utcnow())
                    )
            except IntegrityError:
                pass  # another runner created it


def due_schedules(session: Session, names: Sequence[str]) -> list[tuple[str, dt.datetime]]:
    now = utcnow()
    rows = session.execute(
        select(JobSchedule.name, JobSchedule.next_run_at).where(
            JobSchedule.name.in_(names), JobSchedule.next_run_at <= now
        )
    )
    return [(name, at) for name, at in rows]


def take_schedule(
    session: Session, name: str, seen_next: dt.datetime, next_run_at: dt.datetime
) -> bool:
    """Move a schedule on; True for the one runner whose update won (it enqueues the job)."""
    result = session.execute(
        update(JobSchedule)
        .where(JobSchedule.name == name, JobSchedule.next_run_at == seen_next)
        .values(next_run_at=next_run_at)
    )
    return bool(result.rowcount)
