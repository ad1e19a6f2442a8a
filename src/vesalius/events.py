"""Typed events: what the archive, the records and the people part tell the rest of Vesalius.

Events are published *after* the transaction that caused them has committed, never before,
and delivered in order by one dispatcher thread per process, so a handler never slows down
the store (or the request) that caused the event. A handler that raises is logged with its
event and isolated: the other handlers still get the event, the dispatcher goes on.

Events are in-process and best effort: work that must not be lost (a forward, a federation
push) is a job (:mod:`vesalius.jobs`), which a handler may enqueue.

Examples
--------
>>> bus = EventBus()
>>> seen = []
>>> bus.subscribe(InstanceStored, seen.append)
>>> bus.publish(InstanceStored("1.2", "1.2.3", "1.2.3.4", "1.2.840.10008.5.1.4.1.1.2", "P1"))
>>> bus.drain()
True
>>> seen[0].sop_instance_uid
'1.2.3.4'
>>> bus.close()
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Event:
    """Base of every event (subscribe to it to receive them all)."""


@dataclass(frozen=True)
class InstanceStored(Event):
    """An instance was archived (new, or replacing another with the same SOP Instance UID)."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    patient_id: str | None
    modality: str | None = None
    origin: str | None = None  # the calling AE title, "stow", "import", ...
    size: int = 0
    transfer_syntax_uid: str | None = None
    replaced: bool = False
    new_study: bool = False
    at: datetime = field(default_factory=_now)
    # The instance's DICOM JSON (bulk data left out), for handlers that match on attributes.
    data: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class StudyCreated(Event):
    """The first instance of a study was archived."""

    study_instance_uid: str
    patient_id: str | None
    origin: str | None = None
    at: datetime = field(default_factory=_now)


@dataclass(frozen=True)
class StudyStable(Event):
    """No instance arrived for ``stable_after_s`` (reason "idle"), or the study announced
    how many instances it has and all of them are here (reason "complete")."""

    study_instance_uid: str
    patient_id: str | None
    num_instances: int
    reason: str = "idle"
    at: datetime = field(default_factory=_now)


@dataclass(frozen=True)
class InstancesDeleted(Event):
    """Instances were deleted: a whole study, a series or one instance."""

    study_instance_uid: str
    series_instance_uid: str | None
    sop_instance_uid: str | None
    count: int
    actor: str | None = None
    at: datetime = field(default_factory=_now)


@dataclass(frozen=True)
class SubjectChanged(Event):
    """A research subject was created, changed or deleted, or its timeline changed."""

    subject_id: str
    action: str  # created, updated, deleted, timeline
    actor: str | None = None
    at: datetime = field(default_factory=_now)


@dataclass(frozen=True)
class Accessed(Event):
    """What the audit trail records: who did what to which object, from where."""

    actor: str
    action: str
    protocol: str
    object: str | None = None
    study_instance_uid: str | None = None
    outcome: str = "ok"
    address: str | None = None
    at: datetime = field(default_factory=_now)
    user_agent: str | None = None
    detail: str | None = None


E = TypeVar("E", bound=Event)
Handler = Callable[[Any], Any]

SLOW_HANDLER_S = 5.0


class EventBus:
    """Subscriptions and the dispatcher thread of one process.

    The queue is bounded (``capacity``): when handlers fall that far behind, ``publish``
    drops the event and logs it rather than holding up the archive.
    """

    def __init__(self, capacity: int = 2_000) -> None:
        self._subscribers: list[tuple[type[Event], Handler, str]] = []
        self._inline: list[tuple[type[Event], Handler, str]] = []  # replaced, never mutated
        self._lock = threading.Lock()
        self._queue: queue.Queue[Event | None] = queue.Queue(maxsize=capacity)
        self._thread: threading.Thread | None = None
        self._pending = 0
        self._idle = threading.Condition()
        self.failures = 0  # handler errors so far (for tests and the health page)
        self.dropped = 0

    def subscribe(
        self,
        event_type: type[E],
        handler: Callable[[E], Any],
        name: str = "",
        *,
        inline: bool = False,
    ) -> None:
        """Call *handler* with every event of *event_type* (or a subclass) from now on.

        Handlers run on the dispatcher thread, and an event is dropped when they fall far
        behind. An *inline* handler runs in the publisher's thread before ``publish`` returns
        and never misses an event: for quick handlers that must see every one (the audit
        trail's, which only queues the record for its writer). Failures are isolated either way.
        """
        label = name or getattr(handler, "__qualname__", repr(handler))
        with self._lock:
            if inline:
                self._inline = [*self._inline, (event_type, handler, label)]
            else:
                self._subscribers.append((event_type, handler, label))

    def unsubscribe(self, handler: Handler) -> None:
        with self._lock:
            self._subscribers = [s for s in self._subscribers if s[1] is not handler]
            self._inline = [s for s in self._inline if s[1] is not handler]

    def wants(self, *event_types: type[Event]) -> bool:
        """Whether any handler subscribes to one of *event_types* (or to a base class)."""
        return any(
            issubclass(wanted, event_type)
            for event_type, _, _ in (*self._inline, *self._subscribers)
            for wanted in event_types
        )

    def publish(self, event: Event) -> None:
        """Queue *event* for its subscribers (call only after the cause has committed)."""
        for event_type, handler, label in self._inline:
            if isinstance(event, event_type):
                self._call(handler, label, event)
        if not self._subscribers:
            return
        self._start()
        with self._idle:
            self._pending += 1
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()
            self.dropped += 1
            log.error("event queue full: %r dropped (a handler is too slow or stuck)", event)

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every published event has been handled; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self) -> None:
        """Deliver what is queued, then stop the dispatcher."""
        thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=30)
            self._thread = None

    def _start(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._dispatch, name="events", daemon=True)
                self._thread.start()

    def _dispatch(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            try:
                self.deliver(event)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def deliver(self, event: Event) -> None:
        """Call every subscriber of *event* now, in this thread, isolating failures."""
        with self._lock:
            subscribers = list(self._subscribers)
        for event_type, handler, label in subscribers:
            if isinstance(event, event_type):
                self._call(handler, label, event)

    def _call(self, handler: Handler, label: str, event: Event) -> None:
        started = time.monotonic()
        try:
            handler(event)
        except Exception:
            self.failures += 1
            log.exception("event handler %s failed on %r (isolated)", label, event)
        took = time.monotonic() - started
        if took > SLOW_HANDLER_S:
            log.warning("event handler %s took %.1f s on %r", label, took, event)
