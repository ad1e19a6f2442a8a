"""The filesystem blob store: atomic, checksummed, never half-written."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from vesalius.storage.filesystem import FilesystemBlobStore


def test_put_open_delete(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    info = store.put("a/b/c.dcm", [b"hello ", b"world"])
    assert (info.size, info.sha256) == (11, hashlib.sha256(b"hello world").hexdigest())
    assert info.digest == f"sha256:{info.sha256}"  # put: SHA-256, as the records publish it
    with store.open("a/b/c.dcm") as fh:
        assert fh.read() == b"hello world"
    assert list(store.iter_keys()) == ["a/b/c.dcm"]
    store.delete("a/b/c.dcm")
    store.delete("a/b/c.dcm")  # deleting twice is fine
    assert not store.exists("a/b/c.dcm")


def test_an_existing_key_is_never_overwritten(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    store.put("x", [b"first"])
    with pytest.raises(FileExistsError):
        store.put("x", [b"second"])
    with store.open("x") as fh:
        assert fh.read() == b"first"


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)

    def chunks() -> Iterator[bytes]:
        yield b"part one"
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        store.put("dir/blob", chunks())
    assert not store.exists("dir/blob")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("key", ["../escape", "/abs", "a/../../b", "", "a\\b"])
def test_keys_cannot_leave_the_root(tmp_path: Path, key: str) -> None:
    store = FilesystemBlobStore(tmp_path / "root")
    with pytest.raises(ValueError, match="invalid blob key"):
        store.put(key, [b"x"])


def test_stale_temporaries_are_ignored_and_cleaned(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    store.put("k/real", [b"1"])
    (tmp_path / "k" / ".real.abc123.tmp").write_bytes(b"half")
    assert list(store.iter_keys()) == ["k/real"]
    assert store.sweep_temporaries() == 0  # only the temporary folder by default
    assert store.sweep_temporaries(everywhere=True) == 1
