"""Content digests of stored blobs, written ``<algorithm>:<hex>``.

A DICOM instance's digest is BLAKE3 (256 bits), computed on its spool as the data arrives.
It was SHA-256 until index revision 0009: SHA-256 took 0.3-0.4 ms of CPU per 512 KB image
here (with the CPU's SHA instructions), about a sixth of the server's CPU for a stored
instance; BLAKE3 takes 0.1 ms and is as collision resistant. Rows indexed before keep their
``sha256:`` digests, so a digest is only compared with one of the same algorithm
(:func:`same_content` hashes the other side again when they differ). Attachments of the
research records keep plain SHA-256 (their API and export format publish it).
"""

from __future__ import annotations

import hashlib
from typing import Any, BinaryIO

import blake3

ALGORITHM = "blake3"  # of the digests the store computes now
_HASHERS: dict[str, Any] = {"blake3": blake3.blake3, "sha256": hashlib.sha256}
_CHUNK = 1024 * 1024


def new_hasher() -> Any:
    """A hasher of :data:`ALGORITHM` (``update``, ``hexdigest``)."""
    return _HASHERS[ALGORITHM]()


def written(hasher: Any) -> str:
    """What *hasher* (BLAKE3 or a ``hashlib`` one) has hashed, written as the index stores
    it: ``blake3:ab12...`` (both kinds name their algorithm)."""
    return f"{hasher.name}:{hasher.hexdigest()}"


def algorithm_of(digest: str) -> str:
    algorithm, sep, _ = digest.partition(":")
    if not sep or algorithm not in _HASHERS:
        raise ValueError(f"not a digest the store knows: {digest[:20]!r}")
    return algorithm


def of_stream(algorithm: str, stream: BinaryIO) -> str:
    """The digest with *algorithm* of what *stream* holds from where it is to its end,
    written as the index stores it."""
    hasher = _HASHERS[algorithm]()
    while chunk := stream.read(_CHUNK):
        hasher.update(chunk)
    return written(hasher)


def same_content(digest: str, other: str, reopen: Any) -> bool:
    """Whether two blobs hold the same bytes, by their digests; when the algorithms differ,
    the blob of *digest* is read again (``reopen()`` opens it) and hashed like *other*."""
    if algorithm_of(digest) == algorithm_of(other):
        return digest == other
    with reopen() as stream:
        return of_stream(algorithm_of(other), stream) == other
