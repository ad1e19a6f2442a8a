"""Durable jobs in the index database: a registry of job kinds, ``enqueue``, periodic
``schedule``\\ s, and the runner each ``vesalius serve`` process starts.

Why our own (about 400 lines) and not a library: procrastinate and PgQueuer are PostgreSQL
only; Celery, Dramatiq, RQ, arq and SAQ need Redis or RabbitMQ (a second server to run and
back up); Huey stores in Redis or SQLite but not PostgreSQL or MariaDB; APScheduler 4 has
SQLAlchemy stores for all three but is still a pre-release. Vesalius needs the queue in the
index database itself, on SQLite, PostgreSQL and MariaDB, so that enqueueing can commit with
the change that caused it.

A handler takes the payload, and optionally a :class:`JobContext`::

    from vesalius import jobs

    @jobs.job("forward", max_attempts=8)
    def forward(payload: dict, ctx: jobs.JobContext) -> None:
        ...

    jobs.enqueue(container.db, "forward", {"study": uid}, dedupe_key=f"forward:{uid}")
    jobs.schedule("federation.push", every_s=30, payload={})

A handler that raises is retried with exponential backoff (``job_retry_base_s`` doubling,
capped at an hour) up to ``max_attempts`` times, then left ``dead`` with its last error, to be
retried by hand (``vesalius jobs retry ID`` or the admin page). Each job runs once at a time:
a runner holds a lease of ``lease_s`` seconds (the longest the handler may take); a job whose
runner died is taken again when its lease expires, so a handler should be idempotent.
"""

from __future__ import annotations

from vesalius.jobs.registry import (
    JobContext,
    JobKind,
    Schedule,
    enqueue,
    get_kind,
    job,
    kinds,
    register,
    schedule,
    schedules,
)

__all__ = [
    "JobContext",
    "JobKind",
    "Schedule",
    "enqueue",
    "get_kind",
    "job",
    "kinds",
    "register",
    "schedule",
    "schedules",
]
