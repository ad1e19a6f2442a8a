"""When the embedded index's log was last made durable (SQLite with ``synchronous=NORMAL``).

With ``sqlite_synchronous = "normal"`` (the default) a commit writes the SQLite write-ahead log
without waiting for the disk; what a process crash cannot lose (the log is in the kernel's page
cache) a power cut can. So a store pays one disk flush, its blob's, instead of two in series
(blob, then log), as Orthanc does; unlike Orthanc, nothing acknowledged is lost at a power cut:

* a stored instance is acknowledged once its file is fsync'd and its rows committed; the file
  is put in place first, under a key that starts with the hour it was written
  (``dicom/2026/12/02/15/...``), and its rows commit while it is fsync'd;
* ``vesalius serve`` flushes the log at most every ``index_flush_interval_s`` while commits
  happen, and at a clean stop, and records in ``<index>.flushed`` when each flush began;
* at start-up, before anything is flushed again, ``serve`` mends what a power cut left since
  that moment (less a margin): it re-indexes the files the index does not name, and removes
  the rows whose file is missing or short, whose sender was never answered
  (:meth:`Archive.recover_unflushed`).

Only the store pipeline's commits wait for the background flush (``Database.write(durable=
False)``); every other write (a deletion, a replaced instance, the research records, accounts,
jobs) is flushed at its commit, as with ``FULL``, so a power cut can never bring back a row whose
file is gone nor lose anything else that was acknowledged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)


class IndexLog:
    """Flushes an SQLite index's write-ahead log and remembers when (see the module docstring)."""

    def __init__(self, database: Path, interval: float = 1.0) -> None:
        self.database = database
        self.wal = database.with_name(database.name + "-wal")
        self.mark = database.with_name(database.name + ".flushed")
        self.interval = interval
        self._writes = 0  # commits seen; compared by the flusher thread, no lock needed
        self._flushed_writes = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def unflushed(self) -> int:
        """Commits of this process not yet known to be on the disk."""
        return self._writes - self._flushed_writes

    def note_commit(self) -> None:
        """Called after every write transaction of this process commits."""
        self._writes += 1

    def flush(self, *, record: bool = True) -> float:
        """Make every commit so far durable; returns when this flush began.

        With *record*, the moment is written to the mark file, which only the serving process
        does (see :meth:`start`).
        """
        with self._lock:
            began = time.time()
            writes = self._writes
            # The log only: what a checkpoint moved into the database file was flushed by the
            # checkpoint. And never open and close the database file itself: closing any
            # descriptor of it drops the process's POSIX locks that SQLite holds on it (SQLite
            # keeps no such locks on the log; its WAL locks live in the -shm file).
            try:
                fd = os.open(self.wal, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                fd = -1  # no log yet, or removed at the last close: nothing to flush
            if fd >= 0:
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            self._flushed_writes = writes
            if record:
                self._record(began)
            return began

    def flushed_at(self) -> float | None:
        """When the last recorded flush began; None when none was ever recorded."""
        try:
            return float(json.loads(self.mark.read_text())["flushed_at"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s is unreadable (%s); assuming a flush a day ago", self.mark, exc)
            return time.time() - 86400

    def start(self) -> None:
        """Flush in the background while commits happen; record each flush (serve only)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="index-log-flush", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the background flushes and flush once more (a clean stop loses nothing)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join()
        if self.unflushed:
            with contextlib.suppress(OSError):
                self.flush(record=thread is not None)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if not self.unflushed:
                continue
            try:
                self.flush()
            except OSError as exc:
                log.error("could not flush the index log %s: %s", self.wal, exc)

    def _record(self, began: float) -> None:
        # Each process and thread its own temporary: the workers of `serve` all flush the
        # one shared log and record it, and a shared temporary name let one's rename take
        # the other's file away (FileNotFoundError). Whoever renames last wins; an older
        # moment than another process recorded only widens the next scan.
        tmp = self.mark.with_name(f"{self.mark.name}.{os.getpid()}-{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps({"flushed_at": began}))
        os.replace(tmp, self.mark)
