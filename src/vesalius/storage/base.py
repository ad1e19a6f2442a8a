"""The blob store interface: where DICOM files and attachments live.

Kept narrow (put, open, delete, exists, local_path) so an object store can implement it too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol


@dataclass(frozen=True)
class BlobInfo:
    """What the store says about a blob it has written."""

    key: str
    size: int
    sha256: str


class BlobStore(Protocol):
    """Durable, atomic storage of immutable blobs addressed by key."""

    def put(self, key: str, chunks: Iterable[bytes]) -> BlobInfo:
        """Write a new blob; it is durable when this returns, and absent if this raises."""
        ...

    def open(self, key: str) -> BinaryIO:
        """Open a blob for reading. Raises ``FileNotFoundError`` if it is missing."""
        ...

    def delete(self, key: str) -> None:
        """Remove a blob; removing a missing blob is not an error."""
        ...

    def exists(self, key: str) -> bool: ...

    def local_path(self, key: str) -> Path | None:
        """A filesystem path of the blob if the store has one (for zero-copy sending)."""
        ...

    def iter_keys(self) -> Iterator[str]:
        """Every key in the store (used to rebuild the index)."""
        ...
