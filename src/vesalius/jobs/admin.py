"""Looking after the queue: list, retry, cancel (for the command line, the API and the portal)."""

from __future__ import annotations

import json
from typing import Any

from vesalius.errors import Conflict, NotFound
from vesalius.index import jobs as sql
from vesalius.index.engine import Database
from vesalius.index.jobs import JobRow, JobState

STATES = [s.value for s in JobState]


def list_jobs(
    db: Database,
    *,
    state: str | None = None,
    kind: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[JobRow]:
    if state and state not in STATES:
        raise ValueError(f"unknown state {state!r}: use one of {', '.join(STATES)}")
    with db.read() as session:
        return sql.list_jobs(session, state=state, kind=kind, limit=limit, offset=offset)


def counts(db: Database) -> dict[str, int]:
    with db.read() as session:
        found = sql.count_by_state(session)
    return {state: found.get(state, 0) for state in STATES}


def _get(db: Database, job_id: int) -> JobRow:
    with db.read() as session:
        row = sql.get(session, job_id)
    if row is None:
        raise NotFound(f"there is no job {job_id}")
    return row


def retry(db: Database, job_id: int) -> JobRow:
    """Queue a dead or cancelled job again, with fresh attempts."""
    row = _get(db, job_id)
    if not db.run_write(lambda s: sql.retry(s, job_id)):
        raise Conflict(f"job {job_id} is {row.state}; only dead or cancelled jobs are retried")
    return _get(db, job_id)


def cancel(db: Database, job_id: int) -> JobRow:
    """Cancel a queued or running job."""
    row = _get(db, job_id)
    if not db.run_write(lambda s: sql.cancel(s, job_id)):
        raise Conflict(f"job {job_id} is {row.state}; only queued or running jobs are cancelled")
    return _get(db, job_id)


def job_out(row: JobRow) -> dict[str, Any]:
    def when(value: Any) -> str | None:
        return value.isoformat() + "Z" if value is not None else None

    try:
        payload = json.loads(row.payload)
    except ValueError:
        payload = row.payload
    return {
        "id": row.id,
        "kind": row.kind,
        "state": row.state,
        "priority": row.priority,
        "attempts": row.attempts,
        "max_attempts": row.max_attempts,
        "run_at": when(row.run_at),
        "created_at": when(row.created_at),
        "started_at": when(row.started_at),
        "finished_at": when(row.finished_at),
        "lease_owner": row.lease_owner,
        "dedupe_key": row.dedupe_key,
        "last_error": row.last_error,
        "payload": payload,
    }
