"""Storing instances: durability, duplicates, failures that leave nothing behind."""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import blake3
import pytest
from sqlalchemy import func, select

from dicomgen import make_dataset, make_file, to_bytes, uid
from vesalius.archive.inline import await_steps
from vesalius.archive.service import StoreStatus
from vesalius.config import DuplicatePolicy
from vesalius.container import Container
from vesalius.errors import InvalidInstance
from vesalius.index import imaging
from vesalius.index.models import Instance, Patient, Series, Study
from vesalius.storage.spool import Spool


def count(container: Container, model: type) -> int:
    with container.db.read() as session:
        return int(session.execute(select(func.count()).select_from(model)).scalar_one())


def blob_files(container: Container) -> list[str]:
    return [k for k in container.blobs.iter_keys() if k.startswith("dicom/")]


def test_store_keeps_the_file_byte_for_byte_and_indexes_it(container: Container) -> None:
    data = make_file(PatientID="P1", PatientName="DOE^JANE")
    outcome = container.archive.store(data, origin="test")
    assert outcome.status is StoreStatus.STORED
    [record] = container.archive.instances_of(outcome.study_instance_uid)
    with container.archive.open(record) as fh:
        assert fh.read() == data
    assert record.digest == f"blake3:{blake3.blake3(data).hexdigest()}"
    assert record.size == len(data)
    assert (count(container, Patient), count(container, Study)) == (1, 1)
    assert (count(container, Series), count(container, Instance)) == (1, 1)


def test_counters_follow_the_hierarchy(container: Container) -> None:
    study, series_a, series_b = uid(), uid(), uid()
    for series, modality, n in ((series_a, "CT", 3), (series_b, "MR", 2)):
        for i in range(n):
            container.archive.store(
                make_file(
                    PatientID="P1",
                    StudyInstanceUID=study,
                    SeriesInstanceUID=series,
                    Modality=modality,
                    InstanceNumber=i,
                )
            )
    container.archive.store(make_file(PatientID="P1"))  # a second study of the same patient
    with container.db.read() as session:
        patient = session.execute(select(Patient)).scalar_one()
        assert (patient.num_studies, patient.num_series, patient.num_instances) == (2, 3, 6)
        row = session.execute(select(Study).where(Study.study_instance_uid == study)).scalar_one()
        assert (row.num_series, row.num_instances) == (2, 5)
        assert row.modalities_in_study == "CT\\MR"


def test_identical_resend_is_not_duplicated(container: Container) -> None:
    data = make_file()
    assert container.archive.store(data).status is StoreStatus.STORED
    assert container.archive.store(data).status is StoreStatus.DUPLICATE
    assert count(container, Instance) == 1
    assert len(blob_files(container)) == 1


def test_a_resend_is_compared_with_a_row_of_the_sha256_days(container: Container) -> None:
    """Rows indexed before revision 0009 hold a SHA-256: an identical re-send is still a
    duplicate (the stored file is hashed again), a changed one still a change."""
    container.settings.duplicate_policy = DuplicatePolicy.REPLACE
    ds = make_dataset(SeriesDescription="first")
    first = to_bytes(ds)
    assert container.archive.store(first).status is StoreStatus.STORED
    with container.db.write() as session:
        session.execute(
            Instance.__table__.update().values(digest=f"sha256:{hashlib.sha256(first).hexdigest()}")
        )
    assert container.archive.store(first).status is StoreStatus.DUPLICATE
    assert len(blob_files(container)) == 1
    ds.SeriesDescription = "second"
    assert container.archive.store(to_bytes(ds)).status is StoreStatus.REPLACED
    [record] = container.archive.instances_of(str(ds.StudyInstanceUID))
    assert record.digest.startswith("blake3:")


def test_changed_resend_keeps_the_first_by_default(container: Container) -> None:
    ds = make_dataset(StudyDescription="first")
    first = to_bytes(ds)
    ds.StudyDescription = "second"
    assert container.archive.store(first).status is StoreStatus.STORED
    assert container.archive.store(to_bytes(ds)).status is StoreStatus.KEPT_FIRST
    [record] = container.archive.instances_of(str(ds.StudyInstanceUID))
    with container.archive.open(record) as fh:
        assert fh.read() == first
    assert len(blob_files(container)) == 1


