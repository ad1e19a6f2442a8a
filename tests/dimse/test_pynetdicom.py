"""The DIMSE server with pynetdicom as a second client: contexts, transcoding, bad input."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
)

from dicomgen import make_dataset, uid
from vesalius.config import RemoteAE


def client(ae_title: str = "TESTSCU") -> AE:
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    return ae


def store(server: Any, *datasets: Dataset) -> list[int]:
    ae = client()
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(CTImageStorage, RLELossless)
    assoc = ae.associate(server.host, server.port, ae_title=server.ae_title)
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def find(
    server: Any, identifier: Dataset, model: str = StudyRootQueryRetrieveInformationModelFind
) -> list[Any]:
    ae = client()
    ae.add_requested_context(model)
    assoc = ae.associate(server.host, server.port, ae_title=server.ae_title)
    try:
        return list(assoc.send_c_find(identifier, model))
    finally:
        assoc.release()


def test_get_converts_for_a_peer_that_takes_only_implicit_vr(sqlite_dicom_server: Any) -> None:
    rle = make_dataset(rows=32, columns=32)
    rle.compress(RLELossless, generate_instance_uid=False)
    plain = make_dataset(StudyInstanceUID=rle.StudyInstanceUID)
    assert store(sqlite_dicom_server, rle, plain) == [0, 0]

    received: list[tuple[str, Dataset]] = []

    def on_store(event: Any) -> int:
        received.append((event.context.transfer_syntax, event.dataset))
        return 0x0000

    ae = client()
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage, [ImplicitVRLittleEndian])
    role = build_role(CTImageStorage, scp_role=True)
    assoc = ae.associate(
        sqlite_dicom_server.host,
        sqlite_dicom_server.port,
        ae_title=sqlite_dicom_server.ae_title,
        ext_neg=[role],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = rle.StudyInstanceUID
    statuses = [
        int(s.Status) for s, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)
    ]
    assoc.release()
    assert statuses[-1] == 0x0000
    assert sorted(str(ds.SOPInstanceUID) for _, ds in received) == sorted(
        [str(rle.SOPInstanceUID), str(plain.SOPInstanceUID)]
    )
    for syntax, ds in received:
        assert syntax == ImplicitVRLittleEndian
        original = rle if ds.SOPInstanceUID == rle.SOPInstanceUID else plain
        ds.file_meta = Dataset()
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        assert ds.pixel_array.tolist() == original.pixel_array.tolist()


def test_every_dicom_socket_has_nodelay(sqlite_dicom_server: Any) -> None:
    ae = client()
    ae.add_requested_context(Verification)
    assoc = ae.associate(sqlite_dicom_server.host, sqlite_dicom_server.port)
    try:
        assert assoc.send_c_echo().Status == 0
        import gc

        from vesalius.dimse.listener import Listener

        listeners = [o for o in gc.get_objects() if isinstance(o, Listener)]
        accepted = [a for listener in listeners for a in listener.associations]
        assert accepted, "the server side of the association is not visible"
        for server_assoc in accepted:
            sock = server_assoc.writer.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        assoc.release()


def test_dataset_without_study_uid_gets_a_failure_status(sqlite_dicom_server: Any) -> None:
    bad = make_dataset()
    del bad.StudyInstanceUID
    good = make_dataset()
    statuses = store(sqlite_dicom_server, bad, good)
    assert statuses[0] == 0xC000
    assert statuses[1] == 0x0000
    assert sqlite_dicom_server.archive.totals().instances == 1


def test_unknown_sop_class_is_not_accepted_and_the_server_goes_on(sqlite_dicom_server: Any) -> None:
    ae = client()
    ae.add_requested_context("1.2.3.4.5.6.7.8.9")
    assoc = ae.associate(sqlite_dicom_server.host, sqlite_dicom_server.port)
    assert not assoc.is_established or not assoc.accepted_contexts
    if assoc.is_established:
        assoc.release()
    ae = client()
    ae.add_requested_context(Verification)
    assoc = ae.associate(sqlite_dicom_server.host, sqlite_dicom_server.port)
    assert assoc.send_c_echo().Status == 0
    assoc.release()


def test_bad_query_level_and_values_get_a_failure_status(sqlite_dicom_server: Any) -> None:
    query = Dataset()
    query.QueryRetrieveLevel = "GALAXY"
    [(status, _)] = find(sqlite_dicom_server, query)
    assert status.Status == 0xC001
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyDate = "2020-13-99x"
    [(status, _)] = find(sqlite_dicom_server, query)
    assert status.Status == 0xC001
    assert "StudyDate" in str(status.get("ErrorComment", ""))


def test_patient_root_find_answers_with_requested_keys_only(sqlite_dicom_server: Any) -> None:
    store(sqlite_dicom_server, make_dataset(PatientID="X1", PatientName="ÅNGSTRÖM^ÉVA"))
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientName = "angstrom*"
    query.PatientID = ""
    query.NumberOfPatientRelatedStudies = None
    responses = [
        r
        for s, r in find(sqlite_dicom_server, query, PatientRootQueryRetrieveInformationModelFind)
        if s.Status == 0xFF00
    ]
    assert len(responses) == 1
    answer = responses[0]
    assert str(answer.PatientName) == "ÅNGSTRÖM^ÉVA"
    assert answer.PatientID == "X1"
    assert answer.NumberOfPatientRelatedStudies == 1
    assert "StudyInstanceUID" not in answer


def test_concurrent_associations_into_one_study(dicom_server: Any) -> None:
    study, series = uid(), uid()
    datasets = [
        make_dataset(
            StudyInstanceUID=study, SeriesInstanceUID=series if i % 2 else uid(), PatientID="SAME"
        )
        for i in range(24)
    ]
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def worker(chunk: list[Dataset]) -> None:
        try:
            results.append(store(dicom_server, *chunk))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(datasets[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(s for r in results for s in r) == [0] * 24
    totals = dicom_server.archive.totals()
    assert (totals.patients, totals.studies, totals.instances) == (1, 1, 24)
    assert totals.series == 13


def test_unknown_calling_ae_refused_when_configured(make_settings: Any) -> None:
    from vesalius.container import build
    from vesalius.dimse.server import DicomServer

    settings = make_settings(
        accept_unknown_aes=False,
        remote_ae=[RemoteAE(name="known", ae_title="KNOWN", host="127.0.0.1", port=104)],
    )
    container = build(settings, migrate=True)
    server = DicomServer(settings, container.archive)
    host, port = server.start()
    try:
        for title, expected in (("STRANGER", False), ("KNOWN", True)):
            ae = client(title)
            ae.add_requested_context(Verification)
            assoc = ae.associate(host, port, ae_title="VESALIUS")
            assert assoc.is_established is expected, title
            if assoc.is_established:
                assoc.release()
    finally:
        server.stop()
        container.close()


@pytest.mark.parametrize("level", ["PATIENT", "STUDY"])
def test_cancelled_or_empty_queries_end_cleanly(sqlite_dicom_server: Any, level: str) -> None:
    query = Dataset()
    query.QueryRetrieveLevel = level
    query.PatientID = "NOBODY"
    model = PatientRootQueryRetrieveInformationModelFind
    responses = find(sqlite_dicom_server, query, model)
    assert [int(s.Status) for s, _ in responses] == [0x0000]
