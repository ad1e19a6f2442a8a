"""Group commit: the index rows of every instance ready at one moment, in one transaction.

Each store hands its row-writing step to :meth:`GroupCommit.run` and waits. The first caller
to find no commit in progress becomes the leader: it takes every step queued at that moment,
its own included, runs each in a savepoint of one transaction and commits once. Callers that
arrive meanwhile queue up and are committed together by the next leader. So N instances
arriving together over N associations (or STOW-RS requests) pay one commit, one flush of the
database log, instead of N, while a lone instance is committed at once by its own thread, with
no hand-off to another thread (which costs more than the commit on a busy machine).

A step that fails (a duplicate SOP Instance UID, a series filed under another study) is rolled
back to its savepoint and fails alone; its neighbours commit. Each caller returns only once its
own rows are committed, so an acknowledgement still means durable.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from vesalius.index.engine import Database

log = logging.getLogger(__name__)

Step = Callable[[Session], Any]


class GroupCommit:
    """Leader/follower group commit of row-writing steps (see the module docstring)."""

    def __init__(self, db: Database, max_batch: int = 64) -> None:
        self.db = db
        self.max_batch = max_batch
        self._queue: deque[tuple[Step, Future[Any]]] = deque()
        self._changed = threading.Condition()
        self._leading = False
        self._local = threading.local()
        self.batches = 0  # counted for the benchmarks and tests
        self.steps = 0

    def run(self, step: Step) -> Any:
        """Run *step* in the next group transaction; returns its result once committed.

        Raises what *step* raised (its savepoint rolled back), or what the commit raised.
        """
        if getattr(self._local, "leading", False):  # a step that stores again: no deadlock
            return self.db.run_write(step)
        future: Future[Any] = Future()
        with self._changed:
            self._queue.append((step, future))
        while True:
            with self._changed:
                while self._leading and not future.done():
                    self._changed.wait()
                if future.done():
                    return future.result()
                self._leading = True
                batch = [
                    self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))
                ]
            self._local.leading = True
            try:
                self._commit(batch)
            finally:
                self._local.leading = False
                with self._changed:
                    self._leading = False
                    self._changed.notify_all()

    def pending(self) -> int:
        """Steps queued and not yet taken by a leader."""
        with self._changed:
            return len(self._queue)

    def close(self) -> None:
        """Nothing runs in the background; kept so that the archive closes all it opened."""

    def _commit(self, batch: list[tuple[Step, Future[Any]]]) -> None:
        outcomes: list[tuple[bool, Any]] = []

        def write(session: Session) -> None:
            outcomes.clear()  # run_write may retry the whole batch after a deadlock
            if len(batch) == 1:  # alone, a failure may roll back the whole transaction
                outcomes.append((True, batch[0][0](session)))
                return
            for step, _ in batch:
                try:
                    with session.begin_nested():
                        outcomes.append((True, step(session)))
                except OperationalError:
                    raise  # a deadlock or a lost connection: the whole transaction is retried
                except Exception as exc:
                    outcomes.append((False, exc))

        try:
            self.db.run_write(write, durable=False)  # the files are durable: see durability.py
        except BaseException as exc:
            if len(batch) == 1 and not isinstance(exc, OperationalError):
                batch[0][1].set_exception(exc)  # its own failure (a duplicate, a conflict)
                return
            log.warning("a group commit of %d instances failed: %s", len(batch), exc)
            for _, future in batch:
                future.set_exception(exc)
            return
        self.batches += 1
        self.steps += len(batch)
        for (ok, value), (_, future) in zip(outcomes, batch, strict=True):
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
