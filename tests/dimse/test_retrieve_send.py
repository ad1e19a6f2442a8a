"""C-GET's send path: pending responses with the sub-operations, and stored files that fail."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
)

from dicomgen import make_dataset
from vesalius.dimse import association, services


def _store(server: Any, *datasets: Dataset) -> None:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate(server.host, server.port, ae_title=server.ae_title)
    assert assoc.is_established
    try:
        assert [int(assoc.send_c_store(ds).Status) for ds in datasets] == [0] * len(datasets)
    finally:
        assoc.release()


def _get(
    server: Any, study_uid: str, pdus: list[str] | None = None, into: list[Dataset] | None = None
) -> tuple[list[Dataset], list[str], Any]:
    """C-GET a study: (the statuses, the SOP Instance UIDs received, the association); the
    names of the PDU types received go to *pdus*, the data sets received to *into*."""
    received: list[str] = []
    pdus = [] if pdus is None else pdus

    def on_store(event: Any) -> int:
        received.append(str(event.dataset.SOPInstanceUID))
        if into is not None:
            into.append(event.dataset)
        return 0x0000

    ae = AE(ae_title="TESTSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate(
        server.host,
        server.port,
        ae_title=server.ae_title,
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[
            (evt.EVT_C_STORE, on_store),
            (evt.EVT_PDU_RECV, lambda event: pdus.append(type(event.pdu).__name__)),
        ],
        max_pdu=4096,  # several PDUs per instance
    )
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    statuses = [s for s, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)]
    return statuses, received, assoc


def _record(server: Any, study_uid: str, sop_uid: str) -> Any:
    (record,) = [r for r in server.archive.instances_of(study_uid) if r.sop_instance_uid == sop_uid]
    return record


def _cut(server: Any, study_uid: str, sop_uid: str, keep: int) -> None:
    record = _record(server, study_uid, sop_uid)
    path = server.archive.blobs.local_path(record.blob_key)
    assert path is not None
    with open(path, "r+b") as fh:
        fh.truncate(keep if keep >= 0 else record.size + keep)


def test_pending_responses_arrive_with_the_sub_operations(sqlite_dicom_server: Any) -> None:
    first = make_dataset(rows=64, columns=64)
    others = [
        make_dataset(rows=64, columns=64, StudyInstanceUID=first.StudyInstanceUID) for _ in range(2)
    ]
    _store(sqlite_dicom_server, first, *others)
    statuses, received, assoc = _get(sqlite_dicom_server, first.StudyInstanceUID)
    assoc.release()
    assert [int(s.Status) for s in statuses] == [0xFF00, 0xFF00, 0x0000]
    assert [int(s.NumberOfRemainingSuboperations) for s in statuses[:2]] == [2, 1]
    assert int(statuses[-1].NumberOfCompletedSuboperations) == 3
    assert len(received) == 3


def test_each_next_file_is_read_while_the_requestor_takes_in_the_current_one(
    sqlite_dicom_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    datasets = [make_dataset(rows=64, columns=64)]
    datasets += [
        make_dataset(rows=64, columns=64, StudyInstanceUID=datasets[0].StudyInstanceUID)
        for _ in range(3)
    ]
    _store(sqlite_dicom_server, *datasets)
    read_ahead: list[bool] = []  # whether each read ahead left the next file's PDUs ready
    original = services._GetSender._read_ahead

    def counted(self: Any, record: Any) -> None:
        original(self, record)
        read_ahead.append(self._ready is not None and self._ready[0] is record)

    monkeypatch.setattr(services._GetSender, "_read_ahead", counted)
    received: list[Dataset] = []
    statuses, _uids, assoc = _get(sqlite_dicom_server, datasets[0].StudyInstanceUID, into=received)
    assoc.release()
    assert int(statuses[-1].NumberOfCompletedSuboperations) == 4
    assert read_ahead == [True] * 3  # all but the first, each while the one before was sent
    sent = {str(ds.SOPInstanceUID): ds.PixelData for ds in datasets}
    assert {str(ds.SOPInstanceUID): ds.PixelData for ds in received} == sent


def test_a_file_that_fails_when_read_ahead_fails_only_its_sub_operation(
    sqlite_dicom_server: Any,
) -> None:
    first = make_dataset(rows=64, columns=64)
    middle, last = (
        make_dataset(rows=64, columns=64, StudyInstanceUID=first.StudyInstanceUID) for _ in range(2)
    )
    _store(sqlite_dicom_server, first, middle, last)
    order = [
        r.sop_instance_uid for r in sqlite_dicom_server.archive.instances_of(first.StudyInstanceUID)
    ]
    _cut(sqlite_dicom_server, first.StudyInstanceUID, order[1], -100)
    statuses, received, assoc = _get(sqlite_dicom_server, first.StudyInstanceUID)
    try:
        assert int(statuses[-1].Status) == 0xB000
        assert int(statuses[-1].NumberOfCompletedSuboperations) == 2
        assert int(statuses[-1].NumberOfFailedSuboperations) == 1
        assert received == [order[0], order[2]]
        assert assoc.is_established
    finally:
        assoc.release()


def test_a_prepared_data_set_follows_a_prefix_larger_than_its_headroom() -> None:
    prepared = bytearray(association.HEADROOM) + b"PDUS"
    small = association._before(bytearray(b"cmd"), prepared)
    assert bytes(small) == b"cmdPDUS"
    large = bytearray(b"x" * (association.HEADROOM + 1))
    assert bytes(association._before(large, prepared)) == bytes(large) + b"PDUS"


def test_a_stored_file_shorter_than_indexed_fails_only_its_sub_operation(
    sqlite_dicom_server: Any,
) -> None:
    good = make_dataset(rows=64, columns=64)
    bad = make_dataset(rows=64, columns=64, StudyInstanceUID=good.StudyInstanceUID)
    _store(sqlite_dicom_server, good, bad)
    _cut(sqlite_dicom_server, good.StudyInstanceUID, bad.SOPInstanceUID, -100)
    statuses, received, assoc = _get(sqlite_dicom_server, good.StudyInstanceUID)
    try:
        assert int(statuses[-1].Status) == 0xB000
        assert int(statuses[-1].NumberOfFailedSuboperations) == 1
        assert received == [str(good.SOPInstanceUID)]
        assert assoc.is_established  # nothing of the bad file was sent: the association goes on
    finally:
        assoc.release()


def test_a_stored_file_failing_mid_send_aborts_the_association(
    sqlite_dicom_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Files over SEND_WHOLE go out in several writes; this one fails after the first.
    monkeypatch.setattr(association, "SEND_WHOLE", 2048)
    dataset = make_dataset(rows=64, columns=64)
    _store(sqlite_dicom_server, dataset)
    _cut(sqlite_dicom_server, dataset.StudyInstanceUID, dataset.SOPInstanceUID, -100)
    pdus: list[str] = []
    _statuses, received, assoc = _get(sqlite_dicom_server, dataset.StudyInstanceUID, pdus)
    assoc.join(30)  # its reactor marks it aborted on the A-ABORT it received
    assert assoc.is_aborted
    assert pdus[-1] == "A_ABORT_RQ"  # the server said so (rather than the client timing out)
    assert received == []
    # The server goes on serving.
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(Verification)
    echo = ae.associate(sqlite_dicom_server.host, sqlite_dicom_server.port)
    assert echo.send_c_echo().Status == 0
    echo.release()


@pytest.mark.parametrize("private_meta", [0, 5000])
def test_dataset_offset_is_the_end_of_the_meta_group(tmp_path: Any, private_meta: int) -> None:
    """The data set is found after the meta group however long that group is."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    from vesalius.dimse.services import dataset_offset

    dataset = make_dataset()
    dataset.file_meta.PrivateInformationCreatorUID = "1.2.3.4"
    if private_meta:
        dataset.file_meta.PrivateInformation = b"x" * private_meta
    path = tmp_path / "one.dcm"
    dataset.save_as(path, enforce_file_format=True)
    with open(path, "rb") as fh:
        read_preamble(fh, False)
        _read_file_meta_info(fh)
        expected = fh.tell()
        fh.seek(0)
        assert dataset_offset(fh) == expected
