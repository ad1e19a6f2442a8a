"""Page-cache hints: the newest written files stay in memory up to the budget, older ones are
dropped from it (not from disk), and a file about to be sent is read ahead.

Residency is read from the kernel itself (``mincore(2)`` on a mapping of the file).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from dicomgen import make_dataset, to_bytes, write
from serveproc import serve
from vesalius.config import ConfigError, load_settings
from vesalius.container import build
from vesalius.storage.filesystem import FilesystemBlobStore

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long,
]  # fmt: skip
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_PAGE = mmap.PAGESIZE
SIZE = 256 * 1024  # 64 pages per file
DCMTK = Path("/usr/bin")


def resident(path: Path) -> int:
    """How many of the file's pages are in the page cache now."""
    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    try:
        address = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if address in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap failed")
        try:
            pages = (size + _PAGE - 1) // _PAGE
            vector = ctypes.create_string_buffer(pages)
            if _libc.mincore(address, size, vector) != 0:
                raise OSError(ctypes.get_errno(), "mincore failed")
            return sum(byte & 1 for byte in vector.raw)
        finally:
            _libc.munmap(address, size)
    finally:
        os.close(fd)


def pages(size: int = SIZE) -> int:
    return size // _PAGE


def store_files(store: FilesystemBlobStore, count: int) -> list[Path]:
    paths = []
    for number in range(count):
        key = f"f/{number}.bin"
        if number % 2:
            store.put(key, [os.urandom(SIZE // 2), os.urandom(SIZE // 2)])
        else:
            with store.spool() as spool:
                spool.write(os.urandom(SIZE))
                store.place_spool(spool, key).sync()
        paths.append(store.root / key)
    return paths


@pytest.fixture(autouse=True)
def _drops_pages_here(tmp_path: Path) -> None:
    """tmpfs keeps every page (they are the storage): the hints cannot show there."""
    path = tmp_path / "probe.bin"
    with path.open("wb") as fh:
        fh.write(os.urandom(SIZE))
        fh.flush()
        os.fsync(fh.fileno())
        os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    if resident(path) != 0:
        pytest.skip(f"{tmp_path} is on a filesystem that keeps dropped pages (tmpfs?)")


def test_the_newest_files_stay_in_memory_up_to_the_budget(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path / "s", write_cache_bytes=3 * SIZE)
    paths = store_files(store, 5)
    assert [resident(p) for p in paths] == [0, 0, pages(), pages(), pages()]
    assert store.recent.held == 3 * SIZE
    # Dropped from memory only: every file reads back whole, from the disk.
    for path in paths:
        assert len(path.read_bytes()) == SIZE


def test_a_budget_of_zero_drops_each_file_and_none_keeps_all(tmp_path: Path) -> None:
    dropping = FilesystemBlobStore(tmp_path / "zero", write_cache_bytes=0)
    assert [resident(p) for p in store_files(dropping, 2)] == [0, 0]
    keeping = FilesystemBlobStore(tmp_path / "all", write_cache_bytes=None)
    assert [resident(p) for p in store_files(keeping, 3)] == [pages()] * 3


def test_a_file_removed_before_it_is_dropped_is_no_error(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path / "s", write_cache_bytes=SIZE)
    first, _ = store_files(store, 2)  # the first was dropped already; remove the second
    store.delete("f/1.bin")
    third = store_files(FilesystemBlobStore(tmp_path / "other"), 1)[0]
    store.recent.add(third, SIZE)  # evicts the removed file's entry
    assert resident(first) == 0 and resident(third) == pages()


def test_prefetch_reads_a_file_ahead(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path / "s", write_cache_bytes=0)
    (path,) = store_files(store, 1)
    assert resident(path) == 0
    store.prefetch("f/0.bin")
    store.prefetch("f/missing.bin")  # a hint: a missing file is for the read to report
    deadline = time.monotonic() + 10
    while resident(path) < pages() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert resident(path) == pages()


def test_the_setting_reaches_the_archive(make_settings: Any) -> None:
    container = build(make_settings(storage_write_cache_mb=0), migrate=True)
    try:
        ds = make_dataset(rows=256, columns=256)
        data = to_bytes(ds)
        container.archive.store(data)
        (record,) = container.archive.instances_of(ds.StudyInstanceUID)
        path = container.blobs.local_path(record.blob_key)
        assert path is not None and resident(path) == 0
        with container.archive.open(record) as fh:
            assert fh.read() == data
    finally:
        container.close()
    assert make_settings().storage_write_cache_mb == 256


@pytest.mark.parametrize(
    ("value", "message"),
    [("-1", "greater than or equal to 0"), ("lots", "valid integer"), ("1.5", "integer")],
)
def test_a_bad_budget_is_refused_naming_the_setting(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        load_settings(env={"VESALIUS_STORAGE_WRITE_CACHE_MB": value})
    assert "storage_write_cache_mb" in str(refused.value)


@pytest.mark.skipif(not (DCMTK / "storescu").exists(), reason="DCMTK is not installed")
def test_a_served_archive_keeps_only_its_newest_files_in_memory(tmp_path: Path) -> None:
    """`vesalius serve` with a 1 MiB budget, fed by DCMTK's storescu: of four 512 KB images
    only the newest stays in memory, and getscu gets all four back byte for byte."""
    sent = []
    for number in range(4):
        ds = make_dataset(rows=512, columns=512, InstanceNumber=number + 1)
        if sent:
            ds.StudyInstanceUID = sent[0].StudyInstanceUID
            ds.SeriesInstanceUID = sent[0].SeriesInstanceUID
        sent.append(ds)
    paths = [write(tmp_path / "in", ds, f"{number}.dcm") for number, ds in enumerate(sent)]
    served = serve(
        {
            "VESALIUS_DATA_DIR": str(tmp_path / "data"),
            "VESALIUS_DICOM_HOST": "127.0.0.1",
            "VESALIUS_DICOM_PORT": "0",
            "VESALIUS_HTTP_PORT": "0",
            "VESALIUS_STORAGE_WRITE_CACHE_MB": "1",
            "VESALIUS_REMOTE_AE": '[{name="getter", ae_title="GETSCU", role="admin"}]',
        }
    )
    try:
        address = ["-aec", "VESALIUS", "127.0.0.1", str(served.dicom_port)]
        for path in paths:  # one association each: stored in this order
            stored = subprocess.run(
                [str(DCMTK / "storescu"), *address, str(path)],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert stored.returncode == 0, stored.stdout + stored.stderr
        blobs = {p.name.split(".dcm")[0].rsplit(".", 1)[0]: p
                 for p in (tmp_path / "data" / "storage" / "dicom").rglob("*.dcm")}  # fmt: skip
        in_order = [blobs[str(ds.SOPInstanceUID)] for ds in sent]
        assert [resident(p) for p in in_order[:3]] == [0, 0, 0]
        assert resident(in_order[3]) == pages(in_order[3].stat().st_size + _PAGE - 1)

        out = tmp_path / "out"
        out.mkdir()
        got = subprocess.run(
            [str(DCMTK / "getscu"), "-S", "-od", str(out), *address,
             "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={sent[0].StudyInstanceUID}"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert got.returncode == 0, got.stdout + got.stderr
        received = {dcmread(p).SOPInstanceUID: dcmread(p).PixelData for p in out.iterdir()}
        assert received == {ds.SOPInstanceUID: ds.PixelData for ds in sent}
    finally:
        served.stop()
