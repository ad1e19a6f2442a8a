"""The blob store interface: where DICOM files and attachments live.

Kept narrow (put, spool/place_spool, open, delete, exists, local_path) so an object store can
implement it too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from vesalius.storage.spool import Spool


@dataclass(frozen=True)
class BlobInfo:
    """What the store says about a blob it has written: its *digest* is written
    ``<algorithm>:<hex>`` (:mod:`vesalius.storage.digest`)."""

    key: str
    size: int
    digest: str

    @property
    def sha256(self) -> str:
        """The hex SHA-256 of a blob written by ``put`` (the research records' attachments)."""
        algorithm, _, hexdigest = self.digest.partition(":")
        if algorithm != "sha256":
            raise ValueError(f"blob {self.key} has a {algorithm} digest, not a SHA-256")
        return hexdigest


class BlobStore(Protocol):
    """Durable, atomic storage of immutable blobs addressed by key."""

    def put(self, key: str, chunks: Iterable[bytes]) -> BlobInfo:
        """Write a new blob; it is durable when this returns, and absent if this raises.
        Its digest is SHA-256 (the research records publish it)."""
        ...

    def spool(self) -> Spool:
        """A new temporary file in the store's volume, to be written and then ``place_spool``."""
        ...

    def place_spool(self, spool: Spool, key: str) -> PlacedBlob:
        """Make a written spool the blob *key*, in two steps: put in place now, durable once
        the returned blob's :meth:`~PlacedBlob.sync` has returned (the step that waits for
        the disk, which a caller on an event loop runs on a thread).

        The spool is consumed whether this or ``sync`` returns or raises, and a blob whose
        ``sync`` raised or never ran (:meth:`~PlacedBlob.abandon`) is gone.
        """
        ...


class PlacedBlob(Protocol):
    """A blob put in place but not yet known to be durable (:meth:`BlobStore.place_spool`).

    Exactly one of its two methods ends it, and ``abandon`` may be called after either.
    """

    def info(self) -> BlobInfo:
        """What :meth:`sync` will return (to index the blob while it is made durable)."""
        ...

    def sync(self) -> BlobInfo:
        """Make the blob durable; it is removed if this raises."""
        ...

    def abandon(self) -> None:
        """Remove the blob unless :meth:`sync` has run (a store given up halfway)."""
        ...

    def open(self, key: str) -> BinaryIO:
        """Open a blob for reading. Raises ``FileNotFoundError`` if it is missing."""
        ...

    def prefetch(self, key: str) -> None:
        """Start reading a blob that will be opened soon (a hint; it may do nothing)."""
        ...

    def delete(self, key: str) -> None:
        """Remove a blob; removing a missing blob is not an error."""
        ...

    def exists(self, key: str) -> bool: ...

    def local_path(self, key: str) -> Path | None:
        """A filesystem path of the blob if the store has one (for zero-copy sending)."""
        ...

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        """Every key in the store, or under a folder *prefix* ending in ``/`` (used to
        rebuild the index, and to find the files of an hour)."""
        ...

    def stale_temporaries(self, everywhere: bool = False) -> list[Path]:
        """Temporary files no live process is writing (left behind by a crash)."""
        ...

    def sweep_temporaries(self, everywhere: bool = False) -> int:
        """Remove the stale temporary files; returns how many."""
        ...
