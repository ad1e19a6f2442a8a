"""Blobs as files in a folder: temporary file, fsync, rename, fsync of the folder."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from vesalius.storage.base import BlobInfo

_TMP_SUFFIX = ".tmp"


class FilesystemBlobStore:
    """A :class:`~vesalius.storage.base.BlobStore` on a local (or mounted) folder.

    Keys are relative paths with ``/`` separators; they must not climb out of the root.

    Examples
    --------
    >>> store = FilesystemBlobStore(tmp_path)  # doctest: +SKIP
    >>> store.put("a/b.dcm", [b"data"]).size  # doctest: +SKIP
    4
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or "\\" in key or ".." in key.split("/"):
            raise ValueError(f"invalid blob key {key!r}")
        return self.root / key

    def put(self, key: str, chunks: Iterable[bytes]) -> BlobInfo:
        path = self._path(key)
        if path.exists():
            raise FileExistsError(f"blob {key} already exists")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{_TMP_SUFFIX}")
        digest = hashlib.sha256()
        size = 0
        try:
            with open(tmp, "xb") as out:
                for chunk in chunks:
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.rename(tmp, path)
            _fsync_dir(path.parent)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return BlobInfo(key=key, size=size, sha256=digest.hexdigest())

    def open(self, key: str) -> BinaryIO:
        return open(self._path(key), "rb")

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        _fsync_dir(path.parent)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def iter_keys(self) -> Iterator[str]:
        for dirpath, _dirs, files in os.walk(self.root):
            for name in sorted(files):
                if name.startswith(".") and name.endswith(_TMP_SUFFIX):
                    continue
                yield Path(dirpath, name).relative_to(self.root).as_posix()

    def remove_stale_temporaries(self) -> int:
        """Delete temporary files left by a crash mid-write; returns how many."""
        removed = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith(".") and name.endswith(_TMP_SUFFIX):
                    Path(dirpath, name).unlink(missing_ok=True)
                    removed += 1
        return removed

    def usage_bytes(self) -> int:
        return sum(
            os.path.getsize(os.path.join(d, f))
            for d, _s, files in os.walk(self.root)
            for f in files
        )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_store(root: Path) -> FilesystemBlobStore:
    """The store for a storage folder (object storage will be chosen here later)."""
    return FilesystemBlobStore(root)


__all__ = ["BinaryIO", "FilesystemBlobStore", "open_store"]
