"""The runner of one process: claims ready jobs with a lease, runs them on a few threads,
records the outcome, and enqueues periodic jobs when they are due.

Each ``vesalius serve`` process (every worker of every node) runs one. They share the queue
through the database; see :mod:`vesalius.index.jobs` for why a job is taken by one only.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import queue
import random
import secrets
import socket
import threading
import time
import traceback
from typing import Any

from vesalius.index import jobs as sql
from vesalius.index.changes import utcnow
from vesalius.jobs import registry
from vesalius.jobs.registry import JobContext

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 3600.0


def backoff_s(attempt: int, base_s: float) -> float:
    """Seconds before attempt *attempt* + 1: base, 2 x base, 4 x base... capped, with jitter."""
    delay = min(base_s * 2 ** max(attempt - 1, 0), MAX_BACKOFF_S)
    return delay * random.uniform(0.8, 1.2)


class JobRunner:
    """Runs the registered job kinds of this process; ``start()`` then ``stop()``."""

    def __init__(
        self,
        container: Any,
        *,
        workers: int | None = None,
        poll_s: float | None = None,
        retry_base_s: float | None = None,
    ) -> None:
        settings = container.settings
        self.container = container
        self.db = container.db
        self.workers = workers or settings.job_workers
        self.poll_s = poll_s if poll_s is not None else settings.job_poll_s
        self.retry_base_s = retry_base_s if retry_base_s is not None else settings.job_retry_base_s
        self.owner = f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(4)}"
        self._claims = 0
        self._busy = 0
        self._busy_lock = threading.Lock()
        self._work: queue.Queue[sql.JobRow | None] = queue.Queue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._known_schedules: set[str] = set()

    # -- life ----------------------------------------------------------------------------------

    def start(self) -> JobRunner:
        registry.add_waker(self._wake.set)
        self._threads = [
            threading.Thread(target=self._loop, name="jobs-claim", daemon=True),
            *(
                threading.Thread(target=self._work_loop, name=f"jobs-{n}", daemon=True)
                for n in range(self.workers)
            ),
        ]
        for thread in self._threads:
            thread.start()
        log.info("job runner %s started with %d workers", self.owner, self.workers)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop claiming and wait up to *timeout_s* for running jobs (a job still running
        afterwards is taken again elsewhere when its lease expires)."""
        registry.remove_waker(self._wake.set)
        self._stop.set()
        self._wake.set()
        for _ in range(self.workers):
            self._work.put(None)
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def wake(self) -> None:
        self._wake.set()

    # -- claiming ------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self._enqueue_due_schedules()
                claimed = self._claim()
            except Exception:
                log.exception("the job runner could not read the queue; trying again")
                claimed = -1
            if claimed > 0:
                continue  # more may be ready
            self._wake.wait(self.poll_s if claimed == 0 else max(self.poll_s, 5.0))

    def _free(self) -> int:
        with self._busy_lock:
            return self.workers - self._busy

    def _claim(self) -> int:
        free = self._free()
        kinds = registry.kinds()
        if free <= 0 or not kinds:
            return 0
        with self.db.read() as session:
            if not sql.any_ready(session, list(kinds)):
                return 0
        self._claims += 1
        owner = f"{self.owner}/{self._claims}"
        lease = {name: kind.lease_s for name, kind in kinds.items()}
        rows = self.db.run_write(lambda s: sql.claim(s, owner, list(kinds), free, lease))
        for row in rows:
            with self._busy_lock:
                self._busy += 1
            self._work.put(row)
        return len(rows)

    def _enqueue_due_schedules(self) -> None:
        plans = registry.schedules()
        if not plans:
            return
        names = sorted(plans)
        if set(names) - self._known_schedules:
            self.db.run_write(lambda s: sql.ensure_schedules(s, names))
            self._known_schedules = set(names)
        with self.db.read() as session:
            due = sql.due_schedules(session, names)
        for name, seen in due:
            plan = plans[name]

            def take(session: Any, plan: Any = plan, name: str = name, seen: Any = seen) -> bool:
                # On the schedule's own grid (whole seconds survive MariaDB's DATETIME), a
                # missed period skipped rather than run twice.
                every = dt.timedelta(seconds=plan.every_s)
                next_at = seen + every
                if next_at <= utcnow():
                    next_at = utcnow() + every
                if not sql.take_schedule(session, name, seen, next_at):
                    return False  # another runner was first
                registry.enqueue(session, plan.kind, plan.payload, dedupe_key=f"schedule:{name}")
                return True

            if self.db.run_write(take):
                log.debug("periodic job %s enqueued", name)

    # -- running -------------------------------------------------------------------------------

    def _work_loop(self) -> None:
        while True:
            row = self._work.get()
            if row is None:
                return
            try:
                self._run(row)
            except Exception:
                log.exception("job %d (%s): could not record its outcome", row.id, row.kind)
            finally:
                with self._busy_lock:
                    self._busy -= 1
                self._wake.set()

    def _run(self, row: sql.JobRow) -> None:
        kind = registry.get_kind(row.kind)
        owner = row.lease_owner or ""
        context = JobContext(row.id, row.kind, row.attempts, self.container)
        started = time.monotonic()
        try:
            if kind is None:
                raise LookupError(f"no handler for job kind {row.kind!r} in this process")
            kind.call(json.loads(row.payload), context)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}"
            last = row.attempts >= row.max_attempts
            retry_at = (
                None
                if last
                else utcnow() + dt.timedelta(seconds=backoff_s(row.attempts, self.retry_base_s))
            )
            if not self.db.run_write(lambda s: sql.fail(s, row.id, owner, error, retry_at)):
                log.warning("job %d (%s) failed after its lease was lost", row.id, row.kind)
            elif last:
                log.error(
                    "job %d (%s) failed %d times and is dead: %s (retry with "
                    "`vesalius jobs retry %d`)",
                    row.id,
                    row.kind,
                    row.attempts,
                    exc,
                    row.id,
                )
            else:
                log.warning(
                    "job %d (%s) attempt %d of %d failed: %s; retried at %s",
                    row.id,
                    row.kind,
                    row.attempts,
                    row.max_attempts,
                    exc,
                    retry_at,
                )
            return
        if not self.db.run_write(lambda s: sql.finish(s, row.id, owner)):
            log.warning(
                "job %d (%s) finished after its lease was lost (cancelled, or slower than "
                "its lease of %.0f s)",
                row.id,
                row.kind,
                kind.lease_s if kind else 0,
            )
        else:
            log.debug("job %d (%s) done in %.3f s", row.id, row.kind, time.monotonic() - started)


def prune_finished(payload: dict[str, Any], context: JobContext) -> None:
    """The periodic clean-up: done and cancelled jobs older than the retention go."""
    days = float(payload.get("days", context.container.settings.job_retention_days))
    cutoff = utcnow() - dt.timedelta(days=days)
    removed = context.container.db.run_write(lambda s: sql.prune(s, cutoff))
    if removed:
        log.info("removed %d finished jobs older than %g days", removed, days)


registry.register("jobs.prune", prune_finished)
registry.schedule("jobs.prune", every_s=3600)
