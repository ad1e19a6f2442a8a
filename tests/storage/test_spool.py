"""Spools: written as received, renamed into place, never left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import blake3
import pytest

from vesalius.storage import pagecache
from vesalius.storage import spool as spool_module
from vesalius.storage.filesystem import FilesystemBlobStore


def temporaries(store: FilesystemBlobStore) -> list[Path]:
    return sorted(store.temp_dir.iterdir())


def test_a_spool_becomes_a_blob(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    spool = store.spool()
    assert spool.path.parent == store.temp_dir
    spool.write(b"hello ")
    spool.write(bytearray(b"wor"))
    spool.write(memoryview(b"xxld")[2:])
    assert spool.size == 11
    assert spool.path.read_bytes() == b"hello world"  # readable by path while open
    info = store.place_spool(spool, "a/b/c.dcm").sync()
    assert (info.key, info.size) == ("a/b/c.dcm", 11)
    assert info.digest == f"blake3:{blake3.blake3(b'hello world').hexdigest()}" == spool.digest()
    with pytest.raises(ValueError, match="blake3 digest, not a SHA-256"):
        info.sha256  # noqa: B018  (only put's blobs have one)
    with store.open("a/b/c.dcm") as fh:
        assert fh.read() == b"hello world"
    assert temporaries(store) == []
    assert list(store.iter_keys()) == ["a/b/c.dcm"]
    spool.discard()  # consumed: a no-op, the blob stays
    assert store.exists("a/b/c.dcm")
    with pytest.raises(ValueError, match="consumed or discarded"):
        spool.write(b"more")


def test_writeback_is_started_as_data_arrives_in_whole_pages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each started range follows the last, in whole pages, once a step's worth arrived; the
    file is the same with the real ``sync_file_range``, with none, and with one that fails."""
    real = pagecache._SYNC_RANGE
    assert real is not None or not sys.platform.startswith("linux")
    calls: list[tuple[int, int, int]] = []

    def recording(fd: int, offset: int, length: int, flags: int) -> int:
        calls.append((offset, length, flags))
        return real(fd, offset, length, flags) if real is not None else 0

    store = FilesystemBlobStore(tmp_path)
    step = spool_module.WRITEBACK_STEP
    chunks = [os.urandom(n) for n in (300, step - 1000, 700, 5000, 3 * step + 17, 10)]
    expected = b"".join(chunks)
    for number, starter in enumerate((recording, None, lambda *args: -1)):
        monkeypatch.setattr(pagecache, "_SYNC_RANGE", starter)
        spool = store.spool()
        for chunk in chunks:
            spool.write(chunk)
        info = store.place_spool(spool, f"wb/{number}.dcm").sync()
        with store.open(info.key) as fh:
            assert fh.read() == expected
        assert info.digest == f"blake3:{blake3.blake3(expected).hexdigest()}"
    page = 4096
    ends = []
    position = 0
    for offset, length, flags in calls:
        assert flags == 2  # SYNC_FILE_RANGE_WRITE: start, never wait
        assert offset == position and length >= step - page and (offset + length) % page == 0
        position = offset + length
        ends.append(position)
    # the 700 bytes complete the first step, the 5000 after it do not, the large chunk does
    assert ends == [step, (4 * step + 5017) // page * page]


def test_a_spool_is_discarded_on_error_and_discard_is_idempotent(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    with pytest.raises(ConnectionError), store.spool() as spool:
        spool.write(b"part one")
        raise ConnectionError("peer went away")
    assert not spool.path.exists()
    spool.discard()
    other = store.spool()
    other.discard()
    other.discard()
    assert temporaries(store) == []


def test_place_spool_never_overwrites_and_consumes_the_spool(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    store.put("x", [b"first"])
    spool = store.spool()
    spool.write(b"second")
    with pytest.raises(FileExistsError):
        store.place_spool(spool, "x").sync()
    with store.open("x") as fh:
        assert fh.read() == b"first"
    assert temporaries(store) == []
    with pytest.raises(ValueError, match="invalid blob key"):
        store.place_spool(store.spool(), "../escape").sync()
    assert temporaries(store) == []


def test_a_large_spool_is_written_in_chunks(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    digest = blake3.blake3()
    with store.spool() as spool:
        for i in range(64):
            chunk = bytes([i]) * 65536
            digest.update(chunk)
            spool.write(chunk)
        info = store.place_spool(spool, "big").sync()
    assert (info.size, info.digest) == (64 * 65536, f"blake3:{digest.hexdigest()}")
    assert os.path.getsize(store.local_path("big")) == 64 * 65536  # type: ignore[arg-type]


def test_sweep_keeps_live_spools_and_removes_those_of_dead_processes(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    mine = store.spool()
    mine.write(b"being written")
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from vesalius.storage.filesystem import FilesystemBlobStore\n"
            f"s = FilesystemBlobStore({str(tmp_path)!r}).spool()\n"
            "s.write(b'half an instance')\n"
            "print(s.path, flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert child.stdout is not None
        theirs = Path(child.stdout.readline().strip())
        assert theirs.exists()
        assert store.stale_temporaries() == []  # both are being written
        assert store.sweep_temporaries() == 0
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert store.stale_temporaries() == [theirs]
    assert store.sweep_temporaries() == 1
    assert not theirs.exists()
    assert mine.path.exists()
    assert store.place_spool(mine, "k").sync().size == 13


def _recording_fsyncs(monkeypatch: pytest.MonkeyPatch, fail: int = 0) -> list[str]:
    """Record the path of every fsync (the real one runs after); the first *fail* raise EIO."""
    real = os.fsync
    synced: list[str] = []

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        if len(synced) <= fail:
            raise OSError(5, "Input/output error (a test's disk)")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
def test_an_early_flush_leaves_the_sync_only_the_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FilesystemBlobStore(tmp_path)
    synced = _recording_fsyncs(monkeypatch)
    spool = store.spool()
    spool.write(b"received")
    spool.flush()
    spool.flush()  # nothing new: no second fsync
    assert synced == [str(spool.path)]
    info = store.place_spool(spool, "f/one.dcm").sync()
    assert synced[1:] == [str(tmp_path / "f"), str(tmp_path)]  # the folders, not the file
    assert info.size == 8
    # data written after the early flush is flushed by the sync itself
    synced.clear()
    late = store.spool()
    late.write(b"first")
    late.flush()
    late.write(b" and more")
    store.place_spool(late, "f/two.dcm").sync()
    assert synced[:2] == [str(late.path), str(tmp_path / "f" / "two.dcm")]
    with store.open("f/two.dcm") as fh:
        assert fh.read() == b"first and more"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
def test_a_failed_early_flush_is_left_to_the_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The early flush swallows its failure; the sync flushes again and reports its own, and
    a file that failed it is not left in place."""
    store = FilesystemBlobStore(tmp_path)
    synced = _recording_fsyncs(monkeypatch, fail=1)
    spool = store.spool()
    spool.write(b"data")
    spool.flush()  # fails quietly
    store.place_spool(spool, "ok.dcm").sync()
    assert synced == [str(spool.path), str(tmp_path / "ok.dcm"), str(tmp_path)]
    synced = _recording_fsyncs(monkeypatch, fail=2)
    broken = store.spool()
    broken.write(b"data")
    broken.flush()
    placed = store.place_spool(broken, "bad.dcm")
    with pytest.raises(OSError, match="Input/output error"):
        placed.sync()
    assert not store.exists("bad.dcm")
    assert temporaries(store) == []


def test_a_spool_is_not_closed_under_a_flush_in_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Discarding a spool whose early flush runs on another thread waits for the flush (its
    file descriptor stays valid until then); a flush after the discard does nothing."""
    import threading

    store = FilesystemBlobStore(tmp_path)
    real = os.fsync
    entered, release = threading.Event(), threading.Event()
    events: list[str] = []

    def slow_fsync(fd: int) -> None:
        entered.set()
        release.wait(5)
        real(fd)  # raises EBADF had the descriptor been closed meanwhile
        events.append("flushed")

    monkeypatch.setattr(os, "fsync", slow_fsync)
    spool = store.spool()
    spool.write(b"data")
    flusher = threading.Thread(target=spool.flush)
    flusher.start()
    assert entered.wait(5)
    discarder = threading.Thread(target=lambda: (spool.discard(), events.append("discarded")))
    discarder.start()
    discarder.join(0.2)
    assert discarder.is_alive()  # waiting for the flush
    release.set()
    flusher.join(5)
    discarder.join(5)
    assert events == ["flushed", "discarded"]
    assert temporaries(store) == []
    entered.clear()
    spool.flush()  # discarded: nothing to flush
    assert not entered.is_set()
