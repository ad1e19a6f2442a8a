"""Blobs as files in a folder: temporary file, fsync, rename, fsync of the folder.

Temporary files (spools, and the temporaries of :meth:`FilesystemBlobStore.put`) live in one
folder of the store, ``<root>/.tmp``, on the same volume as the blobs so that renaming them
into place is atomic. :meth:`FilesystemBlobStore.sweep_temporaries` removes those a crash left
behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from vesalius.storage import digest as digests
from vesalius.storage import pagecache
from vesalius.storage.base import BlobInfo
from vesalius.storage.spool import SPOOL_SUFFIX, Spool, is_in_use

_TMP_SUFFIX = ".tmp"
TEMP_FOLDER = ".tmp"


class FilesystemBlobStore:
    """A :class:`~vesalius.storage.base.BlobStore` on a local (or mounted) folder.

    Keys are relative paths with ``/`` separators; they must not climb out of the root.

    Examples
    --------
    >>> store = FilesystemBlobStore(tmp_path)  # doctest: +SKIP
    >>> store.put("a/b.dcm", [b"data"]).size  # doctest: +SKIP
    4
    """

    def __init__(self, root: Path, write_cache_bytes: int | None = None) -> None:
        """*write_cache_bytes*: how much of the newest written files to keep in the page
        cache (:class:`~vesalius.storage.pagecache.RecentWrites`); None leaves it to the
        kernel."""
        self.recent = pagecache.RecentWrites(write_cache_bytes)
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.temp_dir = self.root / TEMP_FOLDER
        self.temp_dir.mkdir(exist_ok=True)

    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or "\\" in key or ".." in key.split("/"):
            raise ValueError(f"invalid blob key {key!r}")
        return self.root / key

    def _make_parent(self, path: Path) -> list[Path]:
        """Create the blob's folder; returns the folders to fsync, nearest first.

        Those are the blob's folder and the parent of each folder created here. The caller
        fsyncs them after the file itself: on a journalling filesystem the file's fsync
        commits the new folders' entries in the same journal commit, so these fsyncs find
        little left to do. (Fsyncing each parent as its folder was made cost a disk flush of
        its own for every new study, a third of a one-image store's time.)
        """
        parent = path.parent
        if parent.is_dir():
            return [parent]
        missing = []
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        created = []
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except FileExistsError:
                continue
            created.append(folder.parent)
        return [path.parent, *reversed(created)]

    def spool(self) -> Spool:
        return Spool(self.temp_dir)

    def place_spool(self, spool: Spool, key: str) -> PlacedFile:
        """Move the spool into place; :meth:`PlacedFile.sync` then makes its data and its
        name durable.

        Renamed first and fsync'd after: on a journalling filesystem (ext4, XFS) the file's
        fsync then commits the rename in the same journal commit, so the folder's fsync that
        follows (kept for the others) finds little left to do and a store pays about one disk
        flush for its file instead of two. Nothing is acknowledged before both return; a crash
        between the rename and the fsyncs leaves at worst an unindexed file, which the index
        never names and `vesalius doctor --repair` checks like any orphan.
        """
        try:
            path = self._path(key)
            if path.exists():
                raise FileExistsError(f"blob {key} already exists")
            folders = self._make_parent(path)
            os.rename(spool.path, path)
        except BaseException:
            spool.discard()
            raise
        return PlacedFile(self, key, path, folders, spool)

    def put(self, key: str, chunks: Iterable[bytes]) -> BlobInfo:
        path = self._path(key)
        if path.exists():
            raise FileExistsError(f"blob {key} already exists")
        folders = self._make_parent(path)
        tmp = self.temp_dir / f"{secrets.token_hex(8)}{_TMP_SUFFIX}"
        digest = hashlib.sha256()
        size = 0
        try:
            with open(tmp, "xb") as out:
                fcntl.flock(out.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # see stale_temporaries
                for chunk in chunks:
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.rename(tmp, path)
            for folder in folders:
                _fsync_dir(folder)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.recent.add(path, size)
        return BlobInfo(key=key, size=size, digest=digests.written(digest))

    def open(self, key: str) -> BinaryIO:
        return open(self._path(key), "rb")

    def prefetch(self, key: str) -> None:
        pagecache.prefetch(self._path(key))

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

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        top = self._path(prefix.rstrip("/")) if prefix else self.root
        for dirpath, dirs, files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if name.startswith("."):
                    continue
                yield Path(dirpath, name).relative_to(self.root).as_posix()

    def stale_temporaries(self, everywhere: bool = False) -> list[Path]:
        """Temporary files no live process is writing: left behind by a crash.

        Temporaries being written are locked (``flock``) by their process and not listed.
        With *everywhere*, the whole store is walked for the hidden ``*.tmp`` files that
        versions before the temporary folder left next to blobs (slow on a large store).
        """
        stale: list[Path] = []
        for path in sorted(self.temp_dir.iterdir()):
            if path.name.endswith((SPOOL_SUFFIX, _TMP_SUFFIX)) and not is_in_use(path):
                stale.append(path)
        if everywhere:
            for dirpath, dirs, files in os.walk(self.root):
                dirs[:] = sorted(d for d in dirs if d != TEMP_FOLDER)
                for name in sorted(files):
                    if name.startswith(".") and name.endswith(_TMP_SUFFIX):
                        path = Path(dirpath, name)
                        if not is_in_use(path):
                            stale.append(path)
        return stale

    def sweep_temporaries(self, everywhere: bool = False) -> int:
        """Delete temporary files left by a crash mid-write; returns how many."""
        removed = 0
        for path in self.stale_temporaries(everywhere):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
        return removed

    def usage_bytes(self) -> int:
        return sum(
            os.path.getsize(os.path.join(d, f))
            for d, _s, files in os.walk(self.root)
            for f in files
        )


class PlacedFile:
    """A spool renamed into place, its data and name not yet fsync'd (see ``place_spool``)."""

    __slots__ = ("_folders", "_spool", "_store", "key", "path")

    def __init__(
        self, store: FilesystemBlobStore, key: str, path: Path, folders: list[Path], spool: Spool
    ) -> None:
        self._store = store
        self.key = key
        self.path = path
        self._folders = folders
        self._spool = spool

    def info(self) -> BlobInfo:
        """What :meth:`sync` returns, known before it runs (the spool counted and hashed it)."""
        return BlobInfo(key=self.key, size=self._spool.size, digest=self._spool.digest())

    def sync(self) -> BlobInfo:
        spool = self._spool
        try:
            spool.sync()  # little left to do when its early flush ran (Spool.flush)
            for folder in self._folders:
                _fsync_dir(folder)
        except BaseException:
            self.path.unlink(missing_ok=True)
            raise
        finally:
            spool.release()
        self._store.recent.add(self.path, spool.size)
        return self.info()

    def abandon(self) -> None:
        if self._spool.is_open:
            self._spool.release()
            self.path.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_store(root: Path, write_cache_bytes: int | None = None) -> FilesystemBlobStore:
    """The store for a storage folder (object storage will be chosen here later)."""
    return FilesystemBlobStore(root, write_cache_bytes)


__all__ = ["BinaryIO", "FilesystemBlobStore", "open_store"]