def test_changed_resend_replaces_when_configured(container: Container) -> None:
    container.settings.duplicate_policy = DuplicatePolicy.REPLACE
    ds = make_dataset(SeriesDescription="first")
    container.archive.store(to_bytes(ds))
    ds.SeriesDescription = "second"
    second = to_bytes(ds)
    assert container.archive.store(second).status is StoreStatus.REPLACED
    [record] = container.archive.instances_of(str(ds.StudyInstanceUID))
    with container.archive.open(record) as fh:
        assert fh.read() == second
    assert blob_files(container) == [record.blob_key]  # the old file is gone
    assert count(container, Instance) == 1


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda ds: delattr(ds, "SOPInstanceUID"), "SOPInstanceUID is missing"),
        (lambda ds: delattr(ds, "StudyInstanceUID"), "StudyInstanceUID is missing"),
        (lambda ds: setattr(ds, "SeriesInstanceUID", ""), "SeriesInstanceUID is missing"),
        (lambda ds: setattr(ds, "StudyInstanceUID", "not a uid!"), "is not a valid UID"),
    ],
)
def test_missing_or_bad_uids_are_refused(container: Container, mutate, reason: str) -> None:  # type: ignore[no-untyped-def]
    ds = make_dataset()
    mutate(ds)
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3"
    with pytest.raises(InvalidInstance, match=reason):
        container.archive.store(to_bytes(ds))
    assert count(container, Instance) == 0
    assert blob_files(container) == []


def test_truncated_and_garbage_files_are_refused(sqlite_container: Container) -> None:
    data = make_file(rows=64, columns=64)
    for broken, reason in (
        (data[:-100], "truncated"),
        (data[:400], "truncated"),
        (b"this is not DICOM at all" * 10, "not a readable DICOM file"),
        (b"", "not a readable DICOM file"),
    ):
        with pytest.raises(InvalidInstance, match=reason):
            sqlite_container.archive.store(broken)
    assert count(sqlite_container, Instance) == 0
    assert blob_files(sqlite_container) == []


def test_element_longer_than_the_file_is_refused(sqlite_container: Container) -> None:
    data = bytearray(make_file())
    # The pixel data element header: (7FE0,0010) OW 0000 <length>; declare 2 GiB.
    at = data.rfind(b"\xe0\x7f\x10\x00OW")
    data[at + 8 : at + 12] = (0x7FFFFFF0).to_bytes(4, "little")
    with pytest.raises(InvalidInstance, match="truncated"):
        sqlite_container.archive.store(bytes(data))
    assert blob_files(sqlite_container) == []


def test_overlong_values_are_kept_whole_in_metadata(container: Container) -> None:
    description = "D" * 500  # far over LO's 64 characters
    outcome = container.archive.store(make_file(StudyDescription=description))
    with container.db.read() as session:
        study = session.execute(select(Study)).scalar_one()
    assert study.study_description == "D" * 64
    assert description in study.attributes
    assert outcome.status is StoreStatus.STORED


