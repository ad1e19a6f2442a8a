"""Storage commitment (PS3.4 J) with pynetdicom as the modality: the report on the same
association, and on a new association to the modality's own SCP once it has released; with
instances present and missing; the studies of a fully committed request declared complete.

DCMTK has no storage commitment SCU (dcm4che's stgcmtscu is Java), so pynetdicom is the peer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, StorageCommitmentPushModel

from dicomgen import make_dataset
from ports import free_port
from vesalius.config import RemoteAE
from vesalius.dimse.commitment import WELL_KNOWN_INSTANCE
from vesalius.index import changes
from vesalius.jobs.runner import JobRunner

MODALITY = "MODALITY1"


def modality_ae() -> AE:
    ae = AE(ae_title=MODALITY)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    return ae


def wait_for(condition: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def store(server: Any, *datasets: Dataset) -> None:
    ae = modality_ae()
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate(server.host, server.port, ae_title=server.ae_title)
    assert assoc.is_established
    try:
        assert [int(assoc.send_c_store(ds).Status) for ds in datasets] == [0] * len(datasets)
    finally:
        assoc.release()


def request(transaction: str, datasets: list[Dataset], extra: list[tuple[str, str]]) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = transaction
    items = []
    for sop_class, sop_uid in [(d.SOPClassUID, d.SOPInstanceUID) for d in datasets] + extra:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_uid
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


def modality_scp(port: int, on_report: Any) -> Any:
    """The modality's own SCP, which takes reports on new associations (the archive proposes
    the SCP role of the SOP class); returns the running server."""
    scp = modality_ae()
    scp.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
    return scp.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)]
    )


def uids(sequence: Any) -> list[str]:
    return [str(item.ReferencedSOPInstanceUID) for item in sequence or []]


@pytest.fixture
def modality_server(sqlite_container: Any) -> Iterator[Any]:
    """The archive with the modality listed (a role to store, and its own SCP's address)."""
    from vesalius.dimse.server import DicomServer

    container = sqlite_container
    port = free_port()
    container.settings.remote_ae = [
        RemoteAE(name="modality", ae_title=MODALITY, host="127.0.0.1", port=port, role="admin")
    ]
    server = DicomServer(container.settings, container.archive, container.audit, container.auth)
    host, dicom_port = server.start()
    try:
        # What conftest's RunningDicom holds; not imported from it: under xdist another
        # folder's conftest may be the module named `conftest` by the time this runs.
        running = SimpleNamespace(
            host=host, port=dicom_port, ae_title=container.settings.ae_title, container=container
        )
        yield running, port
    finally:
        server.stop()


def test_report_on_the_same_association(modality_server: Any) -> None:
    server, _ = modality_server
    first = make_dataset()
    second = make_dataset(StudyInstanceUID=first.StudyInstanceUID)
    store(server, first, second)
    reports: list[tuple[int, Dataset]] = []
    got = threading.Event()

    def on_report(event: Any) -> tuple[int, None]:
        reports.append((event.event_type, event.event_information))
        got.set()
        return 0x0000, None

    ae = modality_ae()
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate(
        server.host,
        server.port,
        ae_title=server.ae_title,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)],
    )
    assert assoc.is_established
    missing_uid = generate_uid()
    try:
        # All present: event type 1, and the study is declared complete at once.
        status, _ = assoc.send_n_action(
            request("1.2.3.100", [first, second], []),
            1,
            StorageCommitmentPushModel,
            WELL_KNOWN_INSTANCE,
        )
        assert status.Status == 0x0000
        assert got.wait(30)
        event_type, info = reports[0]
        assert event_type == 1
        assert info.TransactionUID == "1.2.3.100"
        assert sorted(uids(info.ReferencedSOPSequence)) == sorted(
            [first.SOPInstanceUID, second.SOPInstanceUID]
        )
        assert "FailedSOPSequence" not in info
        # One missing, one stored under another SOP class: event type 2 with reasons.
        got.clear()
        status, _ = assoc.send_n_action(
            _mixed(first, second, missing_uid),
            1,
            StorageCommitmentPushModel,
            WELL_KNOWN_INSTANCE,
        )
        assert status.Status == 0x0000
        assert got.wait(30)
        event_type, info = reports[1]
        assert event_type == 2
        assert info.TransactionUID == "1.2.3.101"
        assert uids(info.ReferencedSOPSequence) == [first.SOPInstanceUID]
        assert sorted(uids(info.FailedSOPSequence)) == sorted([missing_uid, second.SOPInstanceUID])
        assert {int(i.FailureReason) for i in info.FailedSOPSequence} == {0x0112}
        # A wrong action type is refused.
        status, _ = assoc.send_n_action(
            request("1.2.3.102", [first], []), 2, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE
        )
        assert status.Status == 0x0123
    finally:
        assoc.release()
    with server.container.db.read() as session:
        stable = [
            c
            for c in changes.changes_since(session, 0, 1000)
            if c.kind == "study_stable" and c.study_uid == first.StudyInstanceUID
        ]
    assert len(stable) == 1  # declared complete by the first request, long before 60 s


