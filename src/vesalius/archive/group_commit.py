"""Group commit: the index rows of every instance ready at one moment, in one transaction.

Each store hands its row-writing step to :meth:`GroupCommit.run` and waits. One writer thread
takes everything queued at that moment, runs each step in a savepoint of one transaction and
commits once: N instances arriving together over N associations (or in one STOW-RS request)
pay one commit, one fsync of the database log, instead of N. Nobody waits for a batch to fill:
a lone instance is committed at once. A step that fails (a duplicate SOP Instance UID, a
series filed under another study) is rolled back to its savepoint and fails alone; its
neighbours commit. Each caller returns only once its own rows are committed, so an
acknowledgement still means durable.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from vesalius.index.engine import Database

log = logging.getLogger(__name__)

Step = Callable[[Session], Any]


class GroupCommit:
    """A writer thread that commits the queued steps together (see the module docstring)."""

    def __init__(self, db: Database, max_batch: int = 64) -> None:
        self.db = db
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[Step, Future[Any]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.batches = 0  # counted for the benchmarks and tests
        self.steps = 0

    def run(self, step: Step) -> Any:
        """Run *step* in the next group transaction; returns its result once committed.

        Raises what *step* raised (its savepoint rolled back), or what the commit raised.
        """
        if threading.current_thread() is self._thread:  # a step that stores: no deadlock
            return self.db.run_write(step)
        future: Future[Any] = Future()
        self._ensure_thread()
        self._queue.put((step, future))
        return future.result()

    def pending(self) -> int:
        """Steps queued and not yet taken by the writer."""
        return self._queue.qsize()

    def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(30)

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="GroupCommit", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    following = self._queue.get_nowait()
                except queue.Empty:
                    break
                if following is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(following)
            self._commit(batch)

    def _commit(self, batch: list[tuple[Step, Future[Any]]]) -> None:
        outcomes: list[tuple[bool, Any]] = []

        def write(session: Session) -> None:
            outcomes.clear()  # run_write may retry the whole batch after a deadlock
            for step, _ in batch:
                try:
                    with session.begin_nested():
                        outcomes.append((True, step(session)))
                except OperationalError:
                    raise  # a deadlock or a lost connection: the whole transaction is retried
                except Exception as exc:
                    outcomes.append((False, exc))

        try:
            self.db.run_write(write)
        except BaseException as exc:
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
