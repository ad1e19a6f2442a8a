"""A power cut under ``sqlite_synchronous = normal``: nothing acknowledged is lost.

A power cut cannot be pulled here, so its effect on the disk is reproduced: the index files
are put back as they were at the last recorded flush of the index log (what a power cut may
leave of a log flushed only in the background), while the stored files, fsync'd before their
rows committed, stay. The next `serve` must find and index every acknowledged instance again.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from dicomgen import make_dataset, make_file
from serveproc import serve
from vesalius.config import load_settings
from vesalius.container import build
from vesalius.index import imaging

INDEX_FILES = ("index.sqlite", "index.sqlite-wal", "index.sqlite.flushed")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "VESALIUS_DATA_DIR": str(tmp_path / "data"),
        "VESALIUS_DICOM_PORT": "0",
        "VESALIUS_HTTP_PORT": "0",
        "VESALIUS_DICOM_HOST": "127.0.0.1",
        "VESALIUS_INDEX_FLUSH_INTERVAL_S": "0.2",
        "VESALIUS_JOBS_ENABLED": "false",  # nothing but the stores writes to the index
    }


def c_store(port: int, count: int, study: str) -> list[str]:
    """Store *count* small instances of one study; the SOP Instance UIDs acknowledged."""
    ae = AE(ae_title="POWERCUT")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="VESALIUS")
    assert assoc.is_established
    acknowledged = []
    try:
        for _ in range(count):
            ds = make_dataset(rows=32, columns=32, StudyInstanceUID=study)
            status = assoc.send_c_store(ds)
            assert status.Status == 0x0000
            acknowledged.append(str(ds.SOPInstanceUID))
    finally:
        assoc.release()
    return acknowledged


def indexed(env: dict[str, str], uids: list[str]) -> set[str]:
    container = build(load_settings(env=env), migrate=True, load_plugins=False)
    try:
        with container.db.read() as session:
            return {uid for uid in uids if imaging.get_instance(session, uid) is not None}
    finally:
        container.close()


def start_and_stop(env: dict[str, str]) -> str:
    """Start `serve` (which mends the index before it serves) and stop it cleanly; its log."""
    served = serve(env)
    try:
        return "".join(served.lines)
    finally:
        assert served.stop() == 0


def test_instances_acknowledged_after_the_last_flush_survive_a_power_cut(
    env: dict[str, str], tmp_path: Path
) -> None:
    data, snapshot = Path(env["VESALIUS_DATA_DIR"]), tmp_path / "at-last-flush"
    served = serve(env)
    try:
        before = c_store(served.dicom_port, 5, "1.2.826.0.1.3680043.10.1.1")
        time.sleep(1.0)  # flushed and recorded in the background since
        snapshot.mkdir()
        for name in INDEX_FILES:
            shutil.copy2(data / name, snapshot / name)
        after = c_store(served.dicom_port, 7, "1.2.826.0.1.3680043.10.1.2")
        served.kill()  # no clean stop: nothing is flushed or recorded on the way out
    finally:
        served.stop()
    assert indexed(env, before + after) == set(before + after)  # a process kill loses nothing

    # The power cut: the index as it was at its last recorded flush; the files stay.
    for name in (*INDEX_FILES, "index.sqlite-shm"):
        (data / name).unlink(missing_ok=True)
    for name in INDEX_FILES:
        shutil.copy2(snapshot / name, data / name)
    assert indexed(env, before + after) == set(before)

    log = start_and_stop(env)
    assert "re-indexed 7 instance(s)" in log, log
    assert indexed(env, before + after) == set(before + after)


def test_rows_whose_file_did_not_reach_the_disk_are_removed_at_start(
    env: dict[str, str],
) -> None:
    """Rows commit while their file is flushed, so a power cut may keep the rows of a file
    the disk never got (its sender was not answered). The next `serve` removes them, and the
    short file with them; the other instances stay."""
    served = serve(env)
    try:
        uids = c_store(served.dicom_port, 6, "1.2.826.0.1.3680043.10.1.3")
    finally:
        assert served.stop() == 0
    container = build(load_settings(env=env), migrate=True, load_plugins=False)
    try:
        with container.db.read() as session:
            records = [imaging.get_instance(session, uid) for uid in uids]
        paths = [container.blobs.local_path(r.blob_key) for r in records if r is not None]
    finally:
        container.close()
    assert len(paths) == 6 and all(p is not None and p.exists() for p in paths)
    # What a power cut leaves of two files whose flush had not ended: none, and a short one.
    paths[1].unlink()
    with paths[4].open("r+b") as fh:
        fh.truncate(paths[4].stat().st_size // 2)

    log = start_and_stop(env)
    assert "removed the rows of 2 instance(s)" in log, log
    assert indexed(env, uids) == {uids[0], uids[2], uids[3], uids[5]}
    assert not paths[4].exists()  # not indexed again as an orphan
    assert all(paths[i].exists() for i in (0, 2, 3, 5))


def test_every_other_write_is_flushed_at_its_commit(env: dict[str, str]) -> None:
    """Only the store pipeline waits for the background flush: a deletion is on the disk when
    it returns, so a power cut cannot bring back rows whose files are gone."""
    container = build(load_settings(env=env), migrate=True, load_plugins=False)
    try:
        index_log = container.db.log
        assert index_log is not None
        outcome = container.archive.store(make_file(rows=16, columns=16))
        assert index_log.unflushed == 1  # the store's rows wait for the background flush
        assert container.archive.delete(outcome.study_instance_uid) == 1
        assert index_log.unflushed == 0  # the deletion did not
    finally:
        container.close()


def test_processes_sharing_the_index_record_their_flushes_without_a_clash(
    tmp_path: Path,
) -> None:
    """The workers of `serve` each flush the one log and record it in the same mark file."""
    from vesalius.index.durability import IndexLog

    database = tmp_path / "index.sqlite"
    (tmp_path / "index.sqlite-wal").write_bytes(b"log")
    logs = [IndexLog(database) for _ in range(4)]
    errors: list[BaseException] = []

    def record(index_log: IndexLog) -> None:
        try:
            for _ in range(300):
                index_log.flush()
        except BaseException as exc:  # collected: an exception in a thread fails nothing
            errors.append(exc)

    threads = [threading.Thread(target=record, args=(log,)) for log in logs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert logs[0].flushed_at() is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "index.sqlite-wal",
        "index.sqlite.flushed",
    ]