def _mixed(first: Dataset, second: Dataset, missing_uid: str) -> Dataset:
    ds = request("1.2.3.101", [first], [(CTImageStorage, missing_uid)])
    wrong = Dataset()
    wrong.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR, stored as CT
    wrong.ReferencedSOPInstanceUID = second.SOPInstanceUID
    ds.ReferencedSOPSequence.append(wrong)
    return ds


def test_report_on_a_new_association_after_release(modality_server: Any) -> None:
    server, modality_port = modality_server
    present = make_dataset()
    store(server, present)
    missing_uid = generate_uid()
    reports: list[tuple[int, Dataset, str]] = []
    got = threading.Event()

    def on_report(event: Any) -> tuple[int, None]:
        reports.append((event.event_type, event.event_information, event.assoc.requestor.ae_title))
        got.set()
        return 0x0000, None

    listener = modality_scp(modality_port, on_report)
    container = server.container
    runner = JobRunner(container, poll_s=0.05, retry_base_s=0.3).start()
    try:
        ae = modality_ae()
        ae.add_requested_context(StorageCommitmentPushModel)
        assoc = ae.associate(server.host, server.port, ae_title=server.ae_title)
        assert assoc.is_established
        # The modality ignores reports on this association: it releases at once, as many do.
        status, _ = assoc.send_n_action(
            request("1.2.3.200", [present], [(CTImageStorage, missing_uid)]),
            1,
            StorageCommitmentPushModel,
            WELL_KNOWN_INSTANCE,
        )
        assoc.release()
        assert status.Status == 0x0000
        assert got.wait(60)
        # Sent once: on this association or, when it was released first, on a new one.
        time.sleep(0.5)
        assert len(reports) == 1
        event_type, info, _ = reports[0]
        assert event_type == 2
        assert info.TransactionUID == "1.2.3.200"
        assert uids(info.ReferencedSOPSequence) == [present.SOPInstanceUID]
        assert uids(info.FailedSOPSequence) == [missing_uid]
    finally:
        runner.stop()
        listener.shutdown()


def test_a_report_refused_on_the_association_goes_on_a_new_one(modality_server: Any) -> None:
    """A modality that takes reports only on its own SCP answers one on its association with a
    failure (pynetdicom without a handler says 0x0110): the report is sent again, to that SCP."""
    server, modality_port = modality_server
    present = make_dataset()
    store(server, present)
    reports: list[Any] = []
    got = threading.Event()

    def on_report(event: Any) -> tuple[int, None]:
        reports.append(event.event_information)
        got.set()
        return 0x0000, None

    listener = modality_scp(modality_port, on_report)
    runner = JobRunner(server.container, poll_s=0.05, retry_base_s=0.3).start()
    try:
        ae = modality_ae()
        ae.add_requested_context(StorageCommitmentPushModel)
        assoc = ae.associate(server.host, server.port, ae_title=server.ae_title)
        assert assoc.is_established
        try:
            status, _ = assoc.send_n_action(
                request("1.2.3.250", [present], []),
                1,
                StorageCommitmentPushModel,
                WELL_KNOWN_INSTANCE,
            )
            assert status.Status == 0x0000
            # The association stays open, so the archive's first try is on it, and is refused.
            assert got.wait(60)
        finally:
            assoc.release()
        time.sleep(0.5)
        assert len(reports) == 1
        assert reports[0].TransactionUID == "1.2.3.250"
        assert uids(reports[0].ReferencedSOPSequence) == [present.SOPInstanceUID]
    finally:
        runner.stop()
        listener.shutdown()


def test_report_job_to_the_modality(modality_server: Any) -> None:
    """The job alone: the report on a new association with the SCP role negotiated."""
    from vesalius.dimse.commitment import ReportError, send_report

    server, modality_port = modality_server
    settings = server.container.settings
    reports: list[Any] = []

    def on_report(event: Any) -> tuple[int, None]:
        reports.append(event)
        return 0x0000, None

    payload = {
        "ae_title": MODALITY,
        "transaction": "1.2.3.300",
        "present": [[CTImageStorage, "1.2.3.4"]],
        "missing": [],
    }
    with pytest.raises(ReportError, match="could not be reached"):
        send_report(settings, payload)
    listener = modality_scp(modality_port, on_report)
    try:
        send_report(settings, payload)
    finally:
        listener.shutdown()
    assert len(reports) == 1
    assert reports[0].event_type == 1
    assert reports[0].event_information.TransactionUID == "1.2.3.300"
    with pytest.raises(ReportError, match="not a \\[\\[remote_ae\\]\\]"):
        send_report(settings, {**payload, "ae_title": "NOBODY"})
