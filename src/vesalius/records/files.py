"""Uploads in and out of the blob store: chunked, size-limited, under the ``records/`` prefix."""

from __future__ import annotations

import mimetypes
import re
import secrets
from collections.abc import Iterator
from typing import IO

from vesalius.records.errors import TooLarge

RECORDS_PREFIX = "records/"
CHUNK = 1024 * 1024
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")


def new_key(kind: str, suffix: str = "") -> str:
    """A fresh blob key for a records file; never reused, so a put cannot collide."""
    token = secrets.token_hex(16)
    return f"{RECORDS_PREFIX}{kind}/{token[:2]}/{token}{suffix}"


def limited_chunks(fh: IO[bytes], limit: int, what: str, setting: str) -> Iterator[bytes]:
    """Read *fh* in chunks, raising :class:`TooLarge` as soon as more than *limit* bytes came.

    Used as the chunk source of ``BlobStore.put``, which removes its partial file when the
    iterator raises: an oversized upload leaves nothing behind.
    """
    seen = 0
    while chunk := fh.read(CHUNK):
        seen += len(chunk)
        if seen > limit:
            raise TooLarge(f"{what} is larger than {limit} bytes, the limit ({setting})")
        yield chunk


def read_limited(fh: IO[bytes], limit: int, what: str, setting: str) -> bytes:
    return b"".join(limited_chunks(fh, limit, what, setting))


def clean_filename(name: str | None, default: str) -> str:
    """A file name safe to keep and to send back in Content-Disposition: no folders, no
    control characters, at most 255 characters.

    Examples
    --------
    >>> clean_filename("../../etc/report.pdf", "file")
    'report.pdf'
    """
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = _UNSAFE.sub("_", base).strip().lstrip(".")
    return (base or default)[:255]


def media_type_for(filename: str, declared: str | None) -> str:
    """The declared media type, else one guessed from the name, else octet-stream."""
    if declared and declared.strip() and "/" in declared and len(declared) <= 255:
        return declared.strip()
    guessed, _ = mimetypes.guess_type(filename)
    return guessed or "application/octet-stream"
