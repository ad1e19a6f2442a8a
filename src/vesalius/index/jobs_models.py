"""The durable job queue: jobs and the state of periodic schedules (``0004_events_jobs_changes``),
and how far each forwarding route has read the change feed (``0007_route_watermarks``).

A job is claimed by a runner with a lease (``lease_owner`` until ``lease_until``); a runner
that dies leaves a lease that expires, and another runner takes the job again. A finished job
(done, dead or cancelled) gives up its ``dedupe_key`` so the same key can be enqueued again.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from vesalius.index.models import MYSQL_TABLE, Base, LongText


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_ready", "state", "run_at"),
        Index("ix_jobs_kind", "kind", "state"),
        MYSQL_TABLE,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(LongText)
    state: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    run_at: Mapped[datetime] = mapped_column(DateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    dedupe_key: Mapped[str | None] = mapped_column(String(191), unique=True)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)


class JobSchedule(Base):
    """When a periodic job is next due; the runner that moves ``next_run_at`` enqueues it."""

    __tablename__ = "job_schedules"
    __table_args__ = (MYSQL_TABLE,)

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    next_run_at: Mapped[datetime] = mapped_column(DateTime)


class RouteWatermark(Base):
    """The last change of the feed a ``[[route]]`` has turned into forward jobs.

    Moved in the transaction that enqueues those jobs, so a change is forwarded once, and a
    crash between a store's commit and its forward job loses nothing (``route.catchup``).
    """

    __tablename__ = "route_watermarks"
    __table_args__ = (MYSQL_TABLE,)

    route: Mapped[str] = mapped_column(String(128), primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