def test_failed_index_write_leaves_no_file(
    sqlite_container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_index(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("index write failed")

    monkeypatch.setattr(imaging, "add_instance", broken_index)
    with pytest.raises(RuntimeError):
        sqlite_container.archive.store(make_file())
    assert blob_files(sqlite_container) == []
    assert count(sqlite_container, Instance) == 0
    assert count(sqlite_container, Patient) == 0


def _spooled(container: Container, data: bytes) -> Spool:
    spool = container.blobs.spool()
    spool.write(data)
    return spool


def test_a_store_from_an_event_loop_flushes_on_a_thread(container: Container) -> None:
    data = make_file(PatientID="P1")
    flushed_on: list[str] = []

    async def offload(step: Callable[[], Any]) -> Any:
        def run() -> Any:
            flushed_on.append(threading.current_thread().name)
            return step()

        return await asyncio.to_thread(run)

    steps = container.archive.store_steps(_spooled(container, data), "test")
    outcome = asyncio.run(await_steps(steps, offload))
    assert outcome.status is StoreStatus.STORED
    assert flushed_on and flushed_on != [threading.current_thread().name]
    [record] = container.archive.instances_of(outcome.study_instance_uid)
    with container.archive.open(record) as fh:
        assert fh.read() == data
    assert list(container.blobs.temp_dir.iterdir()) == []


def test_a_failed_flush_leaves_no_file_and_no_row(sqlite_container: Container) -> None:
    async def disk_gone(step: Callable[[], Any]) -> Any:
        raise OSError(5, "Input/output error")

    spool = _spooled(sqlite_container, make_file())
    with pytest.raises(OSError, match="Input/output"):
        asyncio.run(await_steps(sqlite_container.archive.store_steps(spool), disk_gone))
    assert blob_files(sqlite_container) == []
    assert list(sqlite_container.blobs.temp_dir.iterdir()) == []
    # Its rows had committed meanwhile (see the next test) and were taken back.
    assert count(sqlite_container, Instance) == count(sqlite_container, Study) == 0


def test_files_go_to_one_of_256_folders_of_their_hour(sqlite_container: Container) -> None:
    """A study's files of one hour share a folder, and studies share the hour's 256 folders
    (no new folder per study): ``dicom/YYYY/MM/DD/HH/xx/<SOP Instance UID>.<random>.dcm``."""
    by_folder: dict[str, str] = {}
    while True:  # two studies whose folder is the same one of the 256
        study = uid()
        folder = hashlib.sha1(study.encode()).hexdigest()[:2]
        if folder in by_folder:
            break
        by_folder[folder] = study
    studies = [by_folder[folder], by_folder[folder], study]
    stored = [sqlite_container.archive.store(make_file(StudyInstanceUID=s)) for s in studies]
    with sqlite_container.db.read() as session:
        keys = [imaging.get_instance(session, o.sop_instance_uid).blob_key for o in stored]
    pattern = re.compile(r"dicom/\d{4}/\d{2}/\d{2}/\d{2}/([0-9a-f]{2})/([0-9.]+)\.[0-9a-f]{8}\.dcm")
    for key, outcome in zip(keys, stored, strict=True):
        match = pattern.fullmatch(key)
        assert match is not None, key
        assert (match[1], match[2]) == (folder, outcome.sop_instance_uid)


def test_the_rows_commit_while_the_file_is_flushed(container: Container) -> None:
    """With the embedded index (commits reach the disk in the background) the rows commit
    while the file is flushed; with a server database (each commit is durable at once) only
    after it, so that no durable row ever names a file the disk may not have."""
    indexed_meanwhile: list[int] = []
    overlaps = container.db.log is not None
    patience = 5.0 if overlaps else 0.3  # how long the flush waits for the rows to appear

    def slow_flush(step: Callable[[], Any]) -> Any:
        if step.__name__ != "sync":  # the spool's early flush (Spool.flush): not the barrier
            return step()
        deadline = time.monotonic() + patience
        while count(container, Instance) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        indexed_meanwhile.append(count(container, Instance))
        return step()

    async def flush(step: Callable[[], Any]) -> Any:
        return await asyncio.to_thread(slow_flush, step)

    spool = _spooled(container, make_file())
    outcome = asyncio.run(await_steps(container.archive.store_steps(spool), flush))
    assert outcome.status is StoreStatus.STORED
    assert indexed_meanwhile == [1 if overlaps else 0]
    assert count(container, Instance) == 1
    assert len(blob_files(container)) == 1


@pytest.mark.parametrize("early", [False, True])
def test_an_early_flush_is_started_before_the_parse(container: Container, early: bool) -> None:
    """With *flush_early* the data's flush is handed over first, while nothing is indexed
    yet, and the stored file is whole either way."""
    handed: list[tuple[str, int]] = []

    def offload(step: Callable[[], Any]) -> asyncio.Future[Any]:  # started at once
        handed.append((step.__name__, count(container, Instance)))
        return asyncio.get_running_loop().run_in_executor(None, step)

    data = make_file()
    spool = _spooled(container, data)
    steps = container.archive.store_steps(spool, flush_early=early)
    outcome = asyncio.run(await_steps(steps, offload))
    assert outcome.status is StoreStatus.STORED
    assert handed == ([("flush", 0)] if early else []) + [("sync", 0)]
    (key,) = blob_files(container)
    with container.blobs.open(key) as fh:
        assert fh.read() == data


def test_delete_study_series_instance(container: Container) -> None:
    study, series = uid(), uid()
    outcomes = [
        container.archive.store(make_file(StudyInstanceUID=study, SeriesInstanceUID=series))
        for _ in range(3)
    ]
    other = container.archive.store(make_file(StudyInstanceUID=study))
    assert container.archive.delete(study, series, outcomes[0].sop_instance_uid) == 1
    with container.db.read() as session:
        row = session.execute(select(Study)).scalar_one()
        assert (row.num_series, row.num_instances) == (2, 3)
    assert container.archive.delete(study, other.series_instance_uid) == 1
    assert container.archive.delete(study) == 2
    assert count(container, Patient) == count(container, Study) == count(container, Instance) == 0
    assert blob_files(container) == []


def test_reindex_rebuilds_the_same_index(container: Container) -> None:
    from vesalius.index import imaging

    study = uid()
    for i in range(4):
        container.archive.store(make_file(StudyInstanceUID=study, InstanceNumber=i))
    container.archive.store(make_file(PatientID="OTHER", Modality="MR"))
    with container.db.read() as session:
        before = imaging.snapshot(session)
    indexed, rejected = container.archive.reindex()
    assert (indexed, rejected) == (5, [])
    with container.db.read() as session:
        assert imaging.snapshot(session) == before
