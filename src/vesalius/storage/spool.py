"""A spool: an incoming file written to disk as it arrives, hashed (BLAKE3) on the way.

Every store path (C-STORE, STOW-RS, ``vesalius import``) writes what it receives into a spool
instead of gathering it in memory; the blob store then renames the spool into place, so a
stored instance is written exactly once. A spool lives in the blob store's own temporary
folder (same volume, so the rename is atomic) and holds an exclusive ``flock`` on its file
while it is open: a sweep of temporaries skips the spools of live processes and removes
those a crash left behind.

A large file is written to the disk as it arrives: every ``WRITEBACK_STEP`` the spool asks
the kernel to start writing what came (:func:`~vesalius.storage.pagecache.start_writeback`,
which returns without waiting), so that the fsync that makes it durable waits only for the
rest and memory does not fill with a multi-gigabyte file's unwritten pages. An instance smaller
than the step is written by its fsync alone, in one request to the disk. Once it has all
arrived, :meth:`Spool.flush` makes it durable while the instance is parsed and indexed,
rather than after: see there.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import threading
from pathlib import Path
from types import TracebackType
from typing import Self

from vesalius.storage import digest as digests
from vesalius.storage import pagecache

SPOOL_SUFFIX = ".spool"
# Writeback is started once this much has arrived since the last start (whole pages only).
# Each start is a synchronous submission to the disk (on a virtual machine, a notification of
# the host too); every 64 KB, as before, it cost a 512 KB instance 0.2-0.3 ms of CPU more than
# its fsync writing it at once: 1 association +23% instances/s (5 of 5 interleaved rounds),
# 4 associations +6% to +12% and 0.2-0.4 ms less CPU per instance, on a disk that fsyncs
# 1,500 such files/s. Writeback every 256 KB sat in between.
WRITEBACK_STEP = 4 * 1024 * 1024
_PAGE = 4096


class Spool:
    """A temporary file in the store's temporary folder, written once, front to back.

    Writes go straight to the file descriptor (no buffering in Python, no reopen), so the
    file on disk is complete up to :attr:`size` at any time and can be read by path while the
    spool is still open. Used as a context manager, the spool is discarded when the block
    raises; the store's ``place_spool`` consumes it otherwise.

    Examples
    --------
    >>> with store.spool() as spool:  # doctest: +SKIP
    ...     spool.write(b"DICM...")
    ...     info = store.place_spool(spool, "dicom/x.dcm").sync()
    """

    __slots__ = ("_digest", "_fd", "_flush_lock", "_flushed", "_written_back", "path", "size")

    def __init__(self, folder: Path) -> None:
        self.path = folder / f"{secrets.token_hex(12)}{SPOOL_SUFFIX}"
        self._fd: int | None = os.open(
            self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644
        )
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.discard()
            raise
        self._digest = digests.new_hasher()
        self.size = 0
        self._written_back = 0  # writeback was started up to here
        self._flushed = -1  # the size the last flush made durable
        # Held by a flush while it runs, so the file descriptor is not closed under it.
        self._flush_lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        """Whether the spool still holds its file (not yet consumed or discarded)."""
        return self._fd is not None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append *data* to the file and to the running digest."""
        if self._fd is None:
            raise ValueError("write to a spool that was already consumed or discarded")
        view = memoryview(data).cast("B")
        self._digest.update(view)
        written = 0
        while written < len(view):
            written += os.write(self._fd, view[written:])
        self.size += written
        if self.size - self._written_back >= WRITEBACK_STEP:
            end = self.size - self.size % _PAGE
            pagecache.start_writeback(self._fd, self._written_back, end - self._written_back)
            self._written_back = end

    def flush(self) -> None:
        """Make what was written durable (fsync) now, ahead of :meth:`sync`; meant for a
        thread, started as soon as the last byte has arrived.

        The store then parses the instance, renames it into place and indexes it while the
        disk writes it, and its own flush finds the data there: over one association that
        took the file's fsync (about 1 ms here) off the time between an instance's last byte
        and its answer. A failure is left for :meth:`sync`, which flushes again and raises.
        A spool discarded meanwhile is not flushed.
        """
        with self._flush_lock:
            if self._fd is None or self._flushed == self.size:
                return
            size = self.size
            try:
                os.fsync(self._fd)
            except OSError:
                return
            self._flushed = size

    def sync(self) -> None:
        """Make the data durable: wait for a :meth:`flush` in progress, then fsync unless it
        made everything written durable already. Raises ``OSError`` when the disk fails."""
        with self._flush_lock:
            if self._flushed != self.size:
                os.fsync(self.fileno())
                self._flushed = self.size

    def digest(self) -> str:
        """The digest of everything written so far (``blake3:<hex>``)."""
        return digests.written(self._digest)

    def fileno(self) -> int:
        if self._fd is None:
            raise ValueError("the spool was already consumed or discarded")
        return self._fd

    def release(self) -> None:
        """Close the file descriptor (after the file was renamed away); the spool is spent."""
        with self._flush_lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def discard(self) -> None:
        """Remove the file; calling it again, or after the spool was consumed, does nothing."""
        with self._flush_lock:
            fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.discard()

    def __del__(self) -> None:  # a spool dropped without a decision leaves no file
        if getattr(self, "_fd", None) is not None:
            with contextlib.suppress(OSError):
                self.discard()

    def __repr__(self) -> str:
        state = "open" if self._fd is not None else "closed"
        return f"<Spool {self.path.name} {self.size} bytes {state}>"


def is_in_use(path: Path) -> bool:
    """Whether a live process holds the spool at *path* (its ``flock`` is taken)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases the probe's lock
    return False
