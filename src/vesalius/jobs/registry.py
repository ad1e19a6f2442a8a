"""The job kinds this process knows, the periodic schedules, and ``enqueue``."""

from __future__ import annotations

import datetime as dt
import inspect
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from vesalius.index import jobs as sql
from vesalius.index.engine import Database

Handler = Callable[..., Any]


@dataclass(frozen=True)
class JobContext:
    """What a running handler may need besides its payload."""

    job_id: int
    kind: str
    attempt: int  # 1 for the first run
    container: Any  # the process's Container (settings, db, archive, records, ...)


@dataclass(frozen=True)
class JobKind:
    name: str
    handler: Handler
    max_attempts: int = 5
    lease_s: float = 300.0
    wants_context: bool = field(default=False)

    def call(self, payload: dict[str, Any], context: JobContext) -> Any:
        if self.wants_context:
            return self.handler(payload, context)
        return self.handler(payload)


@dataclass(frozen=True)
class Schedule:
    kind: str
    every_s: float
    payload: dict[str, Any]
    name: str


_lock = threading.Lock()
_kinds: dict[str, JobKind] = {}
_schedules: dict[str, Schedule] = {}
# Runners of this process, woken when a job is enqueued here (no wait for the next poll).
_wakers: list[Callable[[], None]] = []


def _wants_context(handler: Handler) -> bool:
    try:
        params = [
            p
            for p in inspect.signature(handler).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
    except (TypeError, ValueError):
        return True
    return len(params) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)


def register(
    kind: str, handler: Handler, *, max_attempts: int = 5, lease_s: float = 300.0
) -> JobKind:
    """Make *kind* runnable here: ``handler(payload)`` or ``handler(payload, context)``.

    Registering the same kind again replaces its handler (a reloaded plugin).
    """
    if not kind or len(kind) > 64:
        raise ValueError(f"a job kind is 1 to 64 characters, not {kind!r}")
    if max_attempts < 1 or lease_s <= 0:
        raise ValueError("max_attempts must be at least 1 and lease_s positive")
    entry = JobKind(kind, handler, max_attempts, lease_s, _wants_context(handler))
    with _lock:
        _kinds[kind] = entry
    return entry


def job(
    kind: str, *, max_attempts: int = 5, lease_s: float = 300.0
) -> Callable[[Handler], Handler]:
    """Decorator form of :func:`register`."""

    def decorate(handler: Handler) -> Handler:
        register(kind, handler, max_attempts=max_attempts, lease_s=lease_s)
        return handler

    return decorate


def get_kind(kind: str) -> JobKind | None:
    return _kinds.get(kind)


def kinds() -> dict[str, JobKind]:
    with _lock:
        return dict(_kinds)


def schedule(
    kind: str, every_s: float, payload: dict[str, Any] | None = None, *, name: str | None = None
) -> Schedule:
    """Run *kind* every *every_s* seconds on one of the nodes (whichever runner is first).

    *name* tells apart several schedules of one kind (default: the kind).
    """
    if every_s < 1:
        raise ValueError("every_s must be at least 1 second")
    entry = Schedule(kind, float(every_s), dict(payload or {}), name or kind)
    json.dumps(entry.payload)  # refuse what cannot be stored, now rather than at run time
    with _lock:
        _schedules[entry.name] = entry
    return entry


def schedules() -> dict[str, Schedule]:
    with _lock:
        return dict(_schedules)


def enqueue(
    db: Database | Session,
    kind: str,
    payload: dict[str, Any],
    *,
    run_at: dt.datetime | None = None,
    priority: int = 0,
    dedupe_key: str | None = None,
) -> int | None:
    """Queue a job; returns its id, or None when an unfinished job has *dedupe_key* already.

    *db* is the Database (the job is committed at once) or a write Session (the job commits
    or rolls back with the caller's transaction). *run_at* is naive UTC or aware; *priority*:
    higher runs first. The kind need not be registered here (another node may run it).
    """
    text = json.dumps(payload, separators=(",", ":"))
    if run_at is not None and run_at.tzinfo is not None:
        run_at = run_at.astimezone(dt.UTC).replace(tzinfo=None)
    if dedupe_key is not None and not 0 < len(dedupe_key) <= 191:
        raise ValueError("a dedupe key is 1 to 191 characters")
    known = _kinds.get(kind)
    max_attempts = known.max_attempts if known else 5

    def insert(session: Session) -> int | None:
        return sql.insert_job(
            session,
            kind,
            text,
            run_at=run_at,
            priority=priority,
            dedupe_key=dedupe_key,
            max_attempts=max_attempts,
        )

    if isinstance(db, Session):
        job_id = insert(db)
    else:
        job_id = db.run_write(insert)
        _wake()
    return job_id


def add_waker(waker: Callable[[], None]) -> None:
    with _lock:
        _wakers.append(waker)


def remove_waker(waker: Callable[[], None]) -> None:
    with _lock:
        if waker in _wakers:
            _wakers.remove(waker)


def _wake() -> None:
    for waker in list(_wakers):
        waker()
