"""The audit trail: who (user or calling AE) did what to which object, from where, and when.

Events are queued and written in batches by one background thread, so that a request or a
C-STORE never waits for its audit row (a viewer fetching 300 frames writes 300 events). Readers
call :meth:`AuditLog.flush` first, so a search always sees every event recorded before it.
Events are recorded after the work they describe has finished, with its outcome.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from vesalius.events import Accessed, EventBus
from vesalius.index import people
from vesalius.index.engine import Database
from vesalius.index.people import AuditFilters

log = logging.getLogger(__name__)

BATCH = 500
LINGER_S = 0.2  # how long the writer waits for more events before a commit
_HURRY = object()  # queued by flush(): write what is gathered now


def utcnow() -> datetime:
    """Now, in UTC, without a zone (how every people table stores times)."""
    return datetime.now(UTC).replace(tzinfo=None)


def _cut(value: str | None, length: int) -> str | None:
    return value[:length] if value else value


@dataclass(frozen=True)
class AuditRecord:
    """One audited action. *actor* is a user name or ``AE:<calling AE title>``."""

    actor: str
    action: str  # login, logout, login_failed, view, search, retrieve, download, store, ...
    protocol: str  # http, dicomweb, dimse, cli
    object: str | None = None
    study_uid: str | None = None
    outcome: str = "ok"
    address: str | None = None
    user_agent: str | None = None
    detail: str | None = None
    at: datetime = field(default_factory=utcnow)

    def row(self) -> dict[str, Any]:
        values = dict(vars(self))  # its fields are flat: asdict's deep copy is not needed
        values["actor"] = _cut(self.actor, 80)
        values["object"] = _cut(self.object, 512)
        values["study_uid"] = _cut(self.study_uid, 64)
        values["address"] = _cut(self.address, 64)
        values["user_agent"] = _cut(self.user_agent, 255)
        values["outcome"] = _cut(self.outcome, 16)
        return values


class AuditLog:
    """Records audit events (asynchronously, in batches), searches them and applies retention."""

    def __init__(self, db: Database, retention_days: int) -> None:
        self.db = db
        self.retention_days = retention_days
        self._queue: queue.Queue[AuditRecord | object | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._hurry = threading.Event()  # cuts the writer's linger short (flush, close)
        # Set by the container: every recorded access is also an ``Accessed`` event.
        self.events: EventBus | None = None

    def record(self, event: AuditRecord) -> None:
        """Announce an access as an ``Accessed`` event.

        The shipped audit plugin (:mod:`vesalius.auth.audit_plugin`) subscribes inline, so the
        event is queued for :meth:`write` before this returns and a :meth:`flush` after it
        finds it written. Without an event bus (a bare log), it is written directly.
        """
        if self.events is None:
            self.write(event)
            return
        self.events.publish(
            Accessed(
                event.actor,
                event.action,
                event.protocol,
                event.object,
                event.study_uid,
                event.outcome,
                event.address,
                event.at.replace(tzinfo=UTC),  # the trail keeps UTC without a zone
                event.user_agent,
                event.detail,
            )
        )

    def write(self, event: AuditRecord) -> None:
        """Queue *event* for the trail; it is written within moments, or at the next flush."""
        if self._thread is None:
            self._start()
        self._queue.put(event)

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="vesalius-audit", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            # Linger a moment to gather what follows: a C-STORE stream then costs one commit
            # (one disk flush) per batch instead of one per instance. The writer sleeps on an
            # event that only flush() and close() set, rather than waking at every queued
            # record: a wake per record was a thread hand-off per stored instance.
            if first is not None and first is not _HURRY and self._queue.qsize() < BATCH:
                self._hurry.wait(LINGER_S)
            self._hurry.clear()
            batch: list[AuditRecord | object | None] = [first]
            while len(batch) < BATCH and batch[-1] is not None:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            events = [e for e in batch if isinstance(e, AuditRecord)]
            try:
                if events:
                    rows = [e.row() for e in events]
                    self.db.run_write(lambda s: people.add_audit_events(s, rows))  # noqa: B023
            except Exception:
                log.exception("could not write %d audit events", len(events))
            finally:
                for _ in batch:
                    self._queue.task_done()
            if None in batch:
                return

    def flush(self) -> None:
        """Wait until every event recorded so far is written."""
        if self._thread is not None:
            self._queue.put(_HURRY)
            self._hurry.set()
            self._queue.join()

    def search(self, filters: AuditFilters) -> list[dict[str, Any]]:
        self.flush()
        with self.db.read() as session:
            return people.search_audit(session, filters)

    def cleanup(self, now: datetime | None = None) -> int:
        """Delete events older than the retention period; returns how many."""
        if self.retention_days <= 0:
            return 0
        self.flush()
        before = (now or utcnow()) - timedelta(days=self.retention_days)
        return self.db.run_write(lambda s: people.delete_audit_before(s, before))

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._hurry.set()
            self._thread.join(timeout=10)
            self._thread = None


def from_accessed(event: Accessed) -> AuditRecord:
    """The trail's record of an ``Accessed`` event."""
    return AuditRecord(
        event.actor,
        event.action,
        event.protocol,
        event.object,
        event.study_instance_uid,
        event.outcome,
        event.address,
        event.user_agent,
        event.detail,
        event.at.astimezone(UTC).replace(tzinfo=None) if event.at.tzinfo else event.at,
    )


def dimse_event(event: Any, action: str, obj: str | None, study_uid: str | None) -> AuditRecord:
    """An audit record for a DIMSE request: the calling AE title is the actor."""
    requestor = event.assoc.requestor
    return AuditRecord(
        actor=f"AE:{str(requestor.ae_title).strip()}",
        action=action,
        protocol="dimse",
        object=obj,
        study_uid=study_uid,
        address=str(requestor.address),
    )
